package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"code.cloudfoundry.org/brokerapi/v13/domain"

	"github.com/ironcf/ironworker-release/src/broker"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/store"
)

// appClient is an app using its bound credentials: every request goes to the URL in
// VCAP_SERVICES (iron.test.internal:8443), which resolves to the test server.
type appClient struct {
	creds map[string]any
	http  *http.Client
}

func newAppClient(creds map[string]any) *appClient {
	addr := iron.Server.Listener.Addr().String()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	return &appClient{creds: creds, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (a *appClient) do(method, path string, body any) (int, map[string]any) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		Expect(err).NotTo(HaveOccurred())
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.creds["url"].(string)+path, rd)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "OAuth "+a.creds["token"].(string))
	resp, err := a.http.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// queueDirect gives a project a code and n queued tasks through the store.
func queueDirect(projectID string, n int) []string {
	ctx := context.Background()
	name := "direct-" + store.NewID()
	_, err := iron.Store.SaveCode(ctx, projectID, store.CodeUpload{Settings: store.CodeSettings{Name: name, Image: "img"}})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	batch := make([]store.NewTask, n)
	for i := range batch {
		batch[i] = store.NewTask{CodeName: name, Timeout: 60}
	}
	ids, err := iron.Store.QueueTasks(ctx, projectID, batch)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return ids
}

