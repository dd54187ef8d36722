// Package runner is iron-runner's engine: a pool of slots filled by long-polling the API
// for leases, one goroutine per leased task that starts (or adopts) it on a backend,
// heartbeats its lease, forwards its output, enforces its timeout, honours cancels and
// reports how it ended.
//
// Drain (Run's ctx ends, i.e. SIGTERM): leasing stops at once; running tasks get up to
// DrainTimeout to finish while their leases are still extended; then the rest are handed
// back. How depends on whether the backend's tasks outlive the runner:
//   - not adoptable (local, noop): the task is stopped (backend Cancel) and completed
//     `killed` with a msg saying the runner shut down, so the code's retry policy
//     applies at once instead of after a lease expiry;
//   - adoptable (diego): the runner only stops watching and heartbeating; the task keeps
//     running and is handed back at once (POST .../release, after its backend ref was
//     reported), queued for adoption by another runner (Lease.Adopt), which follows it to
//     the end; if the release fails, the lease expires and the API's reaper does the same.
//
// Backends whose tasks run away from the runner (diego, see remote.go) get a task-scoped
// input credential from the API before Start (Spec.InputURL/InputToken), FirstLease on a
// task's first lease, the project's space (Options.SpaceFor), and their log cursors
// recorded through the API so that an adopting runner resumes the task's log there.
//
// Adoption (Lease.Adopt with a BackendRef): Status decides — Running: Attach and follow
// it like a started task (its timeout counts from the task's start_time); Exited: report
// the recorded result; Gone (e.g. a local process that died with its runner): Cancel (to
// clean up what it left behind) and `killed`, which the code's retry policy applies to.
// Heartbeats therefore always report refs as adoptable: after a runner crash on the local
// backend, the API's reaper queues the task for adoption and whichever runner leases it
// ends it `killed`. A Lease.Cancel (cancelled while no runner held it) is only stopped
// through its ref and completed `cancelled`.
//
// A lost lease (409 on a heartbeat) stops all reporting; the task is stopped too unless
// the backend's tasks outlive the runner and another runner may adopt it.
//
// Reports: heartbeats and completions of all the runner's tasks go through one
// client.Reporter when the Client sends batched reports (*client.RunnerClient does:
// POST /internal/v1/reports), which coalesces concurrent calls into one request
// (group-commit style) with the single-task calls' answers and retries. A task's first
// "running" heartbeat is made as soon as the backend started it (so its status shows
// running while it runs, and its backend ref is recorded long before its lease can
// expire); when the task ends before that heartbeat was sent, the completion stands for
// it (it sets start_time from the run's duration) and only the completion is sent.
//
// Leasing: an idle runner long-polls for min(free slots, LeaseBatch) at once; a busy
// one with fewer than a quarter of min(LeaseBatch, Slots) free waits up to leaseGather
// for more slots to free up, so that a saturated runner asks for several tasks per lease
// rather than for each task as it ends.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/client"
)

// Client is the part of the runner protocol client the runner uses
// (*client.RunnerClient).
type Client interface {
	Lease(ctx context.Context, req client.LeaseRequest) ([]client.Lease, error)
	Heartbeat(ctx context.Context, taskID string, req client.HeartbeatRequest) (client.HeartbeatResponse, error)
	AppendLog(ctx context.Context, taskID, leaseID, stream string, data []byte) error
	Complete(ctx context.Context, taskID string, req client.CompleteRequest) (client.CompleteResponse, error)
	OpenArchive(ctx context.Context, taskID, leaseID string) (*client.Archive, error)
}

var _ Client = (*client.RunnerClient)(nil)

// reportClient is where the runner sends heartbeats and completions: a
// *client.Reporter that batches them when the Client can send batched reports
// (client.ReportSender, as *client.RunnerClient), else the Client itself.
type reportClient interface {
	Heartbeat(ctx context.Context, taskID string, req client.HeartbeatRequest) (client.HeartbeatResponse, error)
	Complete(ctx context.Context, taskID string, req client.CompleteRequest) (client.CompleteResponse, error)
}

// leaseGather is how long a runner with fewer free slots than a quarter of a lease
// batch waits for more to free up before it leases, so that a saturated runner sends
// one lease request for several tasks rather than one per finished task.
const leaseGather = 5 * time.Millisecond

