package main

// Our half of scripts/bench's side-by-side benchmark against River and raw SQL (the
// other half is bench/river, a Go module of its own so that the product never depends
// on River). `bench -workload W` makes one measurement on a fresh database of the
// cluster named by IRON_TEST_DATABASE_URL, through the real API over loopback HTTP and
// the real runner with the no-op backend, and prints one JSON line (the Result of
// bench/river). Every loop is bounded by a count and by -limit.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/backend/noop"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/runner"
	"github.com/ironcf/ironworker-release/src/store"
)

var (
	workload    = flag.String("workload", "", "side-by-side measurement: enqueue-single, enqueue-batch, e2e, pickup, scale, schedules (empty: the classic run)")
	clients     = flag.Int("clients", 16, "concurrent clients of the enqueue workloads")
	enqBatch    = flag.Int("enqueue-batch", 100, "tasks per POST /tasks of enqueue-batch")
	duration    = flag.Duration("duration", 5*time.Second, "length of the enqueue workloads")
	capacity    = flag.Int("c", 100, "e2e in-flight capacity: runners × -runner-slots")
	runnerSlots = flag.Int("runner-slots", 100, "e2e slots per runner")
	e2eLease    = flag.Int("e2e-lease", 50, "e2e tasks per lease request")
	rate        = flag.Float64("rate", 5, "pickup: mean Poisson arrivals per second")
	limit       = flag.Duration("limit", 5*time.Minute, "hard time bound of one measurement")
	queued      = flag.Int("queued", 1000, "scale: tasks queued while leasing")
	cycles      = flag.Int("cycles", 200, "scale: lease(1) + complete cycles timed")
	completed   = flag.Int("completed", 0, "scale: tasks leased and completed (in batches, not timed) before the timed cycles")
	explainOut  = flag.String("explain-out", "", "scale: append EXPLAIN (ANALYZE, BUFFERS) of the lease to this file")
	explainHead = flag.String("explain-title", "", "scale: title of the plan in -explain-out")
)

// result is bench/river's Result.
type result struct {
	Workload string             `json:"workload"`
	System   string             `json:"system"`
	Unit     string             `json:"unit"`
	Value    float64            `json:"value"`
	Metrics  map[string]float64 `json:"metrics,omitempty"`
	Note     string             `json:"note,omitempty"`
}

// httpClient keeps a connection per concurrent client (http.DefaultClient keeps 2 idle
// per host, which would make 16 clients reconnect all the time).
var httpClient = &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}

func sideBySide() error {
	a, err := testsupport.StartAPI(config.Limits{})
	if err != nil {
		return err
	}
	defer a.Stop()
	db, err := a.DB.SQL()
	if err != nil {
		return err
	}
	defer db.Close()
	if err := uploadImageCode(a, "noop"); err != nil {
		return err
	}
	var res *result
	switch *workload {
	case "enqueue-single":
		res, err = enqueueLoop(a, 1)
	case "enqueue-batch":
		res, err = enqueueLoop(a, *enqBatch)
	case "e2e":
		res, err = e2e(a, db)
	case "pickup":
		res, err = pickup(a)
	case "scale":
		res, err = scale(a, db)
	case "schedules":
		res, err = schedulesWorkload(a, db)
	default:
		err = fmt.Errorf("unknown -workload %q", *workload)
	}
	if err != nil {
		return err
	}
	res.Workload, res.System = *workload, "ours"
	return json.NewEncoder(os.Stdout).Encode(res)
}

// post queues n no-op tasks in one POST /tasks and answers their ids. The body is
// encoded from structs, as a Go client would, and the answer decoded into ids only.
func post(a *testsupport.API, n int) ([]string, error) {
	type newTask struct {
		CodeName string `json:"code_name"`
		Payload  string `json:"payload"`
	}
	tasks := make([]newTask, n)
	for i := range tasks {
		tasks[i] = newTask{CodeName: "noop", Payload: "{}"}
	}
	body, err := json.Marshal(struct {
		Tasks []newTask `json:"tasks"`
	}{tasks})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, a.Server.URL+a.Project()+"/tasks", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "OAuth "+a.Token)
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST /tasks: HTTP %d: %s", resp.StatusCode, raw)
	}
	var out struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out.Tasks) != n {
		return nil, fmt.Errorf("POST /tasks: unexpected answer %.200s", raw)
	}
	ids := make([]string, n)
	for i, t := range out.Tasks {
		ids[i] = t.ID
	}
	return ids, nil
}

func enqueueLoop(a *testsupport.API, per int) (*result, error) {
	var n atomic.Int64
	var failed atomic.Value
	start := time.Now()
	end := start.Add(min(*duration, *limit))
	var wg sync.WaitGroup
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if _, err := post(a, per); err != nil {
					failed.Store(err)
					return
				}
				n.Add(int64(per))
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return nil, err
	}
	return &result{Unit: "tasks/s", Value: float64(n.Load()) / time.Since(start).Seconds()}, nil
}

