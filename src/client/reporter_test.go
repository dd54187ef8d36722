package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/client"
)

// fakeSender records Report requests; while gate is set, each request waits for a
// value on it. answer decides each report's result (default 200, "running" or the
// completion's status).
type fakeSender struct {
	mu       sync.Mutex
	requests [][]client.ReportItem
	gate     chan struct{}
	started  chan int // request sizes, as they start
	answer   func(it client.ReportItem, attempt int) client.ReportResult
	err      error
	sent     map[string]int // report key → times sent
}

func newSender() *fakeSender {
	return &fakeSender{started: make(chan int, 100), sent: map[string]int{}}
}

func itemKey(it client.ReportItem) string {
	switch {
	case it.Heartbeat != nil:
		return "heartbeat " + it.TaskID
	case it.Complete != nil:
		return "complete " + it.TaskID
	}
	return "progress " + it.TaskID
}

func (f *fakeSender) Report(ctx context.Context, items []client.ReportItem) ([]client.ReportResult, error) {
	f.mu.Lock()
	f.requests = append(f.requests, append([]client.ReportItem(nil), items...))
	gate, answer, err := f.gate, f.answer, f.err
	attempts := make([]int, len(items))
	for i, it := range items {
		f.sent[itemKey(it)]++
		attempts[i] = f.sent[itemKey(it)]
	}
	f.mu.Unlock()
	f.started <- len(items)
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	out := make([]client.ReportResult, len(items))
	for i, it := range items {
		if answer != nil {
			out[i] = answer(it, attempts[i])
			continue
		}
		switch {
		case it.Heartbeat != nil:
			out[i] = client.ReportResult{Code: 200, Status: "running", ExpiresAt: time.Now().Add(30 * time.Second)}
		case it.Complete != nil:
			out[i] = client.ReportResult{Code: 200, Status: it.Complete.Status}
		default:
			out[i] = client.ReportResult{Code: 200}
		}
	}
	return out, nil
}

func (f *fakeSender) reqs() [][]client.ReportItem {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]client.ReportItem(nil), f.requests...)
}

func hbReq(task string) client.HeartbeatRequest {
	return client.HeartbeatRequest{LeaseID: "lease-" + task, State: client.StateRunning, BackendRef: "noop:" + task}
}

func completeReq(task string) client.CompleteRequest {
	return client.CompleteRequest{LeaseID: "lease-" + task, Status: client.StatusComplete, Duration: 3 * time.Millisecond}
}