// Options configure a Runner; zero values take the defaults.
type Options struct {
	Client  Client
	Backend backend.Backend
	// RunnerID names this runner in task rows; default host name and pid.
	RunnerID string
	// Slots is how many tasks run at once (default 4); LeaseBatch caps one lease
	// request (default Slots).
	Slots      int
	LeaseBatch int
	// LeaseWait is the long-poll wait of a lease request (default 20s).
	LeaseWait time.Duration
	// HeartbeatInterval (default 10s); a heartbeat is also sent when a third of the
	// lease's remaining time has passed, whichever comes first.
	HeartbeatInterval time.Duration
	// DrainTimeout is how long a draining runner waits for its tasks (default 60s).
	DrainTimeout time.Duration
	// Adoptable says whether the backend's tasks survive this runner so that another
	// runner can adopt them; default true except for the local and noop backends. It
	// decides drain and lease-loss handling. (Heartbeats always report the ref as
	// adoptable: whoever takes over a task of a backend whose tasks die with their
	// runner finds it Gone, cleans up and ends it killed.)
	Adoptable *bool
	// Output forwarding: flush interval (default 500ms), batch size (64 KiB) and the
	// buffer bound per task (4 MiB).
	LogFlushInterval time.Duration
	LogBatchBytes    int
	LogBufferBytes   int
	// TimeoutGrace is added to a task's timeout for the backend's own backstop; the
	// runner enforces the timeout itself. Default 5s.
	TimeoutGrace time.Duration
	Logger       *slog.Logger

	// TaskInput makes the runner ask the API for a task-scoped input credential before
	// Start (Spec.InputURL/InputToken), for backends whose tasks fetch their payload and
	// config themselves; default true for the diego backend. The Client must implement
	// InputToken (*client.RunnerClient does).
	TaskInput *bool
	// SpaceFor names the CF space of a task's project (Spec.Space); brokerInstance tells
	// whether the service broker made the project. Nil or "" means the backend's default.
	SpaceFor func(projectID string, brokerInstance bool) string
}

// Runner runs leased tasks on a backend.
type Runner struct {
	opts      Options
	cl        Client
	rep       reportClient
	be        backend.Backend
	log       *slog.Logger
	metrics   *metrics
	adoptable bool

	// reportCtx carries every call about held tasks; it ends only after the drain has
	// handed back what was left.
	reportCtx    context.Context
	reportCancel context.CancelFunc
	handBack     chan struct{}
	tasks        sync.WaitGroup

	mu            sync.Mutex
	busy          int
	started       bool
	draining      bool
	leaseFailures int
	lastLeaseErr  string
	freed         chan struct{}
}

// New checks the options.
func New(opts Options) (*Runner, error) {
	if opts.Client == nil || opts.Backend == nil {
		return nil, errors.New("runner: a client and a backend are required")
	}
	if opts.Slots <= 0 {
		opts.Slots = 4
	}
	if opts.LeaseBatch <= 0 {
		opts.LeaseBatch = opts.Slots
	}
	if opts.LeaseWait <= 0 {
		opts.LeaseWait = 20 * time.Second
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 10 * time.Second
	}
	if opts.DrainTimeout < 0 {
		opts.DrainTimeout = 0
	} else if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 60 * time.Second
	}
	if opts.LogFlushInterval <= 0 {
		opts.LogFlushInterval = 500 * time.Millisecond
	}
	if opts.LogBatchBytes <= 0 {
		opts.LogBatchBytes = 64 << 10
	}
	if opts.LogBufferBytes < opts.LogBatchBytes {
		opts.LogBufferBytes = max(4<<20, opts.LogBatchBytes)
	}
	if opts.TimeoutGrace <= 0 {
		opts.TimeoutGrace = 5 * time.Second
	}
	if opts.RunnerID == "" {
		host, _ := os.Hostname()
		opts.RunnerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	adoptable := opts.Backend.Name() != "local" && opts.Backend.Name() != "noop"
	if opts.Adoptable != nil {
		adoptable = *opts.Adoptable
	}
	r := &Runner{opts: opts, cl: opts.Client, be: opts.Backend, metrics: newMetrics(), adoptable: adoptable,
		log:      opts.Logger.With("component", "runner", "runner_id", opts.RunnerID, "backend", opts.Backend.Name()),
		handBack: make(chan struct{}), freed: make(chan struct{}, 1)}
	r.rep = opts.Client
	if rs, ok := opts.Client.(client.ReportSender); ok {
		r.rep = client.NewReporter(rs, client.ReporterOptions{Linger: reportLinger})
	}
	r.reportCtx, r.reportCancel = context.WithCancel(context.Background())
	r.metrics.slots.Set(float64(opts.Slots))
	return r, nil
}

// reportLinger is how long the runner's reports wait for others before they go: a
// lease's tasks often end together (and a heartbeat round is one tick), and one request
// for them costs the API a fraction of one per report; a task's end is late by as much.
const reportLinger = time.Millisecond

