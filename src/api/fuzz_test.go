package api

import (
	"bytes"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/store"
)

// Hostile input: the request decoders and validators of the IronWorker API, fuzzed
// without a database. Each target drives the same code a handler runs before it touches
// the store; no input may panic or produce a 5xx. The seed corpora under
// testdata/fuzz/<Target>/ (and the f.Add seeds) run as plain tests under `go test`;
// scripts/fuzz fuzzes each target for a few seconds.

func fuzzServer() *Server {
	cfg := config.API{}
	cfg.ApplyDefaults()
	cfg.Limits.MaxRequestBytes = 64 << 10 // keep fuzzing fast; the 413 path is exercised
	return &Server{limits: cfg.Limits, log: slog.New(slog.NewJSONHandler(io.Discard, nil)), now: time.Now}
}

// fuzzQuotas are a restrictive plan, so the quota checks run too.
func fuzzQuotas() []store.Quotas {
	one, small := 1, 16
	return []store.Quotas{{}, {MaxTimeoutSeconds: &one, MaxPayloadBytes: &small, AllowedPriorities: []int{0}}}
}

// fuzzContext is a gin context for a request with body raw.
func fuzzContext(method, contentType string, raw []byte) (*gin.Context, *httptest.ResponseRecorder) {
	w := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(w)
	c.Request = httptest.NewRequest(method, "/2/projects/p/x", bytes.NewReader(raw))
	if contentType != "" {
		c.Request.Header.Set("Content-Type", contentType)
	}
	return c, w
}

func checkAnswer(t *testing.T, c *gin.Context, w *httptest.ResponseRecorder) {
	t.Helper()
	if !c.IsAborted() {
		return
	}
	if c.Writer.Status() >= 500 || c.Writer.Status() < 400 {
		t.Fatalf("answered %d: %s", c.Writer.Status(), w.Body.String())
	}
}

func checkInput(t *testing.T, e *inputError) {
	t.Helper()
	if e != nil && (e.status < 400 || e.status >= 500) {
		t.Fatalf("input error with status %d: %s", e.status, e.msg)
	}
}

var fuzzTaskSeeds = []string{
	``,
	`{}`,
	`{"tasks":[{"code_name":"hello","payload":"{\"a\":1}"}]}`,
	`{"tasks":[{"code_name":"hello","payload":{"a":[1,2]},"priority":"2","timeout":"60","delay":1e3,"cluster":" x ","label":null}]}`,
	`{"tasks":[{"code_name":"hello","priority":-1000,"timeout":-1,"delay":99999999999999999999}]}`,
	`{"tasks":[{"code_name":1e400}]}`,
	`{"tasks":null}`,
	`{"tasks":[null,{}]}`,
	`[1,2,3]`,
	`{"tasks":[{"code_name":"x","payload":"` + string(bytes.Repeat([]byte("a"), 70000)) + `"}]}`,
}

func FuzzTaskBody(f *testing.F) {
	for _, s := range fuzzTaskSeeds {
		f.Add([]byte(s))
	}
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, w := fuzzContext("POST", "application/json", raw)
		var body queueTasksBody
		if !s.decodeJSON(c, &body) {
			checkAnswer(t, c, w)
			return
		}
		if e := s.checkTaskCount(len(body.Tasks)); e != nil {
			checkInput(t, e)
			return
		}
		for _, q := range fuzzQuotas() {
			batch, e := s.taskBatch(body.Tasks, q)
			checkInput(t, e)
			if e == nil && len(batch) != len(body.Tasks) {
				t.Fatalf("batch of %d for %d tasks", len(batch), len(body.Tasks))
			}
		}
	})
}

var fuzzScheduleSeeds = []string{
	`{"schedules":[{"code_name":"hello","run_every":60,"payload":"x"}]}`,
	`{"schedules":[{"code_name":"hello","cron":"*/5 * * * *","start_at":"2026-01-01T00:00:00Z","end_at":1767225600,"run_times":3}]}`,
	`{"schedules":[{"code_name":"hello","cron":"TZ=Europe/Berlin 0 0 * * *"}]}`,
	`{"schedules":[{"code_name":"hello","cron":"@every 1s"}]}`,
	`{"schedules":[{"code_name":"hello","run_every":"-1","priority":"7","delay":-3,"task_delay":1e9}]}`,
	`{"schedules":[{"code_name":"hello","cron":"60 25 32 13 8"}]}`,
	`{"schedules":[{"code_name":"hello","start_at":"not a time","end_at":"2026-13-45"}]}`,
	`{"schedules":[{}]}`,
	`{"code_name":"hello","run_every":120}`,
	`{"schedules":[{"run_every":60},{"run_every":60}]}`,
}

