package runner_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/api"
	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/backend/local"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/reaper"
	"github.com/ironcf/ironworker-release/src/runner"
	"github.com/ironcf/ironworker-release/src/store"
)

// env is a live iron-api (with its reaper) on a fresh database.
type env struct {
	a             *testsupport.API
	leaseDuration time.Duration
}

func newEnv(leaseDuration time.Duration) *env {
	a, err := testsupport.StartAPI(config.Limits{}, func(_ *store.Store, o *api.Options) {
		o.Runner.Config.LeaseDuration = config.Duration(leaseDuration)
		o.Runner.Config.LeaseWait = config.Duration(2 * time.Second)
		o.Runner.Recheck = 200 * time.Millisecond
	})
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		reaper.Run(ctx, a.Store, config.RunnerAPI{ReaperInterval: config.Duration(200 * time.Millisecond),
			LeaseDuration: config.Duration(leaseDuration), MaxLeaseAttempts: 5}, nil)
	}()
	DeferCleanup(func() {
		cancel()
		<-done
		a.Stop()
	})
	return &env{a: a, leaseDuration: leaseDuration}
}

func (e *env) runnerClient() *client.RunnerClient {
	cl, err := client.NewRunnerClient(e.a.Server.URL, e.a.RunnerName, e.a.RunnerSecret, client.RunnerOptions{Timeout: 10 * time.Second})
	Expect(err).NotTo(HaveOccurred())
	return cl
}

func newLocal() *local.Backend {
	b, err := local.New(local.Config{WorkRoot: GinkgoT().TempDir(), KillGrace: time.Second, MemoryLimiter: "none"})
	Expect(err).NotTo(HaveOccurred())
	return b
}

// startRunner runs an in-process runner until the spec ends (then drains it).
func (e *env) startRunner(be backend.Backend, mod func(*runner.Options)) *runner.Runner {
	opts := runner.Options{Client: e.runnerClient(), Backend: be, Slots: 4, LeaseWait: 2 * time.Second,
		HeartbeatInterval: 300 * time.Millisecond, DrainTimeout: 5 * time.Second, LogFlushInterval: 100 * time.Millisecond,
		Logger: testLogger()}
	if mod != nil {
		mod(&opts)
	}
	r, err := runner.New(opts)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer GinkgoRecover()
		Expect(r.Run(ctx)).To(Succeed())
	}()
	DeferCleanup(func() {
		cancel()
		Eventually(done, 30*time.Second).Should(BeClosed())
	})
	return r
}

// zipOf packs files (name → content) into a zip; *.sh files are executable.
func zipOf(files map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range files {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		h.SetMode(0o755)
		w, err := zw.CreateHeader(h)
		Expect(err).NotTo(HaveOccurred())
		_, err = io.WriteString(w, content)
		Expect(err).NotTo(HaveOccurred())
	}
	Expect(zw.Close()).To(Succeed())
	return buf.Bytes()
}

// uploadScript uploads a zip code whose command runs worker.sh with script as its body.
func (e *env) uploadScript(name, script string, data map[string]any) string {
	if data == nil {
		data = map[string]any{}
	}
	data["name"] = name
	data["command"] = "sh worker.sh"
	raw, err := json.Marshal(data)
	Expect(err).NotTo(HaveOccurred())
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	Expect(mw.WriteField("data", string(raw))).To(Succeed())
	fw, err := mw.CreateFormFile("file", "worker.zip")
	Expect(err).NotTo(HaveOccurred())
	_, err = fw.Write(zipOf(map[string]string{"worker.sh": "#!/bin/sh\n" + script + "\n"}))
	Expect(err).NotTo(HaveOccurred())
	Expect(mw.Close()).To(Succeed())
	resp := e.a.DoAs(e.a.Token, http.MethodPost, e.a.Project()+"/codes", body.Bytes(),
		http.Header{"Content-Type": {mw.FormDataContentType()}})
	Expect(resp.Status).To(Equal(http.StatusOK), string(resp.Body))
	return resp.JSON()["id"].(string)
}

// queue queues tasks and returns their ids.
func (e *env) queue(tasks ...map[string]any) []string {
	resp := e.a.Do(http.MethodPost, e.a.Project()+"/tasks", map[string]any{"tasks": tasks})
	Expect(resp.Status).To(Equal(http.StatusOK), string(resp.Body))
	var out struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	Expect(json.Unmarshal(resp.Body, &out)).To(Succeed())
	ids := make([]string, len(out.Tasks))
	for i, t := range out.Tasks {
		ids[i] = t.ID
	}
	return ids
}

type taskView struct {
	ID             string  `json:"id"`
	Status         string  `json:"status"`
	Msg            string  `json:"msg"`
	Priority       int     `json:"priority"`
	StartTime      *string `json:"start_time"`
	EndTime        *string `json:"end_time"`
	CreatedAt      string  `json:"created_at"`
	RetryCount     int     `json:"retry_count"`
	RetryTaskID    string  `json:"retry_task_id"`
	OriginalTaskID string  `json:"original_task_id"`
	Delay          int     `json:"delay"`
}

func (t taskView) start() time.Time { return parseTime(t.StartTime) }
func (t taskView) end() time.Time   { return parseTime(t.EndTime) }

func parseTime(s *string) time.Time {
	if s == nil {
		return time.Time{}
	}
	v, err := time.Parse(time.RFC3339Nano, *s)
	Expect(err).NotTo(HaveOccurred())
	return v
}

func (e *env) task(id string) taskView {
	resp := e.a.Do(http.MethodGet, e.a.Project()+"/tasks/"+id, nil)
	Expect(resp.Status).To(Equal(http.StatusOK), string(resp.Body))
	var t taskView
	Expect(json.Unmarshal(resp.Body, &t)).To(Succeed())
	return t
}

func (e *env) status(id string) func() string {
	return func() string { return e.task(id).Status }
}

func (e *env) log(id string) string {
	resp := e.a.Do(http.MethodGet, e.a.Project()+"/tasks/"+id+"/log", nil)
	if resp.Status != http.StatusOK {
		return fmt.Sprintf("HTTP %d: %s", resp.Status, resp.Body)
	}
	return string(resp.Body)
}

func (e *env) post(path string) {
	resp := e.a.Do(http.MethodPost, e.a.Project()+path, "{}")
	Expect(resp.Status).To(Equal(http.StatusOK), string(resp.Body))
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func imageCodeForm(name, image string) ([]byte, string) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	raw, _ := json.Marshal(map[string]any{"name": name, "image": image})
	Expect(mw.WriteField("data", string(raw))).To(Succeed())
	Expect(mw.Close()).To(Succeed())
	return body.Bytes(), mw.FormDataContentType()
}

func newCmd(bin string, args ...string) *exec.Cmd { return exec.Command(bin, args...) }

// alive tells whether pid runs (a zombie, dead but not yet reaped by its new parent, does not).
func alive(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// groupAlive tells whether any live (not zombie) process is in process group pgid.
func groupAlive(pgid int) bool {
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(raw)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 2 && f[0] != "Z" && f[0] != "X" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

// pgidOf is the process group of pid.
func pgidOf(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	Expect(err).NotTo(HaveOccurred())
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	pgid, err := strconv.Atoi(f[2])
	Expect(err).NotTo(HaveOccurred())
	return pgid
}
