package api_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/api"
	"github.com/ironcf/ironworker-release/src/broker"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/store"
)

// lockedBuffer collects the API's JSON log lines from concurrent handlers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The auth matrix: every route of the engine, enumerated from gin (a route added later
// is covered, or fails the spec until it is classified), against every kind of wrong
// credential. No answer may be a success, and none may carry the other tenant's data.
var _ = Describe("Auth matrix: every route, every wrong credential", Ordered, func() {
	const (
		amRunnerName     = "matrix-runner"
		amRunnerSecret   = "matrix-runner-secret-0123456789"
		amBrokerUser     = "matrix-broker"
		amBrokerPassword = "matrix-broker-password-42"
		amServiceID      = "7a0b9b6e-3c1d-4a57-9f1e-1b2c3d4e5f61"
		amPlanID         = "7a1b2c3d-0000-4000-8000-000000000001"
	)
	var (
		logs     *lockedBuffer
		srv      *httptest.Server
		routes   gin.RoutesInfo
		ctx      = context.Background()
		pidA     string
		tokenA   string
		revoked  string
		pidB     string
		tokenB   string
		codeA    string
		taskA    string
		schedA   string
		secretOf string // a marker inside project A's payload
		// forbidden are strings that must appear neither in a wrong credential's
		// answer (A's data) nor in the logs (the secrets).
		aData   []string
		secrets []string
	)

	BeforeAll(func() {
		logs = &lockedBuffer{}
		logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		brokerCfg := config.API{Broker: config.Broker{
			Enabled: true, Username: amBrokerUser, Password: amBrokerPassword,
			Service:     config.BrokerService{ID: amServiceID, Name: "ironworker", Description: "IronWorker tasks"},
			Plans:       []config.BrokerPlan{{ID: amPlanID, Name: "small", Description: "small"}},
			ExternalAPI: config.ExternalAPI{Scheme: "http", Host: "iron.matrix.internal", Port: 80},
		}}
		brokerCfg.ApplyDefaults()
		runnerCfg := config.RunnerAPI{Credentials: []config.RunnerCredential{{Name: amRunnerName, Secret: amRunnerSecret}}}
		_, handler := api.NewServer(api.Options{
			Store: iron.Store, Limits: iron.Limits, Logger: logger,
			Broker: broker.New(iron.Store, brokerCfg.Broker, logger).Handler(),
			Runner: api.RunnerOptions{Config: runnerCfg},
		})
		engine, ok := handler.(*gin.Engine)
		Expect(ok).To(BeTrue(), "api.NewServer returns the gin engine")
		routes = engine.Routes()
		srv = httptest.NewServer(handler)
		DeferCleanup(srv.Close)

		var err error
		pidA, tokenA, err = iron.NewProject("matrix A")
		Expect(err).NotTo(HaveOccurred())
		revoked, err = iron.Store.CreateToken(ctx, pidA, "to be revoked")
		Expect(err).NotTo(HaveOccurred())
		Expect(iron.Store.RevokeToken(ctx, revoked)).To(Succeed())
		pidB, tokenB, err = iron.NewProject("matrix B")
		Expect(err).NotTo(HaveOccurred())

		code, err := iron.Store.SaveCode(ctx, pidA, store.CodeUpload{Settings: store.CodeSettings{Name: "matrix-code", Image: "img"}})
		Expect(err).NotTo(HaveOccurred())
		codeA = code.ID
		secretOf = "payload-secret-of-A-" + store.NewID()
		r := iron.DoAs(tokenA, "POST", "/2/projects/"+pidA+"/tasks",
			map[string]any{"tasks": []any{map[string]any{"code_name": "matrix-code", "payload": secretOf}}}, nil)
		Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
		taskA = r.JSON()["tasks"].([]any)[0].(map[string]any)["id"].(string)
		r = iron.DoAs(tokenA, "POST", "/2/projects/"+pidA+"/schedules",
			map[string]any{"schedules": []any{map[string]any{"code_name": "matrix-code", "payload": secretOf, "run_every": 3600}}}, nil)
		Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
		schedA = r.JSON()["schedules"].([]any)[0].(map[string]any)["id"].(string)

		aData = []string{codeA, taskA, schedA, secretOf, "matrix-code"}
		secrets = []string{tokenA, tokenB, revoked, amRunnerSecret, amBrokerPassword}
	})

	// concrete turns a route pattern into a path into project A's data.
	concrete := func(pattern string) string {
		parts := strings.Split(pattern, "/")
		for i, p := range parts {
			switch {
			case p == ":project_id":
				parts[i] = pidA
			case p == ":code_id":
				parts[i] = codeA
			case p == ":task_id":
				parts[i] = taskA
			case p == ":schedule_id":
				parts[i] = schedA
			case p == ":part":
				parts[i] = "payload"
			case strings.HasPrefix(p, "*"):
				parts[i] = "service_instances/" + store.NewID()
			case strings.HasPrefix(p, ":"):
				Fail("auth matrix: no value for path parameter " + p + " in " + pattern + "; add one")
			}
		}
		return strings.Join(parts, "/")
	}

	type cred struct {
		name  string
		apply func(req *http.Request)
	}
	oauth := func(tok string) func(*http.Request) {
		return func(req *http.Request) { req.Header.Set("Authorization", "OAuth "+tok) }
	}
	bearer := func(tok string) func(*http.Request) {
		return func(req *http.Request) { req.Header.Set("Authorization", "Bearer "+tok) }
	}
	query := func(tok string) func(*http.Request) {
		return func(req *http.Request) {
			q := req.URL.Query()
			q.Set("oauth", tok)
			req.URL.RawQuery = q.Encode()
		}
	}
	basic := func(user, pass string) func(*http.Request) {
		return func(req *http.Request) { req.SetBasicAuth(user, pass) }
	}
	none := func(*http.Request) {}

	send := func(method, path string, apply func(*http.Request)) (int, string) {
		var body io.Reader
		if method != "GET" && method != "HEAD" {
			body = strings.NewReader(`{"tasks":[{"code_name":"matrix-code"}],"lease_id":"x","schedules":[{"code_name":"matrix-code","run_every":60}]}`)
		}
		req, err := http.NewRequest(method, srv.URL+path, body)
		Expect(err).NotTo(HaveOccurred())
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		apply(req)
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		Expect(err).NotTo(HaveOccurred())
		return resp.StatusCode, string(raw)
	}

	expectRefused := func(rt gin.RouteInfo, c cred, path string, allowed ...int) {
		status, body := send(rt.Method, path, c.apply)
		Expect(allowed).To(ContainElement(status), "%s %s with %s: got %d %s", rt.Method, rt.Path, c.name, status, body)
		for _, d := range aData {
			Expect(body).NotTo(ContainSubstring(d), "%s %s with %s leaked project A's data", rt.Method, rt.Path, c.name)
		}
	}

	It("refuses every wrong credential on every route", func() {
		Expect(len(routes)).To(BeNumerically(">", 30))
		appWrong := []cred{
			{"no token", none},
			{"a bad token", oauth("not-a-token-" + store.NewID())},
			{"a bad ?oauth= token", query("not-a-token-" + store.NewID())},
			{"a revoked token", oauth(revoked)},
			{"a revoked ?oauth= token", query(revoked)},
			{"the runner secret as bearer", bearer(amRunnerSecret)},
			{"the runner secret as OAuth", oauth(amRunnerSecret)},
			{"the runner credential as basic auth", basic(amRunnerName, amRunnerSecret)},
			{"the broker credential as basic auth", basic(amBrokerUser, amBrokerPassword)},
		}
		otherTenant := []cred{
			{"another project's token", oauth(tokenB)},
			{"another project's ?oauth= token", query(tokenB)},
		}
		runnerWrong := []cred{
			{"no credential", none},
			{"the app token as OAuth", oauth(tokenA)},
			{"the app token as bearer", bearer(tokenA)},
			{"the app token as ?oauth=", query(tokenA)},
			{"the app token as basic password", basic(amRunnerName, tokenA)},
			{"a wrong runner secret", basic(amRunnerName, "wrong-secret-0123456789")},
			{"the runner secret under another name", basic("someone-else", amRunnerSecret)},
			{"the broker credential", basic(amBrokerUser, amBrokerPassword)},
		}
		brokerWrong := []cred{
			{"no basic auth", none},
			{"the app token", oauth(tokenA)},
			{"the app token as bearer", bearer(tokenA)},
			{"the runner credential", basic(amRunnerName, amRunnerSecret)},
			{"a wrong broker password", basic(amBrokerUser, "wrong-password")},
			{"the broker password under another name", basic("admin", amBrokerPassword)},
		}
		public := map[string]bool{"GET /healthz": true, "GET /metrics": true}

		classified := 0
		for _, rt := range routes {
			path := concrete(rt.Path)
			switch {
			case public[rt.Method+" "+rt.Path]:
				classified++
			case strings.HasPrefix(rt.Path, "/2/projects/:project_id"):
				classified++
				for _, c := range appWrong {
					expectRefused(rt, c, path, http.StatusUnauthorized)
				}
				for _, c := range otherTenant {
					// The other project's own path with A's ids: 404, never A's data.
					expectRefused(rt, c, path, http.StatusNotFound)
					own := strings.Replace(path, pidA, pidB, 1)
					if own != "/2/projects/"+pidB && !strings.HasSuffix(rt.Path, "/codes") &&
						!strings.HasSuffix(rt.Path, "/tasks") && !strings.HasSuffix(rt.Path, "/schedules") &&
						!strings.HasSuffix(rt.Path, "/credentials") && !strings.HasSuffix(rt.Path, "/webhook") {
						// B's project, A's object id: as if it did not exist (or a 4xx
						// about the request), never A's object.
						expectRefused(rt, c, own, http.StatusNotFound, http.StatusBadRequest, http.StatusUnprocessableEntity)
					}
				}
			case rt.Path == "/internal/v1/tasks/:task_id/input/:part":
				// Task-scoped input token (internal_input.go): nothing else opens it.
				classified++
				for _, c := range append(append([]cred{}, runnerWrong...),
					cred{"the runner secret as bearer", bearer(amRunnerSecret)},
					cred{"the runner credential", basic(amRunnerName, amRunnerSecret)}) {
					expectRefused(rt, c, path, http.StatusUnauthorized)
				}
			case strings.HasPrefix(rt.Path, "/internal/v1/"):
				classified++
				for _, c := range runnerWrong {
					expectRefused(rt, c, path, http.StatusUnauthorized)
				}
			case strings.HasPrefix(rt.Path, "/v2/"):
				classified++
				for _, c := range brokerWrong {
					// CONNECT/TRACE never reach the broker through net/http's client
					// in a meaningful way; every other method must be refused.
					if rt.Method == http.MethodConnect || rt.Method == http.MethodTrace {
						continue
					}
					expectRefused(rt, c, path, http.StatusUnauthorized)
				}
			default:
				Fail("auth matrix: route " + rt.Method + " " + rt.Path + " is not classified; add it to the matrix")
			}
		}
		Expect(classified).To(Equal(len(routes)))
	})

	It("lets the right credential in (the matrix's control group)", func() {
		status, body := send("GET", "/2/projects/"+pidA+"/tasks/"+taskA, oauth(tokenA))
		Expect(status).To(Equal(http.StatusOK), body)
		Expect(body).To(ContainSubstring(taskA))
		status, _ = send("GET", "/2/projects/"+pidA+"/tasks/"+taskA, query(tokenA))
		Expect(status).To(Equal(http.StatusOK))
		status, _ = send("GET", "/v2/catalog", func(r *http.Request) {
			r.SetBasicAuth(amBrokerUser, amBrokerPassword)
			r.Header.Set("X-Broker-API-Version", "2.17")
		})
		Expect(status).To(Equal(http.StatusOK))
		status, body = send("GET", "/internal/v1/tasks/"+taskA+"/archive?lease_id="+url.QueryEscape(store.NewID()),
			basic(amRunnerName, amRunnerSecret))
		Expect(status).NotTo(Equal(http.StatusUnauthorized), body)
		status, _ = send("POST", "/internal/v1/lease", func(r *http.Request) {
			r.SetBasicAuth(amRunnerName, amRunnerSecret)
		})
		Expect(status).NotTo(Equal(http.StatusUnauthorized))
	})

	It("never writes a token, runner secret or broker password into the logs", func() {
		// Also exercise failing paths, which log the most.
		for _, p := range []string{"/2/projects/" + pidA, "/2/projects/" + pidA + "/tasks/" + taskA + "/log", "/2/projects/" + pidA + "/codes/" + store.NewID()} {
			send("GET", p, oauth(tokenA))
			send("GET", p, query(tokenA))
			send("POST", p, bearer(tokenB))
		}
		send("POST", "/2/projects/"+pidA+"/tasks?oauth="+url.QueryEscape(tokenA), none)
		send("PUT", "/v2/service_instances/"+store.NewID(), basic(amBrokerUser, amBrokerPassword))
		send("POST", "/internal/v1/tasks/"+taskA+"/heartbeat", basic(amRunnerName, amRunnerSecret))
		send("POST", "/internal/v1/tasks/"+taskA+"/log?lease_id=x&stream=stdout", bearer(amRunnerSecret))
		out := logs.String()
		for _, s := range secrets {
			Expect(out).NotTo(ContainSubstring(s), "a secret appears in the API's logs")
		}
	})
})
