package diego_test

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/backend/diego"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
)

func TestDiego(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(10 * time.Second)
	RunSpecs(t, "Diego backend suite")
}

// worker is the test worker, shipped in the zip code and "inside the image" (OUT_DIR)
// for the docker code. It checks the IronWorker arguments against the environment,
// copies the payload and config it was given to OUT_DIR, and logs on both streams.
const worker = `echo "args: $*"
[ "$1" = -payload ] && [ "$2" = "$PAYLOAD_FILE" ] && [ "$3" = -config ] && [ "$4" = "$CONFIG_FILE" ] &&
[ "$5" = -id ] && [ "$6" = "$TASK_ID" ] && [ "$7" = -d ] && [ "$8" = "$TASK_DIR" ] || { echo "bad args: $*" >&2; exit 3; }
[ "$PAYLOAD_FILE" = "$TASK_DIR/__payload__" ] && [ "$CONFIG_FILE" = "$TASK_DIR/__config__" ] || { echo "bad files" >&2; exit 4; }
[ "$(pwd)" = "$TASK_DIR" ] || { echo "bad dir $(pwd)" >&2; exit 5; }
cp "$PAYLOAD_FILE" "$OUT_DIR/$TASK_ID.payload" && cp "$CONFIG_FILE" "$OUT_DIR/$TASK_ID.config" || exit 6
echo "env CODE_VAR=$CODE_VAR"
echo "to stderr" >&2
[ -n "$SLEEP" ] && sleep "$SLEEP"
[ -n "$FAIL" ] && { echo "failing with $FAIL" >&2; exit "$FAIL"; }
echo done
`

func zipOf(files map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		Expect(err).NotTo(HaveOccurred())
		_, err = io.WriteString(w, body)
		Expect(err).NotTo(HaveOccurred())
	}
	Expect(zw.Close()).To(Succeed())
	return buf.Bytes()
}

func archive(b []byte) func(context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// inputServer stands in for the API's task input endpoint:
// GET /internal/v1/tasks/:id/input/{payload,config} with the task's bearer token.
type inputServer struct {
	*httptest.Server
	mu       sync.Mutex
	inputs   map[string][2]string // task id → payload, config
	tokens   map[string]string
	requests []string // "<task id>/<part>" of every authorised request
	refused  int
}

func newInputServer() *inputServer {
	s := &inputServer{inputs: map[string][2]string{}, tokens: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /internal/v1/tasks/{id}/input/{part}", func(w http.ResponseWriter, r *http.Request) {
		id, part := r.PathValue("id"), r.PathValue("part")
		s.mu.Lock()
		defer s.mu.Unlock()
		tok, ok := s.tokens[id]
		if !ok || r.Header.Get("Authorization") != "Bearer "+tok {
			s.refused++
			http.Error(w, `{"msg":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		s.requests = append(s.requests, id+"/"+part)
		in := s.inputs[id]
		w.Header().Set("Content-Type", "application/octet-stream")
		switch part {
		case "payload":
			_, _ = io.WriteString(w, in[0])
		case "config":
			_, _ = io.WriteString(w, in[1])
		default:
			http.NotFound(w, r)
		}
	})
	s.Server = httptest.NewServer(mux)
	return s
}

// prepare registers a task's input and fills the spec's InputURL and InputToken.
func (s *inputServer) prepare(spec *backend.Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := "tok-" + spec.TaskID + "-0123456789abcdef"
	s.tokens[spec.TaskID] = tok
	s.inputs[spec.TaskID] = [2]string{spec.Payload, spec.Config}
	spec.InputURL = s.URL + "/internal/v1/tasks/" + spec.TaskID + "/input"
	spec.InputToken = tok
}

func (s *inputServer) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// sink collects a task's output.
type sink struct {
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
}

func (s *sink) WriteLog(stream backend.Stream, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stream == backend.Stderr {
		s.stderr.Write(p)
	} else {
		s.stdout.Write(p)
	}
}

// cursorSink also records the last log cursor.
type cursorSink struct {
	sink
	cmu    sync.Mutex
	cursor string
}

func (s *cursorSink) LogCursor(c string) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	s.cursor = c
}

func (s *cursorSink) last() string {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.cursor
}

func (s *sink) out() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stdout.String()
}

func (s *sink) err() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// env is one fake foundation with a diego backend on it.
type env struct {
	fake   *fakecf.Server
	input  *inputServer
	outDir string
	cfg    config.Diego
	b      *diego.Backend
}

func newEnv(opts fakecf.Options) *env {
	out := GinkgoT().TempDir()
	Expect(os.WriteFile(filepath.Join(out, "worker.sh"), []byte(worker), 0o755)).To(Succeed())
	opts.Env = append(opts.Env, "OUT_DIR="+out)
	e := &env{fake: fakecf.New(opts), input: newInputServer(), outDir: out}
	e.fake.CreateOrgAndSpace("ironworker", "tasks")
	e.cfg = config.Diego{
		APIURL: e.fake.URL, ClientID: e.fake.ClientID(), ClientSecret: e.fake.ClientSecret(),
		Org: "ironworker", Space: "tasks", Buildpacks: []string{"binary_buildpack"},
		PollInterval: config.Duration(50 * time.Millisecond), RequestTimeout: config.Duration(5 * time.Second),
		StagingTimeout: config.Duration(30 * time.Second),
	}
	e.b = e.newBackend(nil)
	DeferCleanup(func() {
		e.input.Close()
		e.fake.Close()
	})
	return e
}

func (e *env) newBackend(cache diego.AppCache) *diego.Backend {
	b, err := diego.New(context.Background(), e.cfg, diego.Options{AppCache: cache, LogGrace: 50 * time.Millisecond})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(b.Close)
	return b
}

func (e *env) outFile(taskID, part string) string {
	b, err := os.ReadFile(filepath.Join(e.outDir, taskID+"."+part))
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

func zipSpec(taskID string) backend.Spec {
	return backend.Spec{
		TaskID: taskID, ProjectID: "proj1", CodeID: "codezip", CodeName: "zipworker", CodeRev: 1,
		Command: "sh worker.sh",
		Archive: archive(zipOf(map[string]string{"worker.sh": worker})),
		EnvVars: map[string]string{"CODE_VAR": "from-code"},
	}
}

func dockerSpec(taskID string) backend.Spec {
	return backend.Spec{
		TaskID: taskID, ProjectID: "proj1", CodeID: "codeimg", CodeName: "imgworker", CodeRev: 3,
		Image: "registry.example.com/iron/worker:1", Command: `sh "$OUT_DIR/worker.sh"`,
		EnvVars: map[string]string{"CODE_VAR": "from-image-code"},
	}
}

func wait(b *diego.Backend, ref backend.Ref) backend.Result {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := b.Wait(ctx, ref)
	Expect(err).NotTo(HaveOccurred())
	return res
}

// mixedPayload is about n bytes of everything a payload string may hold: JSON, quotes
// of every kind, shell syntax, newlines, CR, tabs, NUL, multi-byte UTF-8 and emoji.
func mixedPayload(n int) string {
	chunk := "{\"k\": \"v'x\\\"\"}\n$HOME `id` $(echo hi) \\ ' '' \"\r\n\t\x00 é ü 日本語 🚀 ;&|<>*?[] %s %d\n"
	var b strings.Builder
	for b.Len() < n-len(chunk) {
		b.WriteString(chunk)
	}
	for b.Len() < n {
		b.WriteByte('z')
	}
	return b.String()
}
