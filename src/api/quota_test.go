package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

// quotaProject is a broker-made project (a service instance on a plan with limits).
type quotaProject struct {
	api             *testsupport.API
	id, token, code string
}

func intp(i int) *int { return &i }

// smallPlanQuotas is a plan with every limit.
func smallPlanQuotas() store.Quotas {
	return store.Quotas{PlanID: "plan-small", MaxConcurrency: intp(1), MaxTimeoutSeconds: intp(60),
		MaxPayloadBytes: intp(100), MaxQueuedTasks: intp(2), MaxSchedules: intp(1), AllowedPriorities: []int{0, 1}}
}

func newQuotaProject(q store.Quotas) quotaProject {
	GinkgoHelper()
	return newQuotaProjectOn(iron, q)
}

// newQuotaProjectOn makes the project on api (the suite's iron, or a spec's own API
// on its own database).
func newQuotaProjectOn(api *testsupport.API, q store.Quotas) quotaProject {
	GinkgoHelper()
	ctx := context.Background()
	in, created, err := api.Store.ProvisionInstance(ctx, store.NewInstance{ID: "inst-" + store.NewID(), ServiceID: "svc",
		PlanID: q.PlanID, OrganizationGUID: "org", SpaceGUID: "space", ProjectName: "quota spec", Quotas: q})
	Expect(err).NotTo(HaveOccurred())
	Expect(created).To(BeTrue())
	token, err := api.Store.CreateToken(ctx, in.ProjectID, "quota spec")
	Expect(err).NotTo(HaveOccurred())
	p := quotaProject{api: api, id: in.ProjectID, token: token, code: "quota-code"}
	_, err = api.Store.SaveCode(ctx, p.id, store.CodeUpload{Settings: store.CodeSettings{Name: p.code, Image: "img"}})
	Expect(err).NotTo(HaveOccurred())
	return p
}

func (p quotaProject) do(method, path string, body any) (int, string) {
	r := p.api.DoAs(p.token, method, "/2/projects/"+p.id+path, body, nil)
	return r.Status, strings.TrimSpace(string(r.Body))
}

func (p quotaProject) task(id string) store.Task {
	t, err := p.api.Store.GetTask(context.Background(), p.id, id)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return t
}

func (p quotaProject) queue(task map[string]any) string {
	r := p.api.DoAs(p.token, "POST", "/2/projects/"+p.id+"/tasks", map[string]any{"tasks": []any{task}}, nil)
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusOK), string(r.Body))
	return r.JSON()["tasks"].([]any)[0].(map[string]any)["id"].(string)
}