// Run leases and runs tasks until ctx ends, then drains (see the package doc) and
// returns once no task is held any more.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	r.started = true
	r.mu.Unlock()
	r.log.Info("runner started", "slots", r.opts.Slots, "lease_batch", r.opts.LeaseBatch, "adoptable", r.adoptable)
	r.leaseLoop(ctx)

	r.mu.Lock()
	r.draining = true
	busy := r.busy
	r.mu.Unlock()
	r.log.Info("draining: leasing stopped", "running_tasks", busy, "drain_timeout", r.opts.DrainTimeout.String())
	done := make(chan struct{})
	go func() { r.tasks.Wait(); close(done) }()
	t := time.NewTimer(r.opts.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		r.log.Info("drained: every task finished")
	case <-t.C:
		r.mu.Lock()
		left := r.busy
		r.mu.Unlock()
		how := "stopping them and ending them killed"
		if r.adoptable {
			how = "leaving them running for another runner to adopt"
		}
		r.log.Warn("drain timeout: handing tasks back", "tasks", left, "how", how)
		close(r.handBack)
		<-done
	}
	r.reportCancel()
	return nil
}

func (r *Runner) leaseLoop(ctx context.Context) {
	backoff := time.Duration(0)
	// A runner with fewer free slots than this waits up to leaseGather for more.
	gatherBelow := max(1, min(r.opts.LeaseBatch, r.opts.Slots)/4)
	for ctx.Err() == nil {
		free := r.free()
		if free <= 0 {
			select {
			case <-ctx.Done():
				return
			case <-r.freed:
			}
			continue
		}
		if free < gatherBelow {
			free = r.gather(ctx, gatherBelow)
			if ctx.Err() != nil {
				return
			}
		}
		leases, err := r.cl.Lease(ctx, client.LeaseRequest{RunnerID: r.opts.RunnerID,
			MaxTasks: min(free, r.opts.LeaseBatch), Wait: r.opts.LeaseWait})
		if ctx.Err() != nil {
			// Leases granted to an aborted request are given back by the reaper.
			for _, l := range leases {
				r.log.Warn("lease granted while stopping; the API will take it back when it expires", "task_id", l.Task.ID)
			}
			return
		}
		if err != nil {
			r.metrics.leaseRequests.WithLabelValues("error").Inc()
			r.mu.Lock()
			r.leaseFailures++
			r.lastLeaseErr = err.Error()
			failures := r.leaseFailures
			r.mu.Unlock()
			backoff = min(max(2*backoff, 250*time.Millisecond), 15*time.Second)
			if failures == 1 || failures%20 == 0 || errors.Is(err, client.ErrUnauthorized) {
				r.log.Error("lease request failed", "error", err.Error(), "failures", failures, "retry_in", backoff.String())
			}
			sleep(ctx, backoff)
			continue
		}
		backoff = 0
		r.mu.Lock()
		if r.leaseFailures > 0 {
			r.log.Info("lease requests work again", "after_failures", r.leaseFailures)
		}
		r.leaseFailures, r.lastLeaseErr = 0, ""
		r.mu.Unlock()
		if len(leases) == 0 {
			r.metrics.leaseRequests.WithLabelValues("empty").Inc()
			continue
		}
		r.metrics.leaseRequests.WithLabelValues("tasks").Inc()
		for _, l := range leases {
			r.mu.Lock()
			r.busy++
			r.metrics.slotsBusy.Set(float64(r.busy))
			r.mu.Unlock()
			r.tasks.Add(1)
			go func() {
				defer r.release()
				(&taskRun{r: r, lease: l}).run()
			}()
		}
	}
}

func (r *Runner) free() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts.Slots - r.busy
}

// gather waits until at least want slots are free, for at most leaseGather, and
// answers how many are.
func (r *Runner) gather(ctx context.Context, want int) int {
	t := time.NewTimer(leaseGather)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return r.free()
		case <-t.C:
			return r.free()
		case <-r.freed:
			if free := r.free(); free >= want {
				return free
			}
		}
	}
}

func (r *Runner) release() {
	r.mu.Lock()
	r.busy--
	r.metrics.slotsBusy.Set(float64(r.busy))
	r.mu.Unlock()
	select {
	case r.freed <- struct{}{}:
	default:
	}
	r.tasks.Done()
}

// Busy is how many slots hold a task.
func (r *Runner) Busy() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.busy
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// ownsRef tells whether ref was made by a backend of this kind.
func (r *Runner) ownsRef(ref string) bool {
	return strings.HasPrefix(ref, r.be.Name()+":")
}
