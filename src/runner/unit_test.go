package runner_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/runner"
)

// fakeClient is the runner protocol, scripted.
type fakeClient struct {
	leases   chan []client.Lease
	leaseErr error

	mu           sync.Mutex
	events       []string // "log", "heartbeat", "complete" in call order
	heartbeats   []client.HeartbeatRequest
	logs         map[string]*strings.Builder
	completes    []client.CompleteRequest
	hb           func(n int) (client.HeartbeatResponse, error)
	appendHook   func(n int) error
	appends      int
	completeErrs []error // returned by the first Complete calls, in order
}

func newFakeClient() *fakeClient {
	return &fakeClient{leases: make(chan []client.Lease, 10), logs: map[string]*strings.Builder{
		client.Stdout: {}, client.Stderr: {}}}
}

func (f *fakeClient) Lease(ctx context.Context, req client.LeaseRequest) ([]client.Lease, error) {
	if f.leaseErr != nil {
		return nil, f.leaseErr
	}
	select {
	case l := <-f.leases:
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(req.Wait):
		return nil, nil
	}
}

func (f *fakeClient) Heartbeat(_ context.Context, _ string, req client.HeartbeatRequest) (client.HeartbeatResponse, error) {
	f.mu.Lock()
	f.events = append(f.events, "heartbeat")
	f.heartbeats = append(f.heartbeats, req)
	n, hb := len(f.heartbeats), f.hb
	f.mu.Unlock()
	if hb != nil {
		return hb(n)
	}
	return client.HeartbeatResponse{Status: "running", ExpiresAt: time.Now().Add(30 * time.Second)}, nil
}

func (f *fakeClient) AppendLog(_ context.Context, _, _, stream string, data []byte) error {
	f.mu.Lock()
	f.appends++
	n, hook := f.appends, f.appendHook
	f.mu.Unlock()
	if hook != nil {
		if err := hook(n); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, "log")
	f.logs[stream].Write(data)
	return nil
}

func (f *fakeClient) Complete(_ context.Context, _ string, req client.CompleteRequest) (client.CompleteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, "complete")
	if len(f.completeErrs) > 0 {
		err := f.completeErrs[0]
		f.completeErrs = f.completeErrs[1:]
		return client.CompleteResponse{}, err
	}
	f.completes = append(f.completes, req)
	return client.CompleteResponse{Status: req.Status}, nil
}

func (f *fakeClient) OpenArchive(context.Context, string, string) (*client.Archive, error) {
	return nil, errors.New("no archive here")
}

func (f *fakeClient) completed() []client.CompleteRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]client.CompleteRequest(nil), f.completes...)
}

func (f *fakeClient) hbs() []client.HeartbeatRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]client.HeartbeatRequest(nil), f.heartbeats...)
}

func (f *fakeClient) log(stream string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs[stream].String()
}

// scriptBackend runs run(sink, cancelled) for each task.
type scriptBackend struct {
	name     string
	run      func(sink backend.LogSink, cancelled <-chan struct{}) backend.Result
	startErr error
	state    backend.State
	stateErr error

	mu        sync.Mutex
	seq       int
	cancels   map[backend.Ref]chan struct{}
	results   map[backend.Ref]chan backend.Result
	cancelled []backend.Ref
	attached  []backend.Ref
	started   int
}

func newScript(name string, run func(backend.LogSink, <-chan struct{}) backend.Result) *scriptBackend {
	return &scriptBackend{name: name, run: run, cancels: map[backend.Ref]chan struct{}{}, results: map[backend.Ref]chan backend.Result{}}
}

func (b *scriptBackend) Name() string { return b.name }

func (b *scriptBackend) Start(_ context.Context, spec backend.Spec, sink backend.LogSink) (backend.Ref, error) {
	if b.startErr != nil {
		return "", b.startErr
	}
	b.mu.Lock()
	b.seq++
	b.started++
	ref := backend.Ref(fmt.Sprintf("%s:%s:%d", b.name, spec.TaskID, b.seq))
	c, res := make(chan struct{}), make(chan backend.Result, 1)
	b.cancels[ref], b.results[ref] = c, res
	b.mu.Unlock()
	go func() { res <- b.run(sink, c) }()
	return ref, nil
}

func (b *scriptBackend) Wait(ctx context.Context, ref backend.Ref) (backend.Result, error) {
	b.mu.Lock()
	res, ok := b.results[ref]
	b.mu.Unlock()
	if !ok {
		return backend.Result{}, backend.ErrGone
	}
	select {
	case r := <-res:
		res <- r
		return r, nil
	case <-ctx.Done():
		return backend.Result{}, ctx.Err()
	}
}

