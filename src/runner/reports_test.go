package runner_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/runner"
)

// batchClient is fakeClient that also takes batched reports (client.ReportSender),
// answering each report through fakeClient's single-task calls, and records the
// requests and the lease requests.
type batchClient struct {
	*fakeClient
	mu        sync.Mutex
	requests  [][]client.ReportItem
	leaseReqs []client.LeaseRequest
	// feed, when set, answers each lease request with up to MaxTasks new leases, until
	// it has handed out that many.
	feed    int
	fed     int
	running map[string]time.Time // task → when its first running heartbeat was sent
}

func newBatchClient() *batchClient {
	return &batchClient{fakeClient: newFakeClient(), running: map[string]time.Time{}}
}

func (b *batchClient) Lease(ctx context.Context, req client.LeaseRequest) ([]client.Lease, error) {
	b.mu.Lock()
	b.leaseReqs = append(b.leaseReqs, req)
	if b.feed > 0 {
		var out []client.Lease
		for len(out) < req.MaxTasks && b.fed < b.feed {
			b.fed++
			out = append(out, lease(fmt.Sprintf("t%d", b.fed), 60))
		}
		b.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	b.mu.Unlock()
	return b.fakeClient.Lease(ctx, req)
}

func (b *batchClient) Report(ctx context.Context, items []client.ReportItem) ([]client.ReportResult, error) {
	b.mu.Lock()
	b.requests = append(b.requests, append([]client.ReportItem(nil), items...))
	for _, it := range items {
		if it.Heartbeat != nil && it.Heartbeat.State == client.StateRunning {
			if _, ok := b.running[it.TaskID]; !ok {
				b.running[it.TaskID] = time.Now()
			}
		}
	}
	b.mu.Unlock()
	time.Sleep(2 * time.Millisecond) // a round trip
	out := make([]client.ReportResult, len(items))
	for i, it := range items {
		switch {
		case it.Heartbeat != nil:
			hb, err := b.fakeClient.Heartbeat(ctx, it.TaskID, *it.Heartbeat)
			out[i] = client.ReportResult{Code: 200, Cancel: hb.Cancel, Status: hb.Status, ExpiresAt: hb.ExpiresAt}
			if err != nil {
				out[i] = client.ReportResult{Code: 409, Msg: err.Error()}
			}
		case it.Complete != nil:
			c, _ := b.fakeClient.Complete(ctx, it.TaskID, *it.Complete)
			out[i] = client.ReportResult{Code: 200, Status: c.Status}
		}
	}
	return out, nil
}

func (b *batchClient) reportRequests() [][]client.ReportItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]client.ReportItem(nil), b.requests...)
}

func (b *batchClient) runningAt(id string) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.running[id]
	return t, ok
}

var _ = Describe("Runner reports and leases (batched)", func() {
	It("sends its tasks' heartbeats and completions in batched reports when the client takes them", func() {
		bc := newBatchClient()
		be := newScript("local", exitWith(0))
		startFake(nil, be, func(o *runner.Options) { o.Client = bc; o.Slots = 50; o.LeaseBatch = 50 })
		var ls []client.Lease
		for i := 0; i < 50; i++ {
			ls = append(ls, lease(fmt.Sprintf("t%d", i), 60))
		}
		bc.leases <- ls
		Eventually(bc.completed, 10*time.Second).Should(HaveLen(50))
		reports := 0
		for _, req := range bc.reportRequests() {
			reports += len(req)
		}
		Expect(reports).To(BeNumerically(">=", 50))
		Expect(len(bc.reportRequests())).To(BeNumerically("<", reports), "several reports per request")
		for _, c := range bc.completed() {
			Expect(c.Status).To(Equal(client.StatusComplete))
		}
	})

	It("reports a task that runs as running at once, with its backend ref", func() {
		bc := newBatchClient()
		be := newScript("local", func(backend.LogSink, <-chan struct{}) backend.Result {
			time.Sleep(time.Second)
			return backend.Result{}
		})
		startFake(nil, be, func(o *runner.Options) { o.Client = bc; o.HeartbeatInterval = time.Hour })
		leased := time.Now()
		bc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(func() bool { _, ok := bc.runningAt("t1"); return ok }, 2*time.Second, 5*time.Millisecond).Should(BeTrue())
		at, _ := bc.runningAt("t1")
		Expect(at.Sub(leased)).To(BeNumerically("<", 500*time.Millisecond), "long before the task ends")
		Eventually(bc.hbs).ShouldNot(BeEmpty())
		Expect(bc.hbs()[0].BackendRef).To(HavePrefix("local:t1:"))
		Eventually(bc.completed, 5*time.Second).Should(HaveLen(1))
	})

	It("while saturated, gathers freed slots before leasing instead of leasing one task at a time; an idle runner asks for a full batch at once", func() {
		bc := newBatchClient()
		bc.feed = 300
		be := newScript("local", func(backend.LogSink, <-chan struct{}) backend.Result {
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
			return backend.Result{}
		})
		startFake(nil, be, func(o *runner.Options) { o.Client = bc; o.Slots = 16; o.LeaseBatch = 16 })
		Eventually(bc.completed, 30*time.Second).Should(HaveLen(300))
		bc.mu.Lock()
		reqs := append([]client.LeaseRequest(nil), bc.leaseReqs...)
		bc.mu.Unlock()
		Expect(reqs[0].MaxTasks).To(Equal(16))
		asked := 0
		for _, r := range reqs {
			asked += r.MaxTasks
		}
		// Without gathering a lease follows each freed slot (about 1 task per request); the
		// gather aims at a quarter batch (4) but the 5 ms window may lapse on a loaded
		// machine, so the bound sits between the two.
		Expect(float64(asked)/float64(len(reqs))).To(BeNumerically(">=", 2.5), "%d lease requests for 300 tasks", len(reqs))
	})
})
