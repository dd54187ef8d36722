package fakecf_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/client"
	cfconfig "github.com/cloudfoundry/go-cfclient/v3/config"
	"github.com/cloudfoundry/go-cfclient/v3/resource"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
)

func TestFakeCF(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(10 * time.Second)
	RunSpecs(t, "Fake Cloud Foundry suite")
}

type resp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

var _ = Describe("fake Cloud Foundry", func() {
	var (
		fake      *fakecf.Server
		token     string
		spaceGUID string
	)

	do := func(method, path, tok string, body any) resp {
		var rd io.Reader
		if s, ok := body.(string); ok {
			rd = strings.NewReader(s)
		} else if body != nil {
			b, err := json.Marshal(body)
			Expect(err).NotTo(HaveOccurred())
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, fake.URL+path, rd)
		Expect(err).NotTo(HaveOccurred())
		if rd != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if tok != "" {
			req.Header.Set("Authorization", "bearer "+tok)
		}
		res, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		r := resp{status: res.StatusCode, header: res.Header, raw: string(raw)}
		_ = json.Unmarshal(raw, &r.body)
		return r
	}
	getToken := func() string {
		req, _ := http.NewRequest(http.MethodPost, fake.URL+"/oauth/token", strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(fake.ClientID(), fake.ClientSecret())
		res, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer res.Body.Close()
		Expect(res.StatusCode).To(Equal(http.StatusOK))
		var t struct {
			AccessToken string `json:"access_token"`
			TokenType   string `json:"token_type"`
			ExpiresIn   int    `json:"expires_in"`
		}
		Expect(json.NewDecoder(res.Body).Decode(&t)).To(Succeed())
		Expect(t.TokenType).To(Equal("bearer"))
		return t.AccessToken
	}
	firstError := func(r resp) map[string]any {
		errs, ok := r.body["errors"].([]any)
		Expect(ok).To(BeTrue(), r.raw)
		Expect(errs).To(HaveLen(1))
		return errs[0].(map[string]any)
	}
	createApp := func(name string, docker bool) string {
		body := map[string]any{"name": name, "relationships": map[string]any{"space": map[string]any{"data": map[string]any{"guid": spaceGUID}}}}
		if docker {
			body["lifecycle"] = map[string]any{"type": "docker", "data": map[string]any{}}
		}
		r := do(http.MethodPost, "/v3/apps", token, body)
		Expect(r.status).To(Equal(http.StatusCreated), r.raw)
		return r.body["guid"].(string)
	}
	stagedDockerApp := func(name string) string {
		app := createApp(name, true)
		r := do(http.MethodPost, "/v3/packages", token, map[string]any{"type": "docker",
			"relationships": map[string]any{"app": map[string]any{"data": map[string]any{"guid": app}}},
			"data":          map[string]any{"image": "busybox"}})
		Expect(r.status).To(Equal(http.StatusCreated), r.raw)
		r = do(http.MethodPost, "/v3/builds", token, map[string]any{"package": map[string]any{"guid": r.body["guid"]}})
		Expect(r.status).To(Equal(http.StatusCreated), r.raw)
		build := r.body["guid"].(string)
		var droplet string
		Eventually(func() string {
			r := do(http.MethodGet, "/v3/builds/"+build, token, nil)
			if d, ok := r.body["droplet"].(map[string]any); ok {
				droplet = d["guid"].(string)
			}
			return r.body["state"].(string)
		}).Should(Equal("STAGED"))
		r = do(http.MethodPatch, "/v3/apps/"+app+"/relationships/current_droplet", token, map[string]any{"data": map[string]any{"guid": droplet}})
		Expect(r.status).To(Equal(http.StatusOK), r.raw)
		return app
	}
	taskState := func(guid string) func() string {
		return func() string { return do(http.MethodGet, "/v3/tasks/"+guid, token, nil).body["state"].(string) }
	}

	BeforeEach(func() {
		fake = fakecf.New(fakecf.Options{})
		DeferCleanup(fake.Close)
		_, spaceGUID = fake.CreateOrgAndSpace("o", "s")
		token = getToken()
	})

	It("serves the root links", func() {
		r := do(http.MethodGet, "/", "", nil)
		Expect(r.status).To(Equal(http.StatusOK))
		links := r.body["links"].(map[string]any)
		for _, l := range []string{"uaa", "login", "log_cache"} {
			Expect(links[l].(map[string]any)["href"]).To(Equal(fake.URL))
		}
		Expect(links["cloud_controller_v3"].(map[string]any)["href"]).To(Equal(fake.URL + "/v3"))
	})

	It("requires a valid bearer token", func() {
		r := do(http.MethodGet, "/v3/apps", "", nil)
		Expect(r.status).To(Equal(http.StatusUnauthorized))
		Expect(firstError(r)["title"]).To(Equal("CF-InvalidAuthToken"))
		Expect(do(http.MethodGet, "/v3/apps", "nonsense", nil).status).To(Equal(http.StatusUnauthorized))
		Expect(do(http.MethodGet, "/v3/apps", token, nil).status).To(Equal(http.StatusOK))
	})

	It("expires tokens", func() {
		short := fakecf.New(fakecf.Options{TokenTTL: time.Second})
		defer short.Close()
		orig := fake
		fake = short
		defer func() { fake = orig }()
		tok := getToken()
		Expect(do(http.MethodGet, "/v3/apps", tok, nil).status).To(Equal(http.StatusOK))
		time.Sleep(1100 * time.Millisecond)
		Expect(do(http.MethodGet, "/v3/apps", tok, nil).status).To(Equal(http.StatusUnauthorized))
	})

	It("answers 404 with CF-ResourceNotFound", func() {
		r := do(http.MethodGet, "/v3/apps/nope", token, nil)
		Expect(r.status).To(Equal(http.StatusNotFound))
		Expect(firstError(r)).To(Equal(map[string]any{"code": 10010.0, "title": "CF-ResourceNotFound", "detail": "App not found"}))
	})

	It("refuses unknown fields and wrong types with 422, bad JSON with 400", func() {
		r := do(http.MethodPost, "/v3/apps", token, map[string]any{"name": "a", "bogus": 1,
			"relationships": map[string]any{"space": map[string]any{"data": map[string]any{"guid": spaceGUID}}}})
		Expect(r.status).To(Equal(http.StatusUnprocessableEntity))
		Expect(firstError(r)["title"]).To(Equal("CF-UnprocessableEntity"))
		Expect(firstError(r)["detail"]).To(ContainSubstring("Unknown field(s): 'bogus'"))

		r = do(http.MethodPost, "/v3/apps", token, map[string]any{"name": 5})
		Expect(r.status).To(Equal(http.StatusUnprocessableEntity))
		Expect(firstError(r)["detail"]).To(ContainSubstring("name must be a string"))

		app := stagedDockerApp("strict")
		r = do(http.MethodPost, "/v3/apps/"+app+"/tasks", token, map[string]any{"command": "true", "environment_variables": map[string]any{"A": "b"}})
		Expect(r.status).To(Equal(http.StatusUnprocessableEntity))
		Expect(firstError(r)["detail"]).To(ContainSubstring("environment_variables"))
		r = do(http.MethodPost, "/v3/apps/"+app+"/tasks", token, map[string]any{"command": "true", "memory_in_mb": "512"})
		Expect(r.status).To(Equal(http.StatusUnprocessableEntity))

		createApp("twice", false)
		r = do(http.MethodPost, "/v3/apps", token, map[string]any{"name": "TWICE",
			"relationships": map[string]any{"space": map[string]any{"data": map[string]any{"guid": spaceGUID}}}})
		Expect(r.status).To(Equal(http.StatusUnprocessableEntity))
		Expect(firstError(r)["detail"]).To(Equal("App with the name 'TWICE' already exists."))

		Expect(do(http.MethodPost, "/v3/apps", token, "{nope").status).To(Equal(http.StatusBadRequest))
		Expect(do(http.MethodGet, "/v3/apps?colour=red", token, nil).status).To(Equal(http.StatusBadRequest))
	})

	It("refuses a task without a droplet, and a command over 4096 characters", func() {
		app := createApp("nodroplet", true)
		r := do(http.MethodPost, "/v3/apps/"+app+"/tasks", token, map[string]any{"command": "true"})
		Expect(r.status).To(Equal(http.StatusUnprocessableEntity))
		Expect(firstError(r)["detail"]).To(Equal("Task must have a droplet. Specify droplet or assign current droplet to app."))

		app = stagedDockerApp("long")
		r = do(http.MethodPost, "/v3/apps/"+app+"/tasks", token, map[string]any{"command": strings.Repeat("x", 4097)})
		Expect(r.status).To(Equal(http.StatusUnprocessableEntity))
		Expect(firstError(r)["detail"]).To(Equal("Command must be shorter than 4097 characters"))
		// CC counts characters, not bytes.
		r = do(http.MethodPost, "/v3/apps/"+app+"/tasks", token, map[string]any{"command": "true #" + strings.Repeat("é", 4090)})
		Expect(r.status).To(Equal(http.StatusAccepted), r.raw)
		Expect(do(http.MethodPost, "/v3/apps/nope/tasks", token, map[string]any{"command": "true"}).status).To(Equal(http.StatusNotFound))
	})

	It("runs tasks through PENDING and RUNNING to SUCCEEDED or FAILED, with logs in Log Cache", func() {
		app := stagedDockerApp("runner")
		r := do(http.MethodPost, "/v3/apps/"+app+"/tasks", token, map[string]any{"name": "ok", "command": "echo hello; sleep 0.2; echo oops >&2", "memory_in_mb": 64})
		Expect(r.status).To(Equal(http.StatusAccepted))
		Expect(r.body["state"]).To(Equal("PENDING"))
		Expect(r.body["memory_in_mb"]).To(Equal(64.0))
		Expect(r.body["links"].(map[string]any)["cancel"]).To(Equal(map[string]any{"href": fake.URL + "/v3/tasks/" + r.body["guid"].(string) + "/actions/cancel", "method": "POST"}))
		ok := r.body["guid"].(string)
		r = do(http.MethodPost, "/v3/apps/"+app+"/tasks", token, map[string]any{"name": "bad", "command": "exit 7"})
		bad := r.body["guid"].(string)
		Eventually(taskState(ok)).Should(Equal("SUCCEEDED"))
		Eventually(taskState(bad)).Should(Equal("FAILED"))
		r = do(http.MethodGet, "/v3/tasks/"+bad, token, nil)
		Expect(r.body["result"]).To(Equal(map[string]any{"failure_reason": "APP/TASK/bad: Exited with status 7"}))
		Expect(fake.LogLines(app, "APP/TASK/ok")).To(Equal([]string{"hello", "oops"}))

		r = do(http.MethodGet, "/v3/api/v1/read/"+app, token, nil)
		Expect(r.status).To(Equal(http.StatusNotFound))
		r = do(http.MethodGet, "/api/v1/read/"+app+"?envelope_types=LOG&start_time=0", token, nil)
		Expect(r.status).To(Equal(http.StatusOK))
		batch := r.body["envelopes"].(map[string]any)["batch"].([]any)
		var okLines []map[string]any
		for _, e := range batch {
			env := e.(map[string]any)
			if env["tags"].(map[string]any)["source_type"] == "APP/TASK/ok" {
				okLines = append(okLines, env)
			}
		}
		Expect(okLines).To(HaveLen(2))
		Expect(okLines[0]["source_id"]).To(Equal(app))
		Expect(okLines[0]["log"]).To(Equal(map[string]any{"payload": "aGVsbG8=", "type": "OUT"}))
		Expect(okLines[1]["log"]).To(Equal(map[string]any{"payload": "b29wcw==", "type": "ERR"}))
		Expect(okLines[0]["timestamp"]).To(BeAssignableToTypeOf("")) // int64 as a JSON string
		Expect(do(http.MethodGet, "/api/v1/read/"+app, "", nil).status).To(Equal(http.StatusUnauthorized))
	})

	It("lists tasks with filters and pagination; cancels running tasks", func() {
		app := stagedDockerApp("lister")
		guids := map[string]string{}
		for _, n := range []string{"t1", "t2", "t3"} {
			r := do(http.MethodPost, "/v3/apps/"+app+"/tasks", token, map[string]any{"name": n, "command": "sleep 30"})
			guids[n] = r.body["guid"].(string)
		}
		r := do(http.MethodGet, "/v3/tasks?per_page=2", token, nil)
		Expect(r.status).To(Equal(http.StatusOK))
		p := r.body["pagination"].(map[string]any)
		Expect(p["total_results"]).To(Equal(3.0))
		Expect(p["total_pages"]).To(Equal(2.0))
		Expect(p["next"].(map[string]any)["href"]).To(ContainSubstring("page=2"))
		Expect(r.body["resources"]).To(HaveLen(2))
		Expect(r.body["resources"].([]any)[0].(map[string]any)).NotTo(HaveKey("command"))

		r = do(http.MethodGet, "/v3/tasks?names=T2,t3&guids="+guids["t2"], token, nil)
		Expect(r.body["resources"]).To(HaveLen(1))
		Eventually(taskState(guids["t1"])).Should(Equal("RUNNING"))
		r = do(http.MethodPost, "/v3/tasks/"+guids["t1"]+"/actions/cancel", token, nil)
		Expect(r.status).To(Equal(http.StatusAccepted))
		Expect(r.body["state"]).To(Equal("CANCELING"))
		Eventually(taskState(guids["t1"])).Should(Equal("FAILED"))
		r = do(http.MethodGet, "/v3/apps/"+app+"/tasks?states=FAILED", token, nil)
		Expect(r.body["resources"]).To(HaveLen(1))
		Expect(r.body["resources"].([]any)[0].(map[string]any)["result"]).To(Equal(map[string]any{"failure_reason": "task was cancelled"}))
		r = do(http.MethodPost, "/v3/tasks/"+guids["t1"]+"/actions/cancel", token, nil)
		Expect(r.status).To(Equal(http.StatusUnprocessableEntity))
	})

	It("throttles with 429 and Retry-After, and flags requests sent too early", func() {
		fake.Throttle(1, time.Second)
		r := do(http.MethodGet, "/v3/apps", token, nil)
		Expect(r.status).To(Equal(http.StatusTooManyRequests))
		Expect(r.header.Get("Retry-After")).To(Equal("1"))
		Expect(firstError(r)["title"]).To(Equal("CF-RateLimitExceeded"))
		Expect(firstError(r)["code"]).To(Equal(10013.0))
		Expect(do(http.MethodGet, "/v3/apps", token, nil).status).To(Equal(http.StatusOK))
		reqs := fake.Requests()
		Expect(reqs[len(reqs)-1].Early).To(BeTrue())
		Expect(reqs[len(reqs)-2].Status).To(Equal(http.StatusTooManyRequests))
	})

	It("refuses docker apps when diego_docker is disabled", func() {
		fake.SetFeatureFlag("diego_docker", false)
		r := do(http.MethodGet, "/v3/feature_flags/diego_docker", token, nil)
		Expect(r.body["enabled"]).To(BeFalse())
		r = do(http.MethodPost, "/v3/apps", token, map[string]any{"name": "d", "lifecycle": map[string]any{"type": "docker", "data": map[string]any{}},
			"relationships": map[string]any{"space": map[string]any{"data": map[string]any{"guid": spaceGUID}}}})
		Expect(r.status).To(Equal(http.StatusForbidden))
		Expect(firstError(r)).To(Equal(map[string]any{"code": 330002.0, "title": "CF-FeatureDisabled", "detail": "Feature Disabled: diego_docker"}))
	})

	It("registers service brokers through jobs and sets plan visibility (go-cfclient)", func() {
		catalog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != "broker" || p != "pw" || r.URL.Path != "/v2/catalog" || r.Header.Get("X-Broker-API-Version") == "" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			_, _ = io.WriteString(w, `{"services":[{"id":"svc","name":"ironworker","description":"d","bindable":true,
				"plans":[{"id":"p1","name":"standard","description":"s"},{"id":"p2","name":"large","description":"l","free":false}]}]}`)
		}))
		defer catalog.Close()
		cfg, err := cfconfig.New(fake.URL, cfconfig.ClientCredentials(fake.ClientID(), fake.ClientSecret()))
		Expect(err).NotTo(HaveOccurred())
		cf, err := client.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		ctx := context.Background()
		poll := &client.PollingOptions{Timeout: 10 * time.Second, CheckInterval: 20 * time.Millisecond, FailedState: "FAILED"}

		job, err := cf.ServiceBrokers.Create(ctx, resource.NewServiceBrokerCreate("iron", catalog.URL, "broker", "pw"))
		Expect(err).NotTo(HaveOccurred())
		Expect(job).NotTo(BeEmpty())
		Expect(cf.Jobs.PollComplete(ctx, job, poll)).To(Succeed())
		opts := client.NewServiceBrokerListOptions()
		opts.Names.EqualTo("iron")
		broker, err := cf.ServiceBrokers.Single(ctx, opts)
		Expect(err).NotTo(HaveOccurred())

		popts := client.NewServicePlanListOptions()
		popts.ServiceBrokerGUIDs.EqualTo(broker.GUID)
		plans, err := cf.ServicePlans.ListAll(ctx, popts)
		Expect(err).NotTo(HaveOccurred())
		Expect(plans).To(HaveLen(2))
		Expect(plans[0].VisibilityType).To(Equal("admin"))
		_, err = cf.ServicePlansVisibility.Update(ctx, plans[0].GUID, resource.NewServicePlanVisibilityUpdate(resource.ServicePlanVisibilityPublic))
		Expect(err).NotTo(HaveOccurred())
		v, err := cf.ServicePlansVisibility.Get(ctx, plans[0].GUID)
		Expect(err).NotTo(HaveOccurred())
		Expect(v.Type).To(Equal("public"))
		orgGUID, _ := fake.CreateOrgAndSpace("o", "s")
		vis := resource.NewServicePlanVisibilityUpdate(resource.ServicePlanVisibilityOrganization)
		vis.Organizations = []resource.ServicePlanVisibilityRelation{{GUID: orgGUID}}
		_, err = cf.ServicePlansVisibility.Apply(ctx, plans[1].GUID, vis)
		Expect(err).NotTo(HaveOccurred())
		typ, orgs := fake.PlanVisibility(plans[1].GUID)
		Expect(typ).To(Equal("organization"))
		Expect(orgs).To(Equal([]string{orgGUID}))
		Expect(cf.ServicePlansVisibility.Delete(ctx, plans[1].GUID, orgGUID)).To(Succeed())

		job, _, err = cf.ServiceBrokers.Update(ctx, broker.GUID, resource.NewServiceBrokerUpdate().WithCredentials("broker", "wrong"))
		Expect(err).NotTo(HaveOccurred())
		Expect(cf.Jobs.PollComplete(ctx, job, poll)).To(MatchError(ContainSubstring("FAILED")))

		job, err = cf.ServiceBrokers.Delete(ctx, broker.GUID)
		Expect(err).NotTo(HaveOccurred())
		Expect(cf.Jobs.PollComplete(ctx, job, poll)).To(Succeed())
		_, err = cf.ServiceBrokers.Get(ctx, broker.GUID)
		Expect(resource.IsResourceNotFoundError(err)).To(BeTrue())
	})
})