func (b *scriptBackend) Status(context.Context, backend.Ref) (backend.State, error) {
	return b.state, b.stateErr
}

func (b *scriptBackend) Attach(_ context.Context, ref backend.Ref, sink backend.LogSink) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.attached = append(b.attached, ref)
	c, res := make(chan struct{}), make(chan backend.Result, 1)
	b.cancels[ref], b.results[ref] = c, res
	go func() { res <- b.run(sink, c) }()
	return nil
}

func (b *scriptBackend) Cancel(_ context.Context, ref backend.Ref) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cancelled = append(b.cancelled, ref)
	if c, ok := b.cancels[ref]; ok {
		select {
		case <-c:
		default:
			close(c)
		}
	}
	return nil
}

func (b *scriptBackend) cancelledRefs() []backend.Ref {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]backend.Ref(nil), b.cancelled...)
}

func lease(id string, timeout int) client.Lease {
	return client.Lease{LeaseID: "lease-" + id, ExpiresAt: time.Now().Add(30 * time.Second), Attempt: 1,
		Task: client.LeasedTask{ID: id, CodeName: "c", Timeout: timeout, Payload: "{}"}}
}

// startFake runs a runner on fc/be until the spec ends.
func startFake(fc *fakeClient, be backend.Backend, mod func(*runner.Options)) *runner.Runner {
	opts := runner.Options{Client: fc, Backend: be, Slots: 2, LeaseWait: 200 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond, DrainTimeout: 2 * time.Second, LogFlushInterval: 20 * time.Millisecond,
		Logger: testLogger()}
	if mod != nil {
		mod(&opts)
	}
	r, err := runner.New(opts)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	DeferCleanup(func() {
		cancel()
		Eventually(done, 20*time.Second).Should(BeClosed())
	})
	return r
}

func exitWith(code int, stderr ...string) func(backend.LogSink, <-chan struct{}) backend.Result {
	return func(sink backend.LogSink, _ <-chan struct{}) backend.Result {
		last := ""
		for _, l := range stderr {
			sink.WriteLog(backend.Stderr, []byte(l+"\n"))
			last = l
		}
		return backend.Result{ExitCode: code, LastStderrLine: last, Msg: "exit status " + fmt.Sprint(code)}
	}
}

func runUntilCancelled(sink backend.LogSink, c <-chan struct{}) backend.Result {
	sink.WriteLog(backend.Stdout, []byte("working\n"))
	<-c
	return backend.Result{ExitCode: 143, Signal: "SIGTERM", Cancelled: true}
}

