package api_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/store"
)

var _ = Describe("Runner protocol: POST /internal/v1/reports", func() {
	var (
		e    *rpEnv
		code store.Code
	)
	BeforeEach(func() {
		e = rpStart()
		code = e.code(store.CodeSettings{}, nil)
	})

	bearer := func() http.Header { return http.Header{"Authorization": {"Bearer " + e.h.RunnerSecret}} }
	ctx := context.Background()

	// leaseAll queues n tasks and leases them all: task id → lease.
	leaseAll := func(n int) ([]string, map[string]client.Lease) {
		ids := e.queueN(code.Name, n)
		ls := e.lease(n, 0)
		ExpectWithOffset(1, ls).To(HaveLen(n))
		byID := map[string]client.Lease{}
		for _, l := range ls {
			byID[l.Task.ID] = l
		}
		return ids, byID
	}

	It("answers each report what its single-task call answers: another lease's, unknown, cancelled and finished tasks included", func() {
		ids, ls := leaseAll(6)
		running, done, other, cancelled, finished, progressed := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]
		e.complete(ls[finished], client.StatusComplete)
		r := e.h.Do("POST", e.h.Project()+"/tasks/"+cancelled+"/cancel", nil)
		Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
		unknown := store.NewID()

		yes := true
		items := []client.ReportItem{
			{TaskID: running, Heartbeat: &client.HeartbeatRequest{LeaseID: ls[running].LeaseID, State: client.StateRunning, BackendRef: "local:1", Adoptable: &yes}},
			{TaskID: done, Complete: &client.CompleteRequest{LeaseID: ls[done].LeaseID, Status: client.StatusError, ExitCode: rpInt(3),
				Msg: "boom", Duration: 1500 * time.Millisecond}},
			{TaskID: other, Heartbeat: &client.HeartbeatRequest{LeaseID: store.NewID(), State: client.StateRunning}},
			{TaskID: unknown, Heartbeat: &client.HeartbeatRequest{LeaseID: ls[running].LeaseID}},
			{TaskID: cancelled, Heartbeat: &client.HeartbeatRequest{LeaseID: ls[cancelled].LeaseID, State: client.StateRunning}},
			{TaskID: cancelled, Complete: &client.CompleteRequest{LeaseID: ls[cancelled].LeaseID, Status: client.StatusKilled}},
			{TaskID: finished, Heartbeat: &client.HeartbeatRequest{LeaseID: ls[finished].LeaseID}},
			{TaskID: finished, Complete: &client.CompleteRequest{LeaseID: ls[finished].LeaseID, Status: client.StatusError}},
			{TaskID: progressed, Progress: &client.ProgressRequest{LeaseID: ls[progressed].LeaseID, Percent: rpInt(42), Msg: rpStr("half way")}},
		}
		res, err := e.rc.Report(ctx, items)
		Expect(err).NotTo(HaveOccurred())
		Expect(res).To(HaveLen(len(items)))

		By("a heartbeat: running, the lease extended, the ref recorded")
		Expect(res[0].Code).To(Equal(200))
		Expect(res[0].Status).To(Equal("running"))
		Expect(res[0].Cancel).To(BeFalse())
		Expect(res[0].ExpiresAt).To(BeTemporally("~", time.Now().Add(30*time.Second), 5*time.Second))
		Expect(e.task(running)["status"]).To(Equal("running"))
		Expect(e.task(running)).To(HaveKey("start_time"))
		Expect(e.count(`SELECT count(*) FROM tasks WHERE id = $1 AND backend_ref = 'local:1' AND backend_adoptable`, running)).To(Equal(1))

		By("a completion without a running heartbeat: start_time from its duration")
		Expect(res[1].Code).To(Equal(200))
		Expect(res[1].Status).To(Equal("error"))
		Expect(res[1].Err(items[1])).To(Succeed())
		t := e.task(done)
		Expect(t["status"]).To(Equal("error"))
		Expect(t["msg"]).To(Equal("boom"))
		Expect(t).To(HaveKey("start_time"))
		Expect(intOf(t["duration"])).To(BeNumerically("~", 1500, 5))
		Expect(e.storeTask(done).ExitCode).To(HaveValue(Equal(3)))

		By("another lease: 409 lease lost")
		Expect(res[2].Code).To(Equal(http.StatusConflict))
		err = res[2].Err(items[2])
		Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)
		Expect(errors.Is(err, client.ErrTaskFinished)).To(BeFalse())
		Expect(e.task(other)["status"]).To(Equal("preparing"))

		By("an unknown task: 404")
		Expect(res[3].Code).To(Equal(http.StatusNotFound))
		Expect(errors.Is(res[3].Err(items[3]), client.ErrNotFound)).To(BeTrue())

		By("a cancelled task: the heartbeat says cancel, the completion answers cancelled")
		Expect(res[4].Code).To(Equal(200))
		Expect(res[4].Cancel).To(BeTrue())
		Expect(res[4].Status).To(Equal("cancelled"))
		Expect(res[5].Code).To(Equal(200))
		Expect(res[5].Status).To(Equal("cancelled"))
		Expect(e.task(cancelled)["status"]).To(Equal("cancelled"))

		By("a finished task: 409 with its status, to the heartbeat and to another status")
		for _, i := range []int{6, 7} {
			Expect(res[i].Code).To(Equal(http.StatusConflict))
			Expect(res[i].Status).To(Equal("complete"))
			err := res[i].Err(items[i])
			Expect(errors.Is(err, client.ErrTaskFinished)).To(BeTrue(), "%v", err)
		}
		Expect(e.task(finished)["status"]).To(Equal("complete"))

		By("progress: visible through the task API")
		Expect(res[8].Code).To(Equal(200))
		Expect(res[8].Cancel).To(BeFalse())
		Expect(intOf(e.task(progressed)["percent"])).To(Equal(int64(42)))
		Expect(e.task(progressed)["msg"]).To(Equal("half way"))
	})

	It("has the single-task calls' wire format per result, and answers a bad report 400 without failing the others", func() {
		ids, ls := leaseAll(2)
		body := `{"reports": [
			{"task_id": "` + ids[0] + `", "heartbeat": {"lease_id": "` + ls[ids[0]].LeaseID + `", "state": "preparing"}},
			{"task_id": "` + ids[1] + `", "complete": {"lease_id": "` + ls[ids[1]].LeaseID + `", "status": "complete", "duration_ms": 2}},
			{"task_id": "` + ids[0] + `"},
			{"task_id": "` + ids[0] + `", "heartbeat": {"lease_id": ""}},
			{"task_id": "` + ids[0] + `", "heartbeat": {"lease_id": "x", "state": "sleeping"}},
			{"task_id": "` + ids[0] + `", "complete": {"lease_id": "x", "status": "done"}},
			{"task_id": "` + ids[0] + `", "heartbeat": {"lease_id": "x"}, "complete": {"lease_id": "x", "status": "complete"}},
			{"task_id": "../etc", "heartbeat": {"lease_id": "x"}}
		]}`
		r := e.h.DoAs("", "POST", "/internal/v1/reports", body, bearer())
		Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
		results := r.JSON()["results"].([]any)
		Expect(results).To(HaveLen(8))
		codeOf := func(i int) int64 { return intOf(results[i].(map[string]any)["code"]) }
		hb := results[0].(map[string]any)
		Expect(codeOf(0)).To(Equal(int64(200)))
		Expect(hb).To(HaveKeyWithValue("cancel", false))
		Expect(hb).To(HaveKeyWithValue("status", "preparing"))
		Expect(hb).To(HaveKey("expires_at"))
		Expect(codeOf(1)).To(Equal(int64(200)))
		Expect(results[1]).To(HaveLen(3))
		Expect(results[1]).To(HaveKeyWithValue("status", "complete"))
		Expect(results[1]).To(HaveKeyWithValue("retry_task_id", ""))
		for i, want := range []string{"exactly one", "lease_id is required", "state must be", "status must be one of", "exactly one"} {
			Expect(codeOf(2+i)).To(Equal(int64(400)), "%d", i)
			Expect(results[2+i]).To(HaveKeyWithValue("msg", ContainSubstring(want)))
		}
		Expect(codeOf(7)).To(Equal(int64(404)))
		Expect(results[7]).To(HaveLen(2))
		Expect(results[7]).To(HaveKeyWithValue("msg", "Task not found"))
		Expect(e.task(ids[1])["status"]).To(Equal("complete"))
	})

	It("applies one task's reports in their order: the running heartbeat, then the completion", func() {
		ids, ls := leaseAll(1)
		id, l := ids[0], ls[ids[0]]
		res, err := e.rc.Report(ctx, []client.ReportItem{
			{TaskID: id, Heartbeat: &client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StateRunning, BackendRef: "local:9"}},
			{TaskID: id, Complete: &client.CompleteRequest{LeaseID: l.LeaseID, Status: client.StatusComplete}},
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(res[0].Code).To(Equal(200))
		Expect(res[0].Status).To(Equal("running"))
		Expect(res[1].Code).To(Equal(200))
		Expect(res[1].Status).To(Equal("complete"))
		t := e.storeTask(id)
		Expect(t.Status).To(Equal("complete"))
		Expect(t.StartTime).NotTo(BeNil())
	})

	It("needs the runner credential, and refuses an empty or an oversized list", func() {
		body := map[string]any{"reports": []any{map[string]any{"task_id": store.NewID(), "heartbeat": map[string]any{"lease_id": "x"}}}}
		r := e.h.DoAs("", "POST", "/internal/v1/reports", body, nil)
		Expect(r.Status).To(Equal(http.StatusUnauthorized))
		Expect(e.h.DoAs(e.h.Token, "POST", "/internal/v1/reports", body, nil).Status).To(Equal(http.StatusUnauthorized), "an app token")
		Expect(e.h.DoAs("", "POST", "/internal/v1/reports", body, http.Header{"Authorization": {"Bearer nope"}}).Status).
			To(Equal(http.StatusUnauthorized))
		Expect(e.h.DoAs("", "POST", "/internal/v1/reports", body, bearer()).Status).To(Equal(http.StatusOK))

		r = e.h.DoAs("", "POST", "/internal/v1/reports", `{"reports": []}`, bearer())
		Expect(r.Status).To(Equal(http.StatusBadRequest))
		many := `{"reports": [` + strings.Repeat(`{"task_id": "x", "progress": {"lease_id": "x"}},`, 1000) + `{"task_id": "x", "progress": {"lease_id": "x"}}]}`
		r = e.h.DoAs("", "POST", "/internal/v1/reports", many, bearer())
		Expect(r.Status).To(Equal(http.StatusBadRequest))
		Expect(r.JSON()["msg"]).To(ContainSubstring("at most 1000"))
		Expect(e.h.DoAs("", "POST", "/internal/v1/reports", `{"reports": {}}`, bearer()).Status).To(Equal(http.StatusBadRequest))
	})

	It("serves the Reporter end to end: a heartbeat and its task's completion made together both succeed", func() {
		ids, ls := leaseAll(3)
		rep := client.NewReporter(e.rc, client.ReporterOptions{})
		type out struct {
			hb  client.HeartbeatResponse
			err error
		}
		hbs := make(chan out, len(ids))
		for _, id := range ids {
			go func() {
				defer GinkgoRecover()
				hb, err := rep.Heartbeat(ctx, id, client.HeartbeatRequest{LeaseID: ls[id].LeaseID, State: client.StateRunning, BackendRef: "noop:" + id})
				hbs <- out{hb, err}
			}()
			_, err := rep.Complete(ctx, id, client.CompleteRequest{LeaseID: ls[id].LeaseID, Status: client.StatusComplete, Duration: time.Millisecond})
			Expect(err).NotTo(HaveOccurred())
		}
		for range ids {
			var o out
			Eventually(hbs).Should(Receive(&o))
			if o.err != nil {
				// Made after the completion was answered: sent on its own, too late.
				Expect(errors.Is(o.err, client.ErrTaskFinished)).To(BeTrue(), "%v", o.err)
				continue
			}
			Expect(o.hb.Status).To(BeElementOf("running", "complete"))
		}
		for _, id := range ids {
			t := e.storeTask(id)
			Expect(t.Status).To(Equal("complete"))
			Expect(t.StartTime).NotTo(BeNil())
		}
	})
})