func sqlExec(q string, args ...any) {
	db, err := iron.DB.SQL()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer db.Close()
	_, err = db.Exec(q, args...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
}

var _ = Describe("Broker end to end", func() {
	It("provisions, binds, serves the IronWorker API with the bound credentials, unbinds and deprovisions", func() {
		ctx := context.Background()
		inst := provision(largePlan)
		bid, creds := bind(inst, largePlan)
		app := newAppClient(creds)
		projectID := creds["project_id"].(string)
		Expect(creds["url"]).To(Equal("http://" + externalHost + ":8443/2/projects/" + projectID))

		// The app uploads a code, queues tasks and reads them back, as any IronWorker client.
		status, body := app.do("POST", "/codes", map[string]any{"name": "e2e-worker", "image": "acme/worker:1"})
		Expect(status).To(Equal(http.StatusOK), "%v", body)
		status, body = app.do("POST", "/tasks", map[string]any{"tasks": []any{
			map[string]any{"code_name": "e2e-worker", "payload": `{"n":1}`},
			map[string]any{"code_name": "e2e-worker", "payload": `{"n":2}`},
		}})
		Expect(status).To(Equal(http.StatusOK), "%v", body)
		tasks := body["tasks"].([]any)
		queuedID := tasks[0].(map[string]any)["id"].(string)
		runningID := tasks[1].(map[string]any)["id"].(string)
		status, body = app.do("GET", "/tasks/"+queuedID, nil)
		Expect(status).To(Equal(http.StatusOK))
		Expect(body).To(And(HaveKeyWithValue("status", "queued"), HaveKeyWithValue("project_id", projectID),
			HaveKeyWithValue("payload", `{"n":1}`), HaveKeyWithValue("code_name", "e2e-worker")))
		status, body = app.do("POST", "/schedules", map[string]any{"schedules": []any{map[string]any{
			"code_name": "e2e-worker", "run_every": 3600, "start_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}})
		Expect(status).To(Equal(http.StatusOK), "%v", body)
		scheduleID := body["schedules"].([]any)[0].(map[string]any)["id"].(string)
		// A runner holds the second task.
		sqlExec(`UPDATE tasks SET status = 'running', start_time = now(), lease_id = 'lease-e2e', runner_id = 'r1',
			lease_expires_at = now() + interval '1 minute' WHERE id = $1`, runningID)
		// Another project's task must survive the deprovision.
		otherIDs := queueDirect(iron.ProjectID, 1)

		// Unbind: the token is refused at once.
		Expect(osbDo("DELETE", "/v2/service_instances/"+inst+"/service_bindings/"+bid+instanceQuery(largePlan), nil).Status).
			To(Equal(http.StatusOK))
		status, body = app.do("GET", "/tasks/"+queuedID, nil)
		Expect(status).To(Equal(http.StatusUnauthorized))
		Expect(body).To(HaveKeyWithValue("msg", "Invalid token"))

		// A second binding works until the deprovision.
		_, creds2 := bind(inst, largePlan)
		app2 := newAppClient(creds2)
		status, _ = app2.do("GET", "", nil)
		Expect(status).To(Equal(http.StatusOK))

		// Deprovision: tasks (queued and running) and schedules cancelled, tokens revoked,
		// the project disabled and, after the purge grace, gone.
		Expect(osbDo("DELETE", "/v2/service_instances/"+inst+instanceQuery(largePlan), nil).Status).To(Equal(http.StatusOK))
		status, _ = app2.do("GET", "", nil)
		Expect(status).To(Equal(http.StatusUnauthorized))
		for _, id := range []string{queuedID, runningID} {
			t, err := iron.Store.GetTask(ctx, projectID, id)
			Expect(err).NotTo(HaveOccurred())
			Expect(t.Status).To(Equal("cancelled"), id)
			Expect(t.Msg).To(Equal(store.DeprovisionMsg))
			Expect(t.EndTime).NotTo(BeNil())
		}
		// The runner holding the task learns it on its next heartbeat.
		_, err := iron.Store.HeartbeatTask(ctx, runningID, "lease-e2e", store.Heartbeat{}, time.Minute)
		Expect(err).To(MatchError(store.ErrTaskCancelled))
		sc, err := iron.Store.GetSchedule(ctx, projectID, scheduleID)
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.Status).To(Equal("cancelled"))
		deleted, err := iron.Store.ProjectDeleted(ctx, projectID)
		Expect(err).NotTo(HaveOccurred())
		Expect(deleted).To(BeTrue())
		_, err = iron.Store.ProjectQuotas(ctx, projectID)
		Expect(err).To(MatchError(store.ErrNotFound))
		// Nothing can be queued into it any more, even from inside.
		_, err = iron.Store.QueueTasks(ctx, projectID, []store.NewTask{{CodeName: "e2e-worker", Timeout: 60}})
		Expect(err).To(HaveOccurred())

		n, err := iron.Store.PurgeDeletedProjects(ctx, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(BeNumerically(">=", 1))
		_, err = iron.Store.GetProject(ctx, projectID)
		Expect(err).To(MatchError(store.ErrNotFound))
		_, err = iron.Store.GetTask(ctx, projectID, queuedID)
		Expect(err).To(MatchError(store.ErrNotFound))

		other, err := iron.Store.GetTask(ctx, iron.ProjectID, otherIDs[0])
		Expect(err).NotTo(HaveOccurred())
		Expect(other.Status).To(Equal("queued"))
		Expect(iron.Do("GET", iron.Project(), nil).Status).To(Equal(http.StatusOK))
	})

	It("writes https credentials without the default port in the url", func() {
		cfg := brokerConfig()
		cfg.ExternalAPI = config.ExternalAPI{Host: "iron.sys.example.com"}
		full := config.API{Broker: cfg}
		full.ApplyDefaults()
		b := broker.New(iron.Store, full.Broker, jsonLogger(io.Discard))
		inst := provision(smallPlan)
		bindDetails := bindDetailsFor(smallPlan)
		got, err := b.Bind(context.Background(), inst, newGUID(), bindDetails, false)
		Expect(err).NotTo(HaveOccurred())
		var creds map[string]any
		Expect(json.Unmarshal(got.Credentials.(json.RawMessage), &creds)).To(Succeed())
		Expect(creds).To(And(HaveKeyWithValue("scheme", "https"), HaveKeyWithValue("protocol", "https"),
			HaveKeyWithValue("port", 443.0), HaveKeyWithValue("host", "iron.sys.example.com"),
			HaveKeyWithValue("url", "https://iron.sys.example.com/2/projects/"+creds["project_id"].(string))))
	})

	It("applies a plan's changed quotas to existing instances and purges only after the grace", func() {
		ctx := context.Background()
		inst := provision(smallPlan)
		in, err := iron.Store.GetInstance(ctx, inst)
		Expect(err).NotTo(HaveOccurred())
		cfg := brokerConfig()
		cfg.Plans[0].Quotas.MaxQueuedTasks = ptr(7)
		full := config.API{Broker: cfg}
		full.ApplyDefaults()
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			broker.New(iron.Store, full.Broker, jsonLogger(io.Discard)).Run(runCtx)
		}()
		Eventually(func() *int {
			q, err := iron.Store.ProjectQuotas(ctx, in.ProjectID)
			Expect(err).NotTo(HaveOccurred())
			return q.MaxQueuedTasks
		}).Should(HaveValue(Equal(7)))
		cancel()
		Eventually(done).Should(BeClosed())

		Expect(osbDo("DELETE", "/v2/service_instances/"+inst+instanceQuery(smallPlan), nil).Status).To(Equal(http.StatusOK))
		_, err = iron.Store.PurgeDeletedProjects(ctx, time.Hour)
		Expect(err).NotTo(HaveOccurred())
		deleted, err := iron.Store.ProjectDeleted(ctx, in.ProjectID)
		Expect(err).NotTo(HaveOccurred())
		Expect(deleted).To(BeTrue())
		_, err = iron.Store.GetProject(ctx, in.ProjectID)
		Expect(err).NotTo(HaveOccurred(), "kept disabled within the grace")
	})
})

func bindDetailsFor(planID string) domain.BindDetails {
	return domain.BindDetails{ServiceID: serviceID, PlanID: planID, AppGUID: "app-x"}
}