var _ = Describe("Runner (scripted client and backend)", func() {
	var fc *fakeClient
	BeforeEach(func() { fc = newFakeClient() })

	It("forwards output in order, in batches, and sends the tail before completing", func() {
		be := newScript("local", func(sink backend.LogSink, _ <-chan struct{}) backend.Result {
			for i := 0; i < 500; i++ {
				sink.WriteLog(backend.Stdout, fmt.Appendf(nil, "out %d\n", i))
				if i%50 == 0 {
					sink.WriteLog(backend.Stderr, fmt.Appendf(nil, "err %d\n", i))
				}
			}
			return backend.Result{}
		})
		startFake(fc, be, func(o *runner.Options) { o.LogBatchBytes = 256; o.LogFlushInterval = time.Hour })
		fc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
		c := fc.completed()[0]
		Expect(c.Status).To(Equal(client.StatusComplete))
		Expect(*c.ExitCode).To(Equal(0))
		var want strings.Builder
		for i := 0; i < 500; i++ {
			fmt.Fprintf(&want, "out %d\n", i)
		}
		Expect(fc.log(client.Stdout)).To(Equal(want.String()))
		Expect(fc.log(client.Stderr)).To(HavePrefix("err 0\nerr 50\n"))
		Expect(fc.log(client.Stderr)).To(HaveSuffix("err 450\n"))
		fc.mu.Lock()
		defer fc.mu.Unlock()
		Expect(fc.appends).To(BeNumerically(">", 10), "batched by logs batch size")
		lastLog, complete := -1, -1
		for i, e := range fc.events {
			switch e {
			case "log":
				lastLog = i
			case "complete":
				complete = i
			}
		}
		Expect(lastLog).To(BeNumerically("<", complete))
	})

	It("bounds what it buffers while the API is slow, and says how much it dropped", func() {
		release := make(chan struct{})
		fc.appendHook = func(n int) error {
			if n == 1 {
				<-release
			}
			return nil
		}
		be := newScript("local", func(sink backend.LogSink, _ <-chan struct{}) backend.Result {
			sink.WriteLog(backend.Stdout, []byte("first\n"))
			time.Sleep(100 * time.Millisecond) // the first append is now stuck
			for i := 0; i < 100; i++ {
				sink.WriteLog(backend.Stdout, []byte(strings.Repeat("x", 99)+"\n"))
			}
			close(release)
			return backend.Result{}
		})
		r := startFake(fc, be, func(o *runner.Options) { o.LogBatchBytes = 500; o.LogBufferBytes = 1000 })
		fc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
		out, errs := fc.log(client.Stdout), fc.log(client.Stderr)
		Expect(out).To(HavePrefix("first\n"))
		Expect(len(out)).To(BeNumerically("<=", 6+1000))
		Expect(errs).To(MatchRegexp(`\[iron-runner: \d+ bytes of output dropped`))
		Expect(scrape(r)).To(MatchRegexp(`iron_runner_log_bytes_dropped_total [1-9]`))
	})

	DescribeTable("maps how a task ended to its status and msg",
		func(be *scriptBackend, status, msg string) {
			startFake(fc, be, nil)
			fc.leases <- []client.Lease{lease("t1", 60)}
			Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
			c := fc.completed()[0]
			Expect(c.Status).To(Equal(status))
			Expect(c.Msg).To(Equal(msg))
		},
		Entry("exit 0: complete", newScript("local", exitWith(0, "a warning")), "complete", ""),
		Entry("non-zero: error, the last stderr line", newScript("local", exitWith(2, "first", "the last line")), "error", "the last line"),
		Entry("non-zero, silent: error, the backend's msg", newScript("local", exitWith(2)), "error", "exit status 2"),
		Entry("out of memory: error with the backend's msg", newScript("local", func(backend.LogSink, <-chan struct{}) backend.Result {
			return backend.Result{ExitCode: 137, Signal: "SIGKILL", OOM: true, LastStderrLine: "noise",
				Msg: "Task exceeded its memory limit of 64 MB and was killed"}
		}), "error", "Task exceeded its memory limit of 64 MB and was killed"),
		Entry("backend timeout backstop: timeout", newScript("local", func(backend.LogSink, <-chan struct{}) backend.Result {
			return backend.Result{ExitCode: 137, TimedOut: true}
		}), "timeout", "Task timed out after 60 seconds"),
		Entry("unsupported code: error with the reason", &scriptBackend{name: "local",
			startErr: fmt.Errorf("%w: cannot run Docker image", backend.ErrUnsupportedCode)},
			"error", "code not supported by this backend: cannot run Docker image"),
		Entry("bad code: error with the reason", &scriptBackend{name: "local",
			startErr: fmt.Errorf("%w: zip has no entry point", backend.ErrBadCode)},
			"error", "code package rejected: zip has no entry point"),
		Entry("infrastructure failure at start: killed", &scriptBackend{name: "local", startErr: errors.New("disk full")},
			"killed", "The task could not be started: disk full"),
	)

	It("keeps trying to complete while the API is unavailable, heartbeating meanwhile", func() {
		fc.completeErrs = []error{&client.HTTPError{Code: 503}, errors.New("connection refused")}
		be := newScript("local", exitWith(0))
		startFake(fc, be, nil)
		fc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(fc.completed, 20*time.Second).Should(HaveLen(1))
		Expect(fc.completed()[0].Status).To(Equal("complete"))
		fc.mu.Lock()
		defer fc.mu.Unlock()
		first := -1
		hbAfter := false
		for i, ev := range fc.events {
			if ev == "complete" && first < 0 {
				first = i
			}
			if ev == "heartbeat" && first >= 0 {
				hbAfter = true
			}
		}
		Expect(hbAfter).To(BeTrue(), "the lease is kept while retrying")
	})

	It("enforces the task's timeout itself: stops the task and ends it timeout", func() {
		be := newScript("local", runUntilCancelled)
		startFake(fc, be, nil)
		fc.leases <- []client.Lease{lease("t1", 1)}
		Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
		Expect(fc.completed()[0].Status).To(Equal(client.StatusTimeout))
		Expect(be.cancelledRefs()).To(HaveLen(1))
		Expect(fc.log(client.Stdout)).To(Equal("working\n"))
	})

	It("honours a cancel from a heartbeat: stops the task, then completes it cancelled", func() {
		fc.hb = func(n int) (client.HeartbeatResponse, error) {
			return client.HeartbeatResponse{Cancel: n >= 3, ExpiresAt: time.Now().Add(30 * time.Second)}, nil
		}
		be := newScript("local", runUntilCancelled)
		startFake(fc, be, nil)
		fc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
		Expect(fc.completed()[0].Status).To(Equal(client.StatusCancelled))
		Expect(be.cancelledRefs()).To(HaveLen(1))
	})

	It("reports the backend ref as running and adoptable, and heartbeats at a third of the lease's time left", func() {
		fc.hb = func(int) (client.HeartbeatResponse, error) {
			return client.HeartbeatResponse{ExpiresAt: time.Now().Add(600 * time.Millisecond)}, nil
		}
		be := newScript("local", func(backend.LogSink, <-chan struct{}) backend.Result {
			time.Sleep(1500 * time.Millisecond)
			return backend.Result{}
		})
		startFake(fc, be, func(o *runner.Options) { o.HeartbeatInterval = time.Hour })
		l := lease("t1", 60)
		l.ExpiresAt = time.Now().Add(600 * time.Millisecond)
		fc.leases <- []client.Lease{l}
		Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
		hbs := fc.hbs()
		Expect(len(hbs)).To(BeNumerically(">=", 4), "every ~200ms for 1.5s, though the interval is an hour")
		Expect(hbs[0].State).To(Equal(client.StateRunning))
		Expect(hbs[0].BackendRef).To(HavePrefix("local:t1:"))
		Expect(*hbs[0].Adoptable).To(BeTrue())
		Expect(hbs[0].LeaseID).To(Equal("lease-t1"))
	})

	It("stops a task whose lease was lost when its backend's tasks die with the runner, and does not complete it", func() {
		fc.hb = func(n int) (client.HeartbeatResponse, error) {
			if n >= 2 {
				return client.HeartbeatResponse{}, &client.HTTPError{Code: 409, Msg: "Lease lost"}
			}
			return client.HeartbeatResponse{ExpiresAt: time.Now().Add(30 * time.Second)}, nil
		}
		be := newScript("local", runUntilCancelled)
		r := startFake(fc, be, nil)
		fc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(be.cancelledRefs, 10*time.Second).Should(HaveLen(1))
		Eventually(r.Busy, 10*time.Second).Should(BeZero())
		Consistently(fc.completed, 500*time.Millisecond).Should(BeEmpty())
		Expect(scrape(r)).To(ContainSubstring("iron_runner_leases_lost_total 1"))
	})

	It("leaves a task running when its lease was lost and its backend's tasks outlive the runner", func() {
		fc.hb = func(n int) (client.HeartbeatResponse, error) {
			if n >= 2 {
				return client.HeartbeatResponse{}, &client.HTTPError{Code: 409, Msg: "Lease lost"}
			}
			return client.HeartbeatResponse{ExpiresAt: time.Now().Add(30 * time.Second)}, nil
		}
		be := newScript("diego", runUntilCancelled)
		r := startFake(fc, be, nil)
		fc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(r.Busy, 10*time.Second).Should(BeZero())
		Eventually(fc.hbs).Should(HaveLen(2))
		Expect(be.cancelledRefs()).To(BeEmpty())
		Expect(fc.completed()).To(BeEmpty())
	})

	Describe("adopting", func() {
		adoptLease := func(ref string) client.Lease {
			l := lease("t1", 60)
			l.Adopt, l.BackendRef, l.Attempt = true, ref, 2
			start := time.Now().Add(-10 * time.Second)
			l.Task.StartTime = &start
			return l
		}

		It("reports a task that already ended without starting it again", func() {
			be := newScript("diego", nil)
			be.state = backend.State{Phase: backend.Exited, Result: backend.Result{ExitCode: 1, LastStderrLine: "boom"}}
			startFake(fc, be, nil)
			fc.leases <- []client.Lease{adoptLease("diego:abc")}
			Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
			Expect(fc.completed()[0].Status).To(Equal("error"))
			Expect(fc.completed()[0].Msg).To(Equal("boom"))
			Expect(be.started).To(BeZero())
		})

		It("ends a task that is gone killed, after cleaning up after it", func() {
			be := newScript("local", nil)
			be.state = backend.State{Phase: backend.Gone, Detail: "process 42 no longer exists"}
			startFake(fc, be, nil)
			fc.leases <- []client.Lease{adoptLease("local:abc")}
			Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
			Expect(fc.completed()[0].Status).To(Equal("killed"))
			Expect(fc.completed()[0].Msg).To(ContainSubstring("process 42 no longer exists"))
			Expect(be.cancelledRefs()).To(ConsistOf(backend.Ref("local:abc")))
		})

		It("attaches to a running task, follows its output and times it from its start_time", func() {
			be := newScript("diego", runUntilCancelled)
			be.state = backend.State{Phase: backend.Running}
			startFake(fc, be, nil)
			l := adoptLease("diego:abc")
			l.Task.Timeout = 11 // started 10s ago
			fc.leases <- []client.Lease{l}
			Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
			Expect(fc.completed()[0].Status).To(Equal("timeout"))
			Expect(fc.completed()[0].Duration).To(BeNumerically(">=", 10*time.Second))
			Expect(be.attached).To(ConsistOf(backend.Ref("diego:abc")))
			Expect(fc.log(client.Stdout)).To(Equal("working\n"))
			Expect(fc.hbs()[0].BackendRef).To(Equal("diego:abc"))
		})

		It("stops a task cancelled while no runner held it, then completes it cancelled", func() {
			be := newScript("diego", nil)
			startFake(fc, be, nil)
			l := adoptLease("diego:abc")
			l.Adopt, l.Cancel, l.Task.Status = false, true, "cancelled"
			fc.leases <- []client.Lease{l}
			Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
			Expect(fc.completed()[0].Status).To(Equal("cancelled"))
			Expect(be.cancelledRefs()).To(ConsistOf(backend.Ref("diego:abc")))
			Expect(be.started).To(BeZero())
		})

		It("ends a task of another backend killed", func() {
			be := newScript("local", nil)
			startFake(fc, be, nil)
			fc.leases <- []client.Lease{adoptLease("diego:abc")}
			Eventually(fc.completed, 10*time.Second).Should(HaveLen(1))
			Expect(fc.completed()[0].Status).To(Equal("killed"))
			Expect(fc.completed()[0].Msg).To(ContainSubstring("another backend"))
		})

		It("leaves the lease to expire when the backend cannot tell", func() {
			be := newScript("diego", nil)
			be.stateErr = errors.New("Cloud Controller unavailable")
			r := startFake(fc, be, nil)
			fc.leases <- []client.Lease{adoptLease("diego:abc")}
			Eventually(func() string { return scrape(r) }, 20*time.Second, 100*time.Millisecond).Should(
				ContainSubstring(`iron_runner_backend_errors_total{op="status"} 3`))
			Eventually(r.Busy, 20*time.Second).Should(BeZero())
			Expect(fc.completed()).To(BeEmpty())
			for _, hb := range fc.hbs() {
				Expect(hb.State).To(Equal(client.StatePreparing), "nothing claims the task runs here")
			}
		})
	})

	It("never runs more tasks than it has slots", func() {
		release := make(chan struct{})
		be := newScript("local", func(backend.LogSink, <-chan struct{}) backend.Result { <-release; return backend.Result{} })
		r := startFake(fc, be, func(o *runner.Options) { o.Slots = 2 })
		fc.leases <- []client.Lease{lease("a", 60), lease("b", 60)}
		Eventually(r.Busy).Should(Equal(2))
		fc.leases <- []client.Lease{lease("c", 60)}
		Consistently(func() int { be.mu.Lock(); defer be.mu.Unlock(); return be.started }, 500*time.Millisecond).Should(Equal(2))
		Expect(r.Health().SlotsBusy).To(Equal(2))
		close(release)
		Eventually(fc.completed, 10*time.Second).Should(HaveLen(3))
	})

	It("serves /healthz and /metrics, and says when the API refuses its leases", func() {
		fc.leaseErr = &client.HTTPError{Code: 401, Msg: "refused"}
		be := newScript("local", nil)
		r := startFake(fc, be, nil)
		srv := httptest.NewServer(r.Handler())
		DeferCleanup(srv.Close)
		Eventually(func() int {
			resp, err := http.Get(srv.URL + "/healthz")
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			return resp.StatusCode
		}, 20*time.Second, 100*time.Millisecond).Should(Equal(http.StatusServiceUnavailable))
		Expect(r.Health().Status).To(Equal("api_unreachable"))
		Expect(r.Health().LastError).To(ContainSubstring("refused"))
		metrics := scrape(r)
		Expect(metrics).To(ContainSubstring("iron_runner_slots 2"))
		Expect(metrics).To(MatchRegexp(`iron_runner_lease_requests_total\{result="error"\} [1-9]`))
	})

	It("answers healthy while leasing", func() {
		be := newScript("local", nil)
		r := startFake(fc, be, nil)
		Eventually(func() string { return r.Health().Status }).Should(Equal("ok"))
	})
})

func scrape(r *runner.Runner) string {
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return string(raw)
}
