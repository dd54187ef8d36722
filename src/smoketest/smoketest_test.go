package smoketest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/smoketest"
)

func TestSmokeTest(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "smoke-tests suite")
}

// fake is iron-api's broker and v2 API, just enough for the smoke test, recording calls.
type fake struct {
	mu         sync.Mutex
	calls      []string
	taskStatus string // what GET task answers
	taskLog    string // "" = echo the payload like the real worker
	payload    string
	catalog    string
	srv        *httptest.Server
}

func (f *fake) record(r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
}

func (f *fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func newFake() *fake {
	f := &fake{taskStatus: "complete",
		catalog: `{"services":[{"id":"svc","name":"ironworker","plans":[{"id":"plan-1","name":"standard"}]}]}`}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		p := r.URL.Path
		if strings.HasPrefix(p, "/v2/") {
			u, pw, ok := r.BasicAuth()
			if !ok || u != "broker" || pw != "broker-password" || r.Header.Get("X-Broker-API-Version") == "" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		} else if r.Header.Get("Authorization") != "OAuth tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch {
		case p == "/v2/catalog":
			io.WriteString(w, f.catalog)
		case strings.Contains(p, "/service_bindings/") && r.Method == http.MethodPut:
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"credentials":{"project_id":"proj","token":"tok","url":"`+f.srv.URL+`/2/projects/proj"}}`)
		case strings.HasPrefix(p, "/v2/service_instances/") && r.Method == http.MethodPut:
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{}`)
		case strings.HasPrefix(p, "/v2/") && r.Method == http.MethodDelete:
			io.WriteString(w, `{}`)
		case p == "/2/projects/proj/codes" && r.Method == http.MethodPost:
			Expect(r.ParseMultipartForm(1 << 20)).To(Succeed())
			var data map[string]any
			Expect(json.Unmarshal([]byte(r.FormValue("data")), &data)).To(Succeed())
			Expect(data["command"]).To(Equal("sh smoke.sh"))
			_, _, err := r.FormFile("file")
			Expect(err).NotTo(HaveOccurred())
			io.WriteString(w, `{"id":"code-1","msg":"Upload successful."}`)
		case p == "/2/projects/proj/codes/code-1" && r.Method == http.MethodDelete:
			io.WriteString(w, `{"msg":"Deleted"}`)
		case p == "/2/projects/proj/tasks" && r.Method == http.MethodPost:
			var body struct {
				Tasks []struct {
					Payload string `json:"payload"`
				} `json:"tasks"`
			}
			Expect(json.NewDecoder(r.Body).Decode(&body)).To(Succeed())
			f.mu.Lock()
			f.payload = body.Tasks[0].Payload
			f.mu.Unlock()
			io.WriteString(w, `{"msg":"Queued up","tasks":[{"id":"task-1"}]}`)
		case p == "/2/projects/proj/tasks/task-1":
			io.WriteString(w, `{"id":"task-1","status":"`+f.taskStatus+`","msg":"exit status 3"}`)
		case p == "/2/projects/proj/tasks/task-1/log":
			f.mu.Lock()
			l := f.taskLog
			if l == "" {
				l = "ironworker smoke test " + f.payload + "\n"
			}
			f.mu.Unlock()
			io.WriteString(w, l)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	DeferCleanup(f.srv.Close)
	return f
}

func cfgFor(f *fake) config.SmokeTests {
	c := config.SmokeTests{Broker: config.SmokeTestsBroker{URL: f.srv.URL, Username: "broker", Password: "broker-password"}}
	c.ApplyDefaults()
	c.PollInterval = config.Duration(10 * time.Millisecond)
	c.TaskTimeout = config.Duration(time.Second)
	return c
}

var cleanup = []string{"DELETE /2/projects/proj/codes/code-1", "DELETE /v2/service_instances/", "DELETE /v2/service_instances/"}

func cleanedUp(calls []string) {
	n := len(calls)
	Expect(n).To(BeNumerically(">=", 3))
	Expect(calls[n-3]).To(Equal(cleanup[0]))
	Expect(calls[n-2]).To(And(HavePrefix(cleanup[1]), ContainSubstring("/service_bindings/")))
	Expect(calls[n-1]).To(HavePrefix(cleanup[2]))
	Expect(calls[n-1]).NotTo(ContainSubstring("/service_bindings/"))
}

var _ = Describe("the smoke test", func() {
	It("passes end to end and cleans up", func() {
		f := newFake()
		var out bytes.Buffer
		Expect(smoketest.Run(context.Background(), cfgFor(f), &out)).To(Succeed())
		Expect(out.String()).To(ContainSubstring("task log has"))
		cleanedUp(f.Calls())
	})

	It("fails naming the broker catalog when the broker refuses the credentials", func() {
		f := newFake()
		c := cfgFor(f)
		c.Broker.Password = "wrong"
		err := smoketest.Run(context.Background(), c, io.Discard)
		Expect(err).To(MatchError(And(ContainSubstring("broker catalog"), ContainSubstring("status 401 (check the credentials)"))))
	})

	It("fails when the catalog lacks the plan", func() {
		f := newFake()
		c := cfgFor(f)
		c.PlanName = "gold"
		Expect(smoketest.Run(context.Background(), c, io.Discard)).To(MatchError(ContainSubstring(`service "ironworker" has no plan "gold"`)))
	})

	It("fails naming the task's end state, and still cleans up", func() {
		f := newFake()
		f.taskStatus = "error"
		err := smoketest.Run(context.Background(), cfgFor(f), io.Discard)
		Expect(err).To(MatchError(And(ContainSubstring("task task-1: ended error: exit status 3"), ContainSubstring("/tasks/task-1/log"))))
		cleanedUp(f.Calls())
	})

	It("fails when no runner takes the task in time, and still cleans up", func() {
		f := newFake()
		f.taskStatus = "queued"
		err := smoketest.Run(context.Background(), cfgFor(f), io.Discard)
		Expect(err).To(MatchError(ContainSubstring("no runner leased it")))
		cleanedUp(f.Calls())
	})

	It("fails when the log lacks the worker's line", func() {
		f := newFake()
		f.taskLog = "something else\n"
		Expect(smoketest.Run(context.Background(), cfgFor(f), io.Discard)).To(MatchError(ContainSubstring("task log: want a line")))
		cleanedUp(f.Calls())
	})
})