var _ = Describe("Reporter (batched heartbeats and completions)", func() {
	ctx := context.Background()
	var f *fakeSender
	BeforeEach(func() { f = newSender() })

	// inBackground runs call in a goroutine and delivers its error.
	inBackground := func(call func() error) <-chan error {
		ch := make(chan error, 1)
		go func() { ch <- call() }()
		return ch
	}

	It("sends a lone call at once, and calls made meanwhile together in the next request", func() {
		f.gate = make(chan struct{})
		r := client.NewReporter(f, client.ReporterOptions{MaxInFlight: 1})
		first := inBackground(func() error { _, err := r.Heartbeat(ctx, "t0", hbReq("t0")); return err })
		Eventually(f.started).Should(Receive(Equal(1)))
		var rest []<-chan error
		for i := 1; i <= 10; i++ {
			id := fmt.Sprintf("t%d", i)
			rest = append(rest, inBackground(func() error { _, err := r.Complete(ctx, id, completeReq(id)); return err }))
		}
		Consistently(f.started, 100*time.Millisecond).ShouldNot(Receive(), "one request at a time")
		close(f.gate)
		Eventually(first).Should(Receive(BeNil()))
		for _, ch := range rest {
			Eventually(ch).Should(Receive(BeNil()))
		}
		reqs := f.reqs()
		Expect(reqs).To(HaveLen(2))
		Expect(reqs[1]).To(HaveLen(10))
		Expect(reqs[1][0].Complete.Duration).To(Equal(3 * time.Millisecond))
	})

	It("with a Linger, sends the calls made within it in one request", func() {
		r := client.NewReporter(f, client.ReporterOptions{Linger: 50 * time.Millisecond})
		var calls []<-chan error
		for i := 0; i < 10; i++ {
			id := fmt.Sprintf("t%d", i)
			calls = append(calls, inBackground(func() error { _, err := r.Complete(ctx, id, completeReq(id)); return err }))
			time.Sleep(time.Millisecond)
		}
		for _, ch := range calls {
			Eventually(ch).Should(Receive(BeNil()))
		}
		reqs := f.reqs()
		Expect(reqs).To(HaveLen(1), "without the linger the first call goes alone")
		Expect(reqs[0]).To(HaveLen(10))
	})

	It("bounds a request's reports by MaxBatch", func() {
		f.gate = make(chan struct{})
		r := client.NewReporter(f, client.ReporterOptions{MaxInFlight: 1, MaxBatch: 3})
		blocker := inBackground(func() error { _, err := r.Heartbeat(ctx, "b", hbReq("b")); return err })
		Eventually(f.started).Should(Receive())
		var calls []<-chan error
		for i := 0; i < 10; i++ {
			id := fmt.Sprintf("t%d", i)
			calls = append(calls, inBackground(func() error { _, err := r.Complete(ctx, id, completeReq(id)); return err }))
		}
		time.Sleep(50 * time.Millisecond)
		close(f.gate)
		Eventually(blocker).Should(Receive(BeNil()))
		for _, ch := range calls {
			Eventually(ch).Should(Receive(BeNil()))
		}
		total := 0
		for _, req := range f.reqs()[1:] {
			Expect(len(req)).To(BeNumerically("<=", 3))
			total += len(req)
		}
		Expect(total).To(Equal(10))
	})

	It("lets a completion stand for its task's heartbeat that was not sent yet", func() {
		f.gate = make(chan struct{})
		r := client.NewReporter(f, client.ReporterOptions{MaxInFlight: 1})
		blocker := inBackground(func() error { _, err := r.Heartbeat(ctx, "other", hbReq("other")); return err })
		Eventually(f.started).Should(Receive())
		hb := make(chan client.HeartbeatResponse, 1)
		hbErr := inBackground(func() error {
			resp, err := r.Heartbeat(ctx, "t1", hbReq("t1"))
			hb <- resp
			return err
		})
		time.Sleep(20 * time.Millisecond) // queued behind the blocker
		done := inBackground(func() error {
			resp, err := r.Complete(ctx, "t1", completeReq("t1"))
			if err == nil && resp.Status != client.StatusComplete {
				err = fmt.Errorf("status %q", resp.Status)
			}
			return err
		})
		time.Sleep(20 * time.Millisecond)
		close(f.gate)
		Eventually(blocker).Should(Receive(BeNil()))
		Eventually(done).Should(Receive(BeNil()))
		Eventually(hbErr).Should(Receive(BeNil()))
		Expect((<-hb).Status).To(Equal(client.StatusComplete), "the heartbeat answers the task's state after the completion")
		reqs := f.reqs()
		Expect(reqs).To(HaveLen(2))
		Expect(reqs[1]).To(HaveLen(1))
		Expect(reqs[1][0].Complete).NotTo(BeNil(), "only the completion was sent")
		Expect(reqs[1][0].TaskID).To(Equal("t1"))
	})

	It("never has one task's reports in two requests at once, and keeps their order", func() {
		f.gate = make(chan struct{})
		r := client.NewReporter(f, client.ReporterOptions{MaxInFlight: 4})
		first := inBackground(func() error {
			_, err := r.Heartbeat(ctx, "t1", client.HeartbeatRequest{LeaseID: "lease-t1", State: client.StatePreparing})
			return err
		})
		Eventually(f.started).Should(Receive())
		second := inBackground(func() error { _, err := r.Progress(ctx, "t1", "lease-t1", nil, nil); return err })
		other := inBackground(func() error { _, err := r.Complete(ctx, "t2", completeReq("t2")); return err })
		Eventually(f.started).Should(Receive(Equal(1)), "another task's report goes alongside")
		Consistently(f.started, 100*time.Millisecond).ShouldNot(Receive(), "t1's second report waits for its first")
		f.gate <- struct{}{}
		f.gate <- struct{}{}
		Eventually(f.started).Should(Receive(Equal(1)))
		close(f.gate)
		for _, ch := range []<-chan error{first, second, other} {
			Eventually(ch).Should(Receive(BeNil()))
		}
		reqs := f.reqs()
		Expect(reqs).To(HaveLen(3))
		Expect(reqs[2][0].Progress).NotTo(BeNil())
	})

	It("answers each call what its single-task call answers", func() {
		f.answer = func(it client.ReportItem, _ int) client.ReportResult {
			switch it.TaskID {
			case "lost":
				return client.ReportResult{Code: 409, Msg: "Lease lost: the task is not held by this lease"}
			case "finished":
				return client.ReportResult{Code: 409, Msg: "Task has already finished with status killed", Status: "killed"}
			case "unknown":
				return client.ReportResult{Code: 404, Msg: "Task not found"}
			case "cancelled":
				return client.ReportResult{Code: 200, Cancel: true, Status: "cancelled"}
			}
			return client.ReportResult{Code: 200, Status: "complete", RetryTaskID: "retry-1"}
		}
		r := client.NewReporter(f, client.ReporterOptions{})
		_, err := r.Heartbeat(ctx, "lost", hbReq("lost"))
		Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)
		Expect(errors.Is(err, client.ErrTaskFinished)).To(BeFalse())
		_, err = r.Complete(ctx, "finished", completeReq("finished"))
		Expect(errors.Is(err, client.ErrTaskFinished)).To(BeTrue(), "%v", err)
		var he *client.HTTPError
		Expect(errors.As(err, &he)).To(BeTrue())
		Expect(he.Status).To(Equal("killed"))
		Expect(he.Path).To(Equal("/internal/v1/tasks/finished/complete"))
		_, err = r.Heartbeat(ctx, "unknown", hbReq("unknown"))
		Expect(errors.Is(err, client.ErrNotFound)).To(BeTrue(), "%v", err)
		hb, err := r.Heartbeat(ctx, "cancelled", hbReq("cancelled"))
		Expect(err).NotTo(HaveOccurred())
		Expect(hb.Cancel).To(BeTrue())
		res, err := r.Complete(ctx, "ok", completeReq("ok"))
		Expect(err).NotTo(HaveOccurred())
		Expect(res).To(Equal(client.CompleteResponse{Status: "complete", RetryTaskID: "retry-1"}))
	})

	It("sends a report the API did not apply (503) again, a bounded number of times", func() {
		f.answer = func(it client.ReportItem, attempt int) client.ReportResult {
			if it.TaskID == "flaky" && attempt < 3 || it.TaskID == "down" {
				return client.ReportResult{Code: 503, Msg: "Service temporarily unavailable, retry later"}
			}
			return client.ReportResult{Code: 200, Status: "complete"}
		}
		r := client.NewReporter(f, client.ReporterOptions{MaxAttempts: 4, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
		_, err := r.Complete(ctx, "flaky", completeReq("flaky"))
		Expect(err).NotTo(HaveOccurred())
		_, err = r.Complete(ctx, "down", completeReq("down"))
		var he *client.HTTPError
		Expect(errors.As(err, &he)).To(BeTrue(), "%v", err)
		Expect(he.Code).To(Equal(503))
		f.mu.Lock()
		defer f.mu.Unlock()
		Expect(f.sent["complete flaky"]).To(Equal(3))
		Expect(f.sent["complete down"]).To(Equal(4))
	})

	It("answers every call of a failed request with its error", func() {
		f.err = errors.New("connection refused")
		r := client.NewReporter(f, client.ReporterOptions{})
		_, err := r.Complete(ctx, "t1", completeReq("t1"))
		Expect(err).To(MatchError(ContainSubstring("connection refused")))
	})

	It("returns when the caller gives up, and does not send what it gave up", func() {
		f.gate = make(chan struct{})
		r := client.NewReporter(f, client.ReporterOptions{MaxInFlight: 1})
		blocker := inBackground(func() error { _, err := r.Heartbeat(ctx, "b", hbReq("b")); return err })
		Eventually(f.started).Should(Receive())
		cctx, cancel := context.WithCancel(ctx)
		gaveUp := inBackground(func() error { _, err := r.Heartbeat(cctx, "t1", hbReq("t1")); return err })
		time.Sleep(20 * time.Millisecond)
		cancel()
		Eventually(gaveUp).Should(Receive(MatchError(context.Canceled)))
		kept := inBackground(func() error { _, err := r.Heartbeat(ctx, "t2", hbReq("t2")); return err })
		close(f.gate)
		Eventually(blocker).Should(Receive(BeNil()))
		Eventually(kept).Should(Receive(BeNil()))
		reqs := f.reqs()
		Expect(reqs).To(HaveLen(2))
		Expect(reqs[1]).To(HaveLen(1))
		Expect(reqs[1][0].TaskID).To(Equal("t2"))
	})

	Describe("over HTTP", func() {
		It("posts the reports to /internal/v1/reports and reads one result per report", func() {
			fa := newFake(status(200, `{"results":[{"code":200,"cancel":false,"status":"running","expires_at":"2030-01-02T03:04:05Z"},`+
				`{"code":409,"msg":"Task has already finished with status killed","status":"killed"}]}`))
			c := fastClient(fa.srv.URL, "runner-1")
			res, err := c.Report(ctx, []client.ReportItem{
				{TaskID: "t1", Heartbeat: &client.HeartbeatRequest{LeaseID: "l1", State: client.StateRunning}},
				{TaskID: "t2", Complete: &client.CompleteRequest{LeaseID: "l2", Status: client.StatusComplete, Duration: 1500 * time.Millisecond}},
			})
			Expect(err).NotTo(HaveOccurred())
			Expect(fa.lastReq.Load().URL.Path).To(Equal("/internal/v1/reports"))
			var sent map[string][]map[string]any
			Expect(json.Unmarshal(*fa.lastBody.Load(), &sent)).To(Succeed())
			Expect(sent["reports"]).To(HaveLen(2))
			Expect(sent["reports"][0]).To(HaveKeyWithValue("task_id", "t1"))
			Expect(sent["reports"][0]["heartbeat"]).To(HaveKeyWithValue("state", "running"))
			Expect(sent["reports"][1]["complete"]).To(HaveKeyWithValue("duration_ms", BeNumerically("==", 1500)))
			Expect(res).To(HaveLen(2))
			Expect(res[0].ExpiresAt).To(Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)))
			Expect(res[1].Err(client.ReportItem{TaskID: "t2", Complete: &client.CompleteRequest{}})).To(MatchError(client.ErrTaskFinished))
		})

		It("retries the request on 503 like any idempotent call", func() {
			fa := newFake(status(503, `{"msg":"later"}`), status(200, `{"results":[{"code":200,"status":"complete"}]}`))
			r := client.NewReporter(fastClient(fa.srv.URL, "runner-1"), client.ReporterOptions{})
			res, err := r.Complete(ctx, "t1", completeReq("t1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Status).To(Equal("complete"))
			Expect(fa.calls.Load()).To(BeNumerically("==", 2))
		})

		It("falls back to the single-task calls (for legacyFor) against an API without batched reports", func() {
			var paths []string
			var mu sync.Mutex
			fa := newFake(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				paths = append(paths, r.URL.Path)
				mu.Unlock()
				if r.URL.Path == "/internal/v1/reports" {
					w.WriteHeader(404)
					io.WriteString(w, "404 page not found")
					return
				}
				status(200, `{"cancel":false,"status":"running","expires_at":"2030-01-02T03:04:05Z"}`)(w, r)
			})
			r := client.NewReporter(fastClient(fa.srv.URL, "runner-1"), client.ReporterOptions{})
			hb, err := r.Heartbeat(ctx, "t1", hbReq("t1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(hb.Status).To(Equal("running"))
			_, err = r.Heartbeat(ctx, "t2", hbReq("t2"))
			Expect(err).NotTo(HaveOccurred())
			mu.Lock()
			defer mu.Unlock()
			Expect(paths).To(Equal([]string{"/internal/v1/reports", "/internal/v1/tasks/t1/heartbeat", "/internal/v1/tasks/t2/heartbeat"}))
		})
	})
})