// e2e queues -tasks no-op tasks (not timed), then starts C / -runner-slots runners and
// times the drain: lease, start, complete, all over HTTP.
func e2e(a *testsupport.API, db *sql.DB) (*result, error) {
	var failed atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := min(100, int64(*tasks)-next.Add(100)+100)
				if k <= 0 {
					return
				}
				if _, err := post(a, int(k)); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return nil, err
	}
	db.Exec(`VACUUM ANALYZE tasks`)
	n := max(1, *capacity / *runnerSlots)
	slotsEach := *capacity / n
	stop := startRunnersWith(a, n, slotsEach, *e2eLease, noop.New())
	defer stop()
	start := time.Now()
	done, took, err := countComplete(db, *tasks, *limit, start)
	if err != nil {
		return nil, err
	}
	r := &result{Unit: "tasks/s", Value: float64(done) / took.Seconds(),
		Note: fmt.Sprintf("%d runner(s) × %d slots, lease batch %d", n, slotsEach, *e2eLease)}
	if done < *tasks {
		r.Note += fmt.Sprintf("; time bound hit: %d of %d done", done, *tasks)
	}
	return r, nil
}

// countComplete polls every 50ms (as bench/river does for River) until no task is
// queued or in flight, or limit (from start) passes, and answers how many tasks are
// complete (at most n) and when the poll saw the queue empty. The poll reads only the
// queue's partial indexes (a count of all tasks by status reads the whole table, and
// did so 20 times a second next to the drain it measures); then one full count checks
// that no task ended otherwise than complete.
func countComplete(db *sql.DB, n int, limit time.Duration, start time.Time) (int, time.Duration, error) {
	deadline := start.Add(limit)
	var took time.Duration
	for time.Now().Before(deadline) {
		var active int
		if err := db.QueryRow(`SELECT count(*) FROM tasks WHERE status IN ('queued', 'preparing', 'running')`).Scan(&active); err != nil {
			return 0, 0, err
		}
		took = time.Since(start)
		if active == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var done, other int
	if err := db.QueryRow(`SELECT count(*) FILTER (WHERE status = 'complete'),
		count(*) FILTER (WHERE status NOT IN ('complete', 'queued', 'preparing', 'running')) FROM tasks`).Scan(&done, &other); err != nil {
		return 0, 0, err
	}
	if other > 0 {
		return 0, 0, fmt.Errorf("%d tasks ended otherwise than complete", other)
	}
	return min(done, n), took, nil
}

func startRunnersWith(a *testsupport.API, n, slots, batch int, be backend.Backend) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, n)
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	for i := 0; i < n; i++ {
		cl, err := client.NewRunnerClient(a.Server.URL, a.RunnerName, a.RunnerSecret, client.RunnerOptions{})
		if err != nil {
			panic(err)
		}
		r, err := runner.New(runner.Options{Client: cl, Backend: be, RunnerID: fmt.Sprintf("bench-%d", i),
			Slots: slots, LeaseBatch: batch, LeaseWait: 20 * time.Second, Logger: log})
		if err != nil {
			panic(err)
		}
		go func() { r.Run(ctx); done <- struct{}{} }()
	}
	return func() {
		cancel()
		for i := 0; i < n; i++ {
			<-done
		}
	}
}

// timedBackend is the no-op backend that records when the runner started each task.
type timedBackend struct {
	*noop.Backend
	mu      sync.Mutex
	started map[string]time.Time
}

func (b *timedBackend) Start(ctx context.Context, spec backend.Spec, sink backend.LogSink) (backend.Ref, error) {
	now := time.Now()
	b.mu.Lock()
	if _, ok := b.started[spec.TaskID]; !ok {
		b.started[spec.TaskID] = now
	}
	b.mu.Unlock()
	return b.Backend.Start(ctx, spec, sink)
}

func (b *timedBackend) startedAt(id string) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.started[id]
	return t, ok
}