var _ = Describe("Plan quotas", func() {
	var p quotaProject
	BeforeEach(func() { p = newQuotaProject(smallPlanQuotas()) })

	Describe("max_payload_bytes", func() {
		It("answers 413 for a larger payload on queue, webhook and schedules, and takes one at the limit", func() {
			big := strings.Repeat("x", 101)
			status, body := p.do("POST", "/tasks", map[string]any{"tasks": []any{map[string]any{"code_name": p.code, "payload": big}}})
			Expect(status).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(body).To(Equal(`{"msg":"tasks[0]: payload is 101 bytes; the plan's limit is 100 bytes (max_payload_bytes)"}`))

			status, body = p.do("POST", "/tasks/webhook?code_name="+p.code, big)
			Expect(status).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(body).To(Equal(`{"msg":"payload is 101 bytes; the plan's limit is 100 bytes (max_payload_bytes)"}`))

			status, body = p.do("POST", "/schedules", map[string]any{"schedules": []any{map[string]any{
				"code_name": p.code, "payload": big, "run_every": 3600}}})
			Expect(status).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(body).To(Equal(`{"msg":"payload is 101 bytes; the plan's limit is 100 bytes (max_payload_bytes)"}`))

			p.queue(map[string]any{"code_name": p.code, "payload": strings.Repeat("x", 100)})
		})

		It("answers 413 when a schedule update sets a larger payload", func() {
			status, body := p.do("POST", "/schedules", map[string]any{"schedules": []any{map[string]any{"code_name": p.code, "run_every": 3600}}})
			Expect(status).To(Equal(http.StatusOK), body)
			sc, err := iron.Store.ListSchedules(context.Background(), p.id, 0, 10)
			Expect(err).NotTo(HaveOccurred())
			status, body = p.do("PUT", "/schedules/"+sc[0].ID, map[string]any{"payload": strings.Repeat("y", 101)})
			Expect(status).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(body).To(Equal(`{"msg":"payload is 101 bytes; the plan's limit is 100 bytes (max_payload_bytes)"}`))
		})
	})

	Describe("max_timeout_seconds", func() {
		It("answers 400 for a longer timeout and lowers the default to the plan's maximum", func() {
			status, body := p.do("POST", "/tasks", map[string]any{"tasks": []any{map[string]any{"code_name": p.code, "timeout": 61}}})
			Expect(status).To(Equal(http.StatusBadRequest))
			Expect(body).To(Equal(`{"msg":"tasks[0]: timeout must be at most 60 seconds on this plan (max_timeout_seconds)"}`))

			status, body = p.do("POST", "/tasks/webhook?code_name="+p.code+"&timeout=3600", "x")
			Expect(status).To(Equal(http.StatusBadRequest))
			Expect(body).To(Equal(`{"msg":"timeout must be at most 60 seconds on this plan (max_timeout_seconds)"}`))

			status, body = p.do("POST", "/schedules", map[string]any{"schedules": []any{map[string]any{
				"code_name": p.code, "run_every": 3600, "timeout": 120}}})
			Expect(status).To(Equal(http.StatusBadRequest))
			Expect(body).To(Equal(`{"msg":"timeout must be at most 60 seconds on this plan (max_timeout_seconds)"}`))

			Expect(p.task(p.queue(map[string]any{"code_name": p.code})).Timeout).To(Equal(60))
			Expect(p.task(p.queue(map[string]any{"code_name": p.code, "timeout": 30})).Timeout).To(Equal(30))
		})
	})

	Describe("max_queued_tasks", func() {
		It("answers 403 naming the limit when queueing beyond it, all or none, on queue, webhook and retry", func() {
			status, body := p.do("POST", "/tasks", map[string]any{"tasks": []any{
				map[string]any{"code_name": p.code}, map[string]any{"code_name": p.code}, map[string]any{"code_name": p.code}}})
			Expect(status).To(Equal(http.StatusForbidden))
			Expect(body).To(Equal(`{"msg":"Plan limit reached: at most 2 queued tasks (max_queued_tasks); 0 are queued and this request adds 3"}`))
			tasks, err := iron.Store.ListTasks(context.Background(), p.id, store.TaskFilter{Limit: 10})
			Expect(err).NotTo(HaveOccurred())
			Expect(tasks).To(BeEmpty())

			first := p.queue(map[string]any{"code_name": p.code})
			p.queue(map[string]any{"code_name": p.code})
			status, body = p.do("POST", "/tasks", map[string]any{"tasks": []any{map[string]any{"code_name": p.code}}})
			Expect(status).To(Equal(http.StatusForbidden))
			Expect(body).To(Equal(`{"msg":"Plan limit reached: at most 2 queued tasks (max_queued_tasks); 2 are queued and this request adds 1"}`))
			status, body = p.do("POST", "/tasks/webhook?code_name="+p.code, "payload")
			Expect(status).To(Equal(http.StatusForbidden))
			Expect(body).To(Equal(`{"msg":"Plan limit reached: at most 2 queued tasks (max_queued_tasks); 2 are queued and this request adds 1"}`))

			// A finished task frees a place, but its retry would take it back beyond.
			status, _ = p.do("POST", "/tasks/"+first+"/cancel", nil)
			Expect(status).To(Equal(http.StatusOK))
			p.queue(map[string]any{"code_name": p.code})
			status, body = p.do("POST", "/tasks/"+first+"/retry", nil)
			Expect(status).To(Equal(http.StatusForbidden))
			Expect(body).To(Equal(`{"msg":"Plan limit reached: at most 2 queued tasks (max_queued_tasks); 2 are queued and this request adds 1"}`))
		})

		It("counts concurrent requests one after the other", func() {
			results := make(chan int, 6)
			for range 6 {
				go func() {
					defer GinkgoRecover()
					status, _ := p.do("POST", "/tasks", map[string]any{"tasks": []any{map[string]any{"code_name": p.code}}})
					results <- status
				}()
			}
			ok := 0
			for range 6 {
				if <-results == http.StatusOK {
					ok++
				}
			}
			Expect(ok).To(Equal(2))
		})
	})

	Describe("max_schedules", func() {
		It("answers 403 naming the limit when creating schedules beyond it; a cancelled one frees its place", func() {
			sched := map[string]any{"code_name": p.code, "run_every": 3600,
				"start_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}
			status, body := p.do("POST", "/schedules", map[string]any{"schedules": []any{sched, sched}})
			Expect(status).To(Equal(http.StatusForbidden))
			Expect(body).To(Equal(`{"msg":"Plan limit reached: at most 1 schedules (max_schedules); 0 are active and this request adds 2"}`))

			status, body = p.do("POST", "/schedules", map[string]any{"schedules": []any{sched}})
			Expect(status).To(Equal(http.StatusOK), body)
			status, body = p.do("POST", "/schedules", map[string]any{"schedules": []any{sched}})
			Expect(status).To(Equal(http.StatusForbidden))
			Expect(body).To(Equal(`{"msg":"Plan limit reached: at most 1 schedules (max_schedules); 1 are active and this request adds 1"}`))

			list, err := iron.Store.ListSchedules(context.Background(), p.id, 0, 10)
			Expect(err).NotTo(HaveOccurred())
			status, _ = p.do("POST", "/schedules/"+list[0].ID+"/cancel", nil)
			Expect(status).To(Equal(http.StatusOK))
			status, body = p.do("POST", "/schedules", map[string]any{"schedules": []any{sched}})
			Expect(status).To(Equal(http.StatusOK), body)
		})
	})

	Describe("allowed_priorities", func() {
		It("runs a priority the plan does not allow at 0, as hosted IronWorker does", func() {
			Expect(p.task(p.queue(map[string]any{"code_name": p.code, "priority": 2})).Priority).To(Equal(0))
			Expect(p.task(p.queue(map[string]any{"code_name": p.code, "priority": 1})).Priority).To(Equal(1))
		})

		It("applies to a code's default priority too", func() {
			q := smallPlanQuotas()
			q.MaxQueuedTasks = nil
			p := newQuotaProject(q)
			_, err := iron.Store.SaveCode(context.Background(), p.id, store.CodeUpload{Settings: store.CodeSettings{
				Name: "urgent", Image: "img", DefaultPriority: intp(2)}})
			Expect(err).NotTo(HaveOccurred())
			Expect(p.task(p.queue(map[string]any{"code_name": "urgent"})).Priority).To(Equal(0))
		})
	})

	Describe("max_concurrency", func() {
		It("is stored on the project for the lease query (projects.max_concurrency)", func() {
			q, err := iron.Store.ProjectQuotas(context.Background(), p.id)
			Expect(err).NotTo(HaveOccurred())
			Expect(q.MaxConcurrency).To(HaveValue(Equal(1)))
		})

		It("never leases more of the project's tasks than the plan's max_concurrency", func() {
			// Its own API on its own database: no other spec's queued task is leased
			// here, nor one of this project's left to them.
			own, err := testsupport.StartAPI(config.Limits{})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(own.Stop)
			q := smallPlanQuotas()
			q.MaxQueuedTasks = nil
			p := newQuotaProjectOn(own, q)
			_, err = own.Store.SaveCode(context.Background(), p.id, store.CodeUpload{Settings: store.CodeSettings{Name: "second", Image: "img"}})
			Expect(err).NotTo(HaveOccurred())
			first := p.queue(map[string]any{"code_name": p.code})
			p.queue(map[string]any{"code_name": p.code})
			p.queue(map[string]any{"code_name": "second"})

			lease := func() []store.LeasedTask {
				leased, err := own.Store.LeaseTasks(context.Background(), store.LeaseRequest{RunnerID: "quota-runner", MaxTasks: 10, Duration: time.Minute})
				Expect(err).NotTo(HaveOccurred())
				return leased
			}
			leased := lease()
			Expect(leased).To(HaveLen(1))
			Expect(leased[0].Task.ID).To(Equal(first))
			Expect(lease()).To(BeEmpty(), "the plan's one slot is taken, by any of the project's codes")

			// Finishing the running task frees the slot for the next one.
			_, err = own.Store.CompleteTask(context.Background(), first, leased[0].LeaseID, store.Completion{Status: "complete"})
			Expect(err).NotTo(HaveOccurred())
			Expect(lease()).To(HaveLen(1))
			Expect(lease()).To(BeEmpty())
		})
	})

	Describe("a plan whose limits change while queueing requests come in", func() {
		// queueTasks checks batches against quotas it read up to quotaCacheTTL ago; the
		// store queues only while the project still has them, so a change applies to the
		// very next request either way.
		It("applies lowered and raised payload and timeout limits to the next request", func() {
			q := smallPlanQuotas()
			q.PlanID = "plan-changing-" + store.NewID()
			q.MaxQueuedTasks = nil
			p := newQuotaProject(q)
			payload := strings.Repeat("x", 50)
			p.queue(map[string]any{"code_name": p.code, "payload": payload})

			q.MaxPayloadBytes = intp(10)
			Expect(iron.Store.ApplyPlanQuotas(context.Background(), q)).To(Equal(1))
			status, body := p.do("POST", "/tasks", map[string]any{"tasks": []any{map[string]any{"code_name": p.code, "payload": payload}}})
			Expect(status).To(Equal(http.StatusRequestEntityTooLarge), body)
			Expect(body).To(ContainSubstring("the plan's limit is 10 bytes"))

			q.MaxPayloadBytes = intp(1000)
			Expect(iron.Store.ApplyPlanQuotas(context.Background(), q)).To(Equal(1))
			big := strings.Repeat("y", 500)
			p.queue(map[string]any{"code_name": p.code, "payload": big})

			// A lowered timeout limit lowers the default timeout of the next task too.
			q.MaxTimeoutSeconds = intp(30)
			Expect(iron.Store.ApplyPlanQuotas(context.Background(), q)).To(Equal(1))
			Expect(p.task(p.queue(map[string]any{"code_name": p.code})).Timeout).To(Equal(30))
			status, body = p.do("POST", "/tasks", map[string]any{"tasks": []any{map[string]any{"code_name": p.code, "timeout": 45}}})
			Expect(status).To(Equal(http.StatusBadRequest), body)
		})
	})

	Describe("projects made by the operator (admin create-project)", func() {
		It("have no plan limits", func() {
			q, err := iron.Store.ProjectQuotas(context.Background(), iron.ProjectID)
			Expect(err).NotTo(HaveOccurred())
			Expect(q).To(Equal(store.Quotas{}))
			code := newCode(nil)
			id := queueTasks(map[string]any{"code_name": code.Name, "payload": strings.Repeat("x", 1000), "timeout": 3600, "priority": 2})[0]
			t := getTask(id)
			Expect(t).To(And(HaveKeyWithValue("timeout", json.Number("3600")), HaveKeyWithValue("priority", json.Number("2"))))
		})
	})
})
