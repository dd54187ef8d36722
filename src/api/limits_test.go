package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/api"
	"github.com/ironcf/ironworker-release/src/broker"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

// Limits: a body cap on every route, per-project task-creation rate limits, a bounded
// log per task.
var _ = Describe("Limits", Ordered, func() {
	const (
		maxRequest = 4 << 10
		maxCode    = 64 << 10
		maxLog     = 1000
		brokerUser = "limits-broker"
		brokerPass = "limits-broker-password"
	)
	var (
		h      *testsupport.API
		engine *gin.Engine
		srv    *httptest.Server
		ctx    = context.Background()
	)
	brokerCfg := config.Broker{
		Enabled: true, Username: brokerUser, Password: brokerPass,
		Service:     config.BrokerService{ID: "8a0b9b6e-3c1d-4a57-9f1e-1b2c3d4e5f62", Name: "ironworker", Description: "IronWorker tasks"},
		Plans:       []config.BrokerPlan{{ID: "8a1b2c3d-0000-4000-8000-000000000001", Name: "small", Description: "small"}},
		ExternalAPI: config.ExternalAPI{Scheme: "http", Host: "iron.limits.internal", Port: 80},
	}

	BeforeAll(func() {
		var err error
		h, err = testsupport.StartAPI(config.Limits{MaxRequestBytes: maxRequest, MaxCodeSizeBytes: maxCode,
			MaxTaskLogBytes: maxLog, TasksPerSecond: 5, TasksBurst: 10})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(h.Stop)
		full := config.API{Broker: brokerCfg}
		full.ApplyDefaults()
		_, handler := api.NewServer(api.Options{Store: h.Store, Limits: h.Limits,
			Broker: broker.New(h.Store, full.Broker, slog.New(slog.NewJSONHandler(io.Discard, nil))).Handler(),
			Runner: api.RunnerOptions{Config: config.RunnerAPI{Credentials: []config.RunnerCredential{{Name: h.RunnerName, Secret: h.RunnerSecret}}}}})
		engine = handler.(*gin.Engine)
		srv = httptest.NewServer(handler)
		DeferCleanup(srv.Close)
		_, err = h.Store.SaveCode(ctx, h.ProjectID, store.CodeUpload{Settings: store.CodeSettings{Name: "lim", Image: "img"}})
		Expect(err).NotTo(HaveOccurred())
	})

	Describe("request bodies", func() {
		It("caps the body of every route in a global middleware (routes added later inherit it)", func() {
			names := []string{}
			for _, hf := range engine.Handlers {
				names = append(names, runtime.FuncForPC(reflect.ValueOf(hf).Pointer()).Name())
			}
			Expect(names).To(ContainElement(ContainSubstring("limitBody")))
		})

		It("answers an oversized body on every route that takes one with a 4xx, never reading it all or failing", func() {
			pid := h.ProjectID
			for _, rt := range engine.Routes() {
				if rt.Method != "POST" && rt.Method != "PUT" && rt.Method != "PATCH" {
					continue
				}
				path := strings.NewReplacer(":project_id", pid, ":code_id", store.NewID(), ":task_id", store.NewID(),
					":schedule_id", store.NewID(), "*osbpath", "service_instances/"+store.NewID()).Replace(rt.Path)
				size := maxRequest * 3
				if strings.HasSuffix(rt.Path, "/codes") {
					size = maxCode + maxRequest + 2<<20
				}
				for _, chunked := range []bool{false, true} {
					var body io.Reader = strings.NewReader(`{"x":"` + strings.Repeat("a", size) + `"}`)
					if chunked {
						body = io.MultiReader(body) // no Content-Length
					}
					req, err := http.NewRequest(rt.Method, srv.URL+path, body)
					Expect(err).NotTo(HaveOccurred())
					req.Header.Set("Content-Type", "application/json")
					switch {
					case strings.HasPrefix(rt.Path, "/2/"):
						req.Header.Set("Authorization", "OAuth "+h.Token)
					case strings.HasPrefix(rt.Path, "/v2/"):
						req.SetBasicAuth(brokerUser, brokerPass)
						req.Header.Set("X-Broker-API-Version", "2.17")
					default:
						req.SetBasicAuth(h.RunnerName, h.RunnerSecret)
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						// The server may close the connection on an unread oversized body.
						continue
					}
					raw, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					Expect(resp.StatusCode).To(SatisfyAll(BeNumerically(">=", 400), BeNumerically("<", 500)),
						"%s %s (chunked %v): %d %s", rt.Method, rt.Path, chunked, resp.StatusCode, raw)
				}
			}
		})

		It("refuses a broker body over the cap with 413 in OSB's format", func() {
			req, _ := http.NewRequest("PUT", srv.URL+"/v2/service_instances/"+store.NewID(), strings.NewReader(strings.Repeat("x", maxRequest+1)))
			req.SetBasicAuth(brokerUser, brokerPass)
			req.Header.Set("X-Broker-API-Version", "2.17")
			resp, err := http.DefaultClient.Do(req)
			Expect(err).NotTo(HaveOccurred())
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(raw).To(MatchJSON(fmt.Sprintf(`{"description":"Request body is larger than %d bytes"}`, maxRequest)))
		})
	})

	Describe("task creation rate", func() {
		tasks := func(n int) map[string]any {
			items := make([]any, n)
			for i := range items {
				items[i] = map[string]any{"code_name": "lim"}
			}
			return map[string]any{"tasks": items}
		}

		It("answers 429 with Retry-After once a project's burst is spent, and recovers", func() {
			pid, token, err := h.NewProject("rate")
			Expect(err).NotTo(HaveOccurred())
			_, err = h.Store.SaveCode(ctx, pid, store.CodeUpload{Settings: store.CodeSettings{Name: "lim", Image: "img"}})
			Expect(err).NotTo(HaveOccurred())
			r := h.DoAs(token, "POST", "/2/projects/"+pid+"/tasks", tasks(10), nil)
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))

			r = h.DoAs(token, "POST", "/2/projects/"+pid+"/tasks", tasks(3), nil)
			Expect(r.Status).To(Equal(http.StatusTooManyRequests))
			Expect(r.JSON()).To(HaveKey("msg"))
			wait, err := strconv.Atoi(r.Header.Get("Retry-After"))
			Expect(err).NotTo(HaveOccurred())
			Expect(wait).To(BeNumerically(">=", 1))
			Expect(wait).To(BeNumerically("<=", 2))

			By("the webhook and retry count too")
			r = h.DoAs(token, "POST", "/2/projects/"+pid+"/tasks/webhook?code_name=lim", "hook", nil)
			Expect(r.Status).To(Equal(http.StatusTooManyRequests))

			By("another project is not affected")
			r = h.Do("POST", h.Project()+"/tasks", tasks(1))
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))

			By("after Retry-After the project may create tasks again")
			time.Sleep(time.Duration(wait) * time.Second)
			r = h.DoAs(token, "POST", "/2/projects/"+pid+"/tasks", tasks(3), nil)
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
		})

		It("is off by default", func() {
			var cfg config.API
			cfg.ApplyDefaults()
			Expect(cfg.Limits.TasksPerSecond).To(BeZero())
			Expect(cfg.Limits.MaxTaskLogBytes).To(Equal(int64(10 << 20)))
			cfg.Limits.TasksPerSecond = 2
			cfg.Limits.TasksBurst = 0
			cfg.ApplyDefaults()
			Expect(cfg.Limits.TasksBurst).To(Equal(cfg.Limits.MaxTasksPerRequest))
		})
	})

	Describe("task log size", func() {
		It("keeps at most the cap, then one truncation note, and drops the rest", func() {
			pid, token, err := h.NewProject("logs")
			Expect(err).NotTo(HaveOccurred())
			_, err = h.Store.SaveCode(ctx, pid, store.CodeUpload{Settings: store.CodeSettings{Name: "lim", Image: "img"}})
			Expect(err).NotTo(HaveOccurred())
			r := h.DoAs(token, "POST", "/2/projects/"+pid+"/tasks", map[string]any{"tasks": []any{map[string]any{"code_name": "lim"}}}, nil)
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			taskID := r.JSON()["tasks"].([]any)[0].(map[string]any)["id"].(string)

			rc, err := client.NewRunnerClient(srv.URL, h.RunnerName, h.RunnerSecret, client.RunnerOptions{Timeout: 15 * time.Second})
			Expect(err).NotTo(HaveOccurred())
			var lease client.Lease
			Eventually(func() bool {
				ls, err := rc.Lease(ctx, client.LeaseRequest{RunnerID: "limits", MaxTasks: 10})
				Expect(err).NotTo(HaveOccurred())
				for _, l := range ls {
					if l.Task.ID == taskID {
						lease = l
						return true
					}
				}
				return false
			}).WithTimeout(20 * time.Second).Should(BeTrue())

			Expect(rc.AppendLog(ctx, taskID, lease.LeaseID, "stdout", []byte(strings.Repeat("a", 600)))).To(Succeed())
			Expect(rc.AppendLog(ctx, taskID, lease.LeaseID, "stderr", []byte(strings.Repeat("é", 300)))).To(Succeed()) // 600 bytes
			Expect(rc.AppendLog(ctx, taskID, lease.LeaseID, "stdout", []byte("LATER-OUTPUT"))).To(Succeed())

			r = h.DoAs(token, "GET", "/2/projects/"+pid+"/tasks/"+taskID+"/log", nil, nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			log := string(r.Body)
			note := store.TruncationNote(maxLog)
			Expect(strings.Count(log, note)).To(Equal(1))
			Expect(log).To(HaveSuffix(note))
			Expect(log).NotTo(ContainSubstring("LATER-OUTPUT"))
			kept := strings.TrimSuffix(log, note)
			Expect(len(kept)).To(Equal(maxLog)) // 600 + 200 whole "é"
			Expect(kept).To(Equal(strings.Repeat("a", 600) + strings.Repeat("é", 200)))
		})
	})
})