// pickup: one runner (long-polling, 100 slots) on an idle queue; -samples single tasks
// queued at Poisson arrivals (-rate/s, open loop), each timed on the client's clock from
// just before its POST /tasks to the runner's backend Start.
func pickup(a *testsupport.API) (*result, error) {
	be := &timedBackend{Backend: noop.New(), started: map[string]time.Time{}}
	stop := startRunnersWith(a, 1, 100, 50, be)
	defer stop()
	time.Sleep(time.Second) // the runner is long-polling
	type sample struct {
		id string
		at time.Time
	}
	var sent []sample
	deadline := time.Now().Add(*limit)
	for i := 0; i < *samples && time.Now().Before(deadline); i++ {
		time.Sleep(time.Duration(rand.ExpFloat64() / *rate * float64(time.Second)))
		at := time.Now()
		ids, err := post(a, 1)
		if err != nil {
			return nil, err
		}
		sent = append(sent, sample{ids[0], at})
	}
	var lat []float64
	wait := time.Now().Add(10 * time.Second)
	for _, s := range sent {
		for {
			if t, ok := be.startedAt(s.id); ok {
				lat = append(lat, float64(t.Sub(s.at))/float64(time.Millisecond))
				break
			}
			if time.Now().After(wait) {
				return nil, fmt.Errorf("task %s did not start within 10s of the last enqueue", s.id)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	if len(lat) == 0 {
		return nil, errors.New("no samples")
	}
	sort.Float64s(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return &result{Unit: "ms", Value: pct(0.5),
		Metrics: map[string]float64{"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": lat[len(lat)-1]},
		Note:    fmt.Sprintf("%d samples", len(lat))}, nil
}

// scale: -queued + -completed tasks queued (one through the API, the rest copies of it
// as the product writes them, see seedQueued), -completed of them leased and completed
// through the store in large batches (not timed: this leaves the dead tuples and the
// history of that many completions), then -cycles sequential lease(1) + complete calls
// on the store (no HTTP), timed each. Afterwards EXPLAIN (ANALYZE, BUFFERS) of a lease
// (store.ExplainLease, rolled back) goes to -explain-out.
func scale(a *testsupport.API, db *sql.DB) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	t := time.Now()
	if err := seedQueued(ctx, a, db, *queued+*completed); err != nil {
		return nil, fmt.Errorf("seed queued tasks: %w", err)
	}
	seeded := time.Since(t)
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE tasks`); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "scale: %d tasks queued in %s, VACUUM ANALYZE %s\n", *queued+*completed,
		seeded.Round(time.Millisecond), (time.Since(t) - seeded).Round(time.Millisecond))
	if *completed > 0 {
		t = time.Now()
		if err := drain(ctx, a, *completed); err != nil {
			return nil, fmt.Errorf("complete %d tasks: %w", *completed, err)
		}
		fmt.Fprintf(os.Stderr, "scale: %d tasks leased and completed in %s\n", *completed, time.Since(t).Round(time.Millisecond))
	}
	var lease, cycle []float64
	for i := 0; i < *cycles && ctx.Err() == nil; i++ {
		t0 := time.Now()
		ls, err := a.Store.LeaseTasks(ctx, store.LeaseRequest{RunnerID: "bench-scale", MaxTasks: 1, Duration: time.Minute})
		if err != nil {
			return nil, err
		}
		t1 := time.Now()
		if len(ls) != 1 {
			return nil, fmt.Errorf("lease %d: got %d tasks", i, len(ls))
		}
		if _, err := a.Store.CompleteTask(ctx, ls[0].Task.ID, ls[0].LeaseID, store.Completion{Status: "complete"}); err != nil {
			return nil, err
		}
		lease = append(lease, ms(t1.Sub(t0)))
		cycle = append(cycle, ms(time.Since(t0)))
	}
	if *explainOut != "" {
		plan, err := a.Store.ExplainLease(ctx, 1)
		if err != nil {
			return nil, err
		}
		if err := appendExplain(*explainOut, *explainHead, plan); err != nil {
			return nil, err
		}
	}
	return scaleResult(lease, cycle), nil
}

// drain leases n queued tasks through the store, 500 per lease call, and completes
// each (64 concurrent CompleteTask calls, which the store batches into shared UPDATEs).
func drain(ctx context.Context, a *testsupport.API, n int) error {
	for done := 0; done < n; {
		ls, err := a.Store.LeaseTasks(ctx, store.LeaseRequest{RunnerID: "bench-drain", MaxTasks: min(500, n-done), Duration: 10 * time.Minute})
		if err != nil {
			return err
		}
		if len(ls) == 0 {
			return fmt.Errorf("queue empty after %d", done)
		}
		work := make(chan store.LeasedTask)
		errs := make(chan error, 64)
		var wg sync.WaitGroup
		for w := 0; w < 64; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for l := range work {
					if _, err := a.Store.CompleteTask(ctx, l.Task.ID, l.LeaseID, store.Completion{Status: "complete"}); err != nil {
						select {
						case errs <- err:
						default:
						}
					}
				}
			}()
		}
		for _, l := range ls {
			work <- l
		}
		close(work)
		wg.Wait()
		select {
		case err := <-errs:
			return err
		default:
		}
		done += len(ls)
	}
	return nil
}

func appendExplain(path, title, plan string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "==== %s (ours: store.ExplainLease(1), %d queued, after %d completions)\n%s\n", title, *queued, *completed+*cycles, plan)
	return err
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func scaleResult(lease, cycle []float64) *result {
	sort.Float64s(lease)
	sort.Float64s(cycle)
	pct := func(l []float64, p float64) float64 { return l[min(len(l)-1, int(p*float64(len(l))))] }
	return &result{Unit: "ms", Value: pct(lease, 0.99), Note: fmt.Sprintf("%d queued, %d completed before, %d cycles", *queued, *completed, len(lease)),
		Metrics: map[string]float64{"lease p50": pct(lease, 0.5), "lease p99": pct(lease, 0.99),
			"lease+complete p50": pct(cycle, 0.5), "lease+complete p99": pct(cycle, 0.99)}}
}