func FuzzScheduleBody(f *testing.F) {
	for _, s := range fuzzScheduleSeeds {
		f.Add([]byte(s))
	}
	s := fuzzServer()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw []byte) {
		// POST /schedules
		c, w := fuzzContext("POST", "application/json", raw)
		var req struct {
			Schedules []scheduleIn `json:"schedules"`
		}
		if !s.decodeJSON(c, &req) {
			checkAnswer(t, c, w)
		} else {
			for _, q := range fuzzQuotas() {
				for _, in := range req.Schedules {
					ns, e := s.newSchedule(in, now)
					if e == nil {
						e = scheduleQuotas(q, in, &ns)
					}
					checkInput(t, e)
				}
			}
		}
		// PUT /schedules/:id
		c, w = fuzzContext("PUT", "application/json", raw)
		in, ok := s.readUpdate(c)
		if !ok {
			checkAnswer(t, c, w)
			return
		}
		for _, q := range fuzzQuotas() {
			u, e := s.scheduleUpdate(in)
			if e == nil {
				e = scheduleUpdateQuotas(q, in, &u)
			}
			checkInput(t, e)
		}
	})
}

var fuzzCodeSeeds = []string{
	`{"name":"hello","image":"iron/hello","command":"./hello"}`,
	`{"name":"hello","config":{"a":1},"env_vars":{"A":"1","B":2},"max_concurrency":-1,"retries":3,"retries_delay":60,"default_priority":-1000}`,
	`{"name":"","env_vars":{"=":"x"}}`,
	`{"name":"x\u0000y"}`,
	`{"name":null,"config":null}`,
	`{"name":"x","retries":"many","env_vars":{"A":"\u0000"}}`,
	`[]`,
	`"just a string"`,
}

func FuzzCodeData(f *testing.F) {
	for _, s := range fuzzCodeSeeds {
		f.Add([]byte(s))
	}
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, e := s.codeSettings(raw)
		checkInput(t, e)
	})
}

// FuzzCodeUpload drives the real POST /codes handler (multipart and JSON bodies) with
// the store replaced by a hook that drains the archive and answers 200.
func FuzzCodeUpload(f *testing.F) {
	mp := func(parts ...[2]string) []byte {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		_ = mw.SetBoundary("fuzzboundary")
		for _, p := range parts {
			w, _ := mw.CreateFormFile(p[0], p[0]+".bin")
			_, _ = w.Write([]byte(p[1]))
		}
		_ = mw.Close()
		return buf.Bytes()
	}
	const mpType = "multipart/form-data; boundary=fuzzboundary"
	f.Add(mpType, mp([2]string{"data", `{"name":"hello","image":"iron/hello"}`}))
	f.Add(mpType, mp([2]string{"data", `{"name":"hello"}`}, [2]string{"file", "PK\x03\x04 not really a zip"}))
	f.Add(mpType, mp([2]string{"file", "PK\x05\x06"}, [2]string{"data", `{"name":"hello"}`}))
	f.Add(mpType, mp([2]string{"data", `{"name":"a"}`}, [2]string{"data", `{"name":"b"}`}))
	f.Add(mpType, mp([2]string{"file", "x"}, [2]string{"file", "y"}))
	f.Add(mpType, mp([2]string{"other", "ignored"}))
	f.Add(mpType, []byte("--fuzzboundary\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{\"name\":"))
	f.Add("multipart/form-data", []byte("no boundary"))
	f.Add("application/json", []byte(`{"name":"hello","image":"iron/hello"}`))
	f.Add("text/plain", []byte(`hello`))
	s := fuzzServer()
	s.limits.MaxCodeSizeBytes = 1 << 16
	s.saveHook = func(c *gin.Context, _ store.CodeSettings, archive io.Reader) {
		if archive != nil {
			if _, err := io.Copy(io.Discard, archive); err != nil {
				abortMsg(c, http.StatusBadRequest, "read: "+err.Error())
				return
			}
		}
		c.JSON(http.StatusOK, gin.H{"msg": "Upload successful."})
	}
	f.Fuzz(func(t *testing.T, contentType string, raw []byte) {
		c, w := fuzzContext("POST", contentType, raw)
		s.uploadCode(c)
		if st := c.Writer.Status(); st >= 500 {
			t.Fatalf("answered %d: %s", st, w.Body.String())
		}
	})
}
