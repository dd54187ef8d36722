// Command riverbench is the River and raw-SQL half of scripts/bench's side-by-side
// benchmark (the other half, our platform, is src/tools/bench -workload). It lives in
// its own Go module so that the product's go.mod never depends on River.
//
//	riverbench -system river|raw -workload W [flags]   one measurement, one JSON line on stdout
//	riverbench report -in results.jsonl -out bench-results.json -machine "..."
//
// Every measurement runs in a database of its own, created on the cluster named by
// IRON_TEST_DATABASE_URL (127.0.0.1 only) and dropped afterwards. Every loop is bounded
// by a count and by -limit.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// Result is one measurement; scripts/bench collects them as JSON lines.
type Result struct {
	Workload string             `json:"workload"`
	System   string             `json:"system"`
	Unit     string             `json:"unit"`
	Value    float64            `json:"value"`
	Metrics  map[string]float64 `json:"metrics,omitempty"`
	Note     string             `json:"note,omitempty"`
}

var (
	system      = flag.String("system", "river", "river or raw")
	workload    = flag.String("workload", "", "enqueue-single, enqueue-batch, e2e, pickup, scale, schedules (raw only)")
	clients     = flag.Int("clients", 16, "concurrent clients of the enqueue workloads")
	batch       = flag.Int("batch", 100, "tasks per request of enqueue-batch")
	duration    = flag.Duration("duration", 5*time.Second, "length of the enqueue workloads")
	tasks       = flag.Int("tasks", 5000, "tasks drained by e2e")
	capacity    = flag.Int("c", 100, "in-flight capacity of e2e (River MaxWorkers; raw: workers × lease batch)")
	rawLease    = flag.Int("raw-lease", 50, "tasks per lease round trip of the raw e2e")
	variant     = flag.String("variant", "default", "River configuration of e2e: default or tuned")
	samples     = flag.Int("samples", 60, "pickup latency samples")
	rate        = flag.Float64("rate", 5, "pickup: mean Poisson arrivals per second")
	queued      = flag.Int("queued", 1000, "scale: jobs queued while leasing")
	cycles      = flag.Int("cycles", 200, "scale: lease(1) + complete cycles timed")
	completed   = flag.Int("completed", 0, "scale: jobs leased and completed (in batches, not timed) before the timed cycles")
	explainOut  = flag.String("explain-out", "", "scale: append EXPLAIN (ANALYZE, BUFFERS) of the lease to this file")
	explainHead = flag.String("explain-title", "", "scale: title of the plan in -explain-out")
	schedules   = flag.Int("schedules", 100000, "schedules: schedules due in the same minute")
	limit       = flag.Duration("limit", 5*time.Minute, "hard time bound of one measurement")
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "report" {
		if err := report(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "riverbench report:", err)
			os.Exit(1)
		}
		return
	}
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *limit+time.Minute)
	defer cancel()
	res, err := measure(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "riverbench %s %s: %v\n", *system, *workload, err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func measure(ctx context.Context) (*Result, error) {
	dbURL, drop, err := newDatabase(ctx)
	if err != nil {
		return nil, err
	}
	defer drop()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	// As many connections as our API's store gets (testsupport: 20), so that 16
	// concurrent clients are not throttled by pgxpool's default of max(4, CPUs).
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	switch *system {
	case "river":
		return measureRiver(ctx, pool)
	case "raw":
		return measureRaw(ctx, pool)
	}
	return nil, fmt.Errorf("unknown -system %q", *system)
}

// newDatabase creates a database of its own on the benchmark cluster.
func newDatabase(ctx context.Context) (string, func(), error) {
	admin := os.Getenv("IRON_TEST_DATABASE_URL")
	if admin == "" {
		return "", nil, errors.New("IRON_TEST_DATABASE_URL is not set (run through scripts/bench)")
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, err
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" {
		return "", nil, fmt.Errorf("refusing a non-loopback database host %q", h)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "bench_" + *system + "_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, admin); err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	}
	return u.String(), drop, nil
}

// ---- River ----

type NoopArgs struct {
	N int `json:"n"`
}

func (NoopArgs) Kind() string { return "noop" }

// NoopWorker does nothing; when started is set it records when each job started.
type NoopWorker struct {
	river.WorkerDefaults[NoopArgs]
	started func(id int64, at time.Time)
}

func (w *NoopWorker) Work(ctx context.Context, job *river.Job[NoopArgs]) error {
	if w.started != nil {
		w.started(job.ID, time.Now())
	}
	return nil
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func riverClient(pool *pgxpool.Pool, w *NoopWorker, maxWorkers int, tuned bool) (*river.Client[pgx.Tx], error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, w)
	cfg := &river.Config{Workers: workers, Logger: quietLogger()}
	if maxWorkers > 0 {
		cfg.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: maxWorkers}}
	}
	if tuned {
		// Throughput settings as River's own benchmark (cmd/river bench) uses them, as far
		// as we know (not checked against its source).
		cfg.FetchCooldown = 2 * time.Millisecond
		cfg.FetchPollInterval = 20 * time.Millisecond
	}
	return river.NewClient(riverpgxv5.New(pool), cfg)
}

func measureRiver(ctx context.Context, pool *pgxpool.Pool) (*Result, error) {
	m, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return nil, err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, fmt.Errorf("river migrate: %w", err)
	}
	switch *workload {
	case "enqueue-single", "enqueue-batch":
		c, err := riverClient(pool, &NoopWorker{}, 0, false) // insert-only
		if err != nil {
			return nil, err
		}
		n := 1
		if *workload == "enqueue-batch" {
			n = *batch
		}
		return enqueueLoop(ctx, n, func(ctx context.Context) error {
			if n == 1 {
				_, err := c.Insert(ctx, NoopArgs{}, nil)
				return err
			}
			params := make([]river.InsertManyParams, n)
			for i := range params {
				params[i] = river.InsertManyParams{Args: NoopArgs{N: i}}
			}
			_, err := c.InsertMany(ctx, params)
			return err
		})
	case "e2e":
		ins, err := riverClient(pool, &NoopWorker{}, 0, false)
		if err != nil {
			return nil, err
		}
		for left := *tasks; left > 0; {
			k := min(1000, left)
			params := make([]river.InsertManyParams, k)
			for i := range params {
				params[i] = river.InsertManyParams{Args: NoopArgs{N: i}}
			}
			if _, err := ins.InsertManyFast(ctx, params); err != nil {
				return nil, err
			}
			left -= k
		}
		c, err := riverClient(pool, &NoopWorker{}, *capacity, *variant == "tuned")
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := c.Start(ctx); err != nil {
			return nil, err
		}
		done, took := waitCount(ctx, pool, `SELECT count(*) FROM river_job WHERE state = 'completed'`, *tasks, *limit, start)
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c.Stop(stopCtx)
		cancel()
		return throughput(done, took), nil
	case "pickup":
		var mu sync.Mutex
		startedAt := map[int64]time.Time{}
		ch := make(chan int64, *samples+1)
		w := &NoopWorker{started: func(id int64, at time.Time) {
			mu.Lock()
			startedAt[id] = at
			mu.Unlock()
			ch <- id
		}}
		c, err := riverClient(pool, w, 100, false)
		if err != nil {
			return nil, err
		}
		if err := c.Start(ctx); err != nil {
			return nil, err
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			c.Stop(stopCtx)
			cancel()
		}()
		time.Sleep(time.Second) // let the producer settle (leader election, listener)
		return pickupLoop(ctx, func(ctx context.Context) (int64, error) {
			r, err := c.Insert(ctx, NoopArgs{}, nil)
			if err != nil {
				return 0, err
			}
			return r.Job.ID, nil
		}, func(id int64) (time.Time, bool) {
			mu.Lock()
			defer mu.Unlock()
			t, ok := startedAt[id]
			return t, ok
		})
	}
	return nil, fmt.Errorf("unknown -workload %q", *workload)
}

// ---- raw SQL ----

// rawSchema is the smallest honest queue: a narrow table, a partial index on what is
// queued, SKIP LOCKED leases.
const rawSchema = `CREATE TABLE jobs (
	id bigserial PRIMARY KEY,
	state smallint NOT NULL DEFAULT 0,
	priority smallint NOT NULL DEFAULT 0,
	run_at timestamptz NOT NULL DEFAULT now(),
	payload jsonb NOT NULL DEFAULT '{}',
	attempted_at timestamptz,
	finished_at timestamptz
);
CREATE INDEX jobs_queued ON jobs (priority, run_at, id) WHERE state = 0;`

// rawCompleteSQL completes the raw ceiling's leased jobs $1 in one statement.
const rawCompleteSQL = `UPDATE jobs SET state = 2, finished_at = now() WHERE id = ANY($1)`

const rawLeaseSQL = `UPDATE jobs SET state = 1, attempted_at = now()
	WHERE id IN (SELECT id FROM jobs WHERE state = 0 AND run_at <= now()
		ORDER BY priority, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
	RETURNING id`

func measureRaw(ctx context.Context, pool *pgxpool.Pool) (*Result, error) {
	if _, err := pool.Exec(ctx, rawSchema); err != nil {
		return nil, err
	}
	switch *workload {
	case "scale":
		return rawScale(ctx, pool)
	case "schedules":
		return rawSchedules(ctx, pool)
	case "enqueue-single":
		return enqueueLoop(ctx, 1, func(ctx context.Context) error {
			_, err := pool.Exec(ctx, `INSERT INTO jobs (payload) VALUES ($1)`, `{}`)
			return err
		})
	case "enqueue-batch":
		payloads := make([]string, *batch)
		for i := range payloads {
			payloads[i] = fmt.Sprintf(`{"n":%d}`, i)
		}
		return enqueueLoop(ctx, *batch, func(ctx context.Context) error {
			_, err := pool.Exec(ctx, `INSERT INTO jobs (payload) SELECT unnest($1::jsonb[])`, payloads)
			return err
		})
	case "e2e":
		if _, err := pool.Exec(ctx, `INSERT INTO jobs (payload) SELECT '{}' FROM generate_series(1, $1)`, *tasks); err != nil {
			return nil, err
		}
		pool.Exec(ctx, `VACUUM ANALYZE jobs`)
		workers := max(1, *capacity / *rawLease)
		var done atomic.Int64
		var failed atomic.Value
		start := time.Now()
		deadline := start.Add(*limit)
		var wg sync.WaitGroup
		for i := 0; i < workers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done.Load() < int64(*tasks) && time.Now().Before(deadline) {
					ids, err := rawLeaseIDs(ctx, pool, *rawLease)
					if err != nil {
						failed.Store(err)
						return
					}
					if len(ids) == 0 {
						time.Sleep(time.Millisecond)
						continue
					}
					if _, err := pool.Exec(ctx, rawCompleteSQL, ids); err != nil {
						failed.Store(err)
						return
					}
					done.Add(int64(len(ids)))
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			return nil, err
		}
		r := throughput(int(done.Load()), time.Since(start))
		r.Note = fmt.Sprintf("%d workers × lease %d", workers, *rawLease)
		return r, nil
	case "pickup":
		// A worker LISTENs on its own connection and leases when woken; enqueue
		// inserts and notifies in one statement.
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer conn.Release()
		if _, err := conn.Exec(ctx, `LISTEN jobs`); err != nil {
			return nil, err
		}
		var mu sync.Mutex
		startedAt := map[int64]time.Time{}
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			for wctx.Err() == nil {
				ids, err := rawLeaseIDs(wctx, pool, 50)
				if err != nil {
					return
				}
				now := time.Now()
				mu.Lock()
				for _, id := range ids {
					startedAt[id] = now
				}
				mu.Unlock()
				if len(ids) > 0 {
					pool.Exec(wctx, rawCompleteSQL, ids)
					continue
				}
				nctx, c := context.WithTimeout(wctx, time.Second)
				conn.Conn().WaitForNotification(nctx)
				c()
			}
		}()
		return pickupLoop(ctx, func(ctx context.Context) (int64, error) {
			var id int64
			err := pool.QueryRow(ctx, `WITH i AS (INSERT INTO jobs DEFAULT VALUES RETURNING id)
				SELECT id FROM i, pg_notify('jobs', '')`).Scan(&id)
			return id, err
		}, func(id int64) (time.Time, bool) {
			mu.Lock()
			defer mu.Unlock()
			t, ok := startedAt[id]
			return t, ok
		})
	}
	return nil, fmt.Errorf("unknown -workload %q", *workload)
}

// rawScale: -queued + -completed jobs queued, -completed of them leased and completed
// 1000 per round trip (not timed), then -cycles sequential lease(1) + complete round
// trips; afterwards EXPLAIN (ANALYZE, BUFFERS) of a lease (rolled back) to -explain-out.
func rawScale(ctx context.Context, pool *pgxpool.Pool) (*Result, error) {
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (payload) SELECT '{}' FROM generate_series(1, $1)`, *queued+*completed); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE jobs`); err != nil {
		return nil, err
	}
	for done := 0; done < *completed; {
		ids, err := rawLeaseIDs(ctx, pool, min(1000, *completed-done))
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("queue empty after %d completions", done)
		}
		if _, err := pool.Exec(ctx, rawCompleteSQL, ids); err != nil {
			return nil, err
		}
		done += len(ids)
	}
	var lease, cycle []float64
	deadline := time.Now().Add(*limit)
	for i := 0; i < *cycles && time.Now().Before(deadline); i++ {
		t0 := time.Now()
		ids, err := rawLeaseIDs(ctx, pool, 1)
		if err != nil {
			return nil, err
		}
		t1 := time.Now()
		if len(ids) != 1 {
			return nil, fmt.Errorf("lease %d: got %d jobs", i, len(ids))
		}
		if _, err := pool.Exec(ctx, rawCompleteSQL, ids); err != nil {
			return nil, err
		}
		lease = append(lease, float64(t1.Sub(t0))/float64(time.Millisecond))
		cycle = append(cycle, float64(time.Since(t0))/float64(time.Millisecond))
	}
	if *explainOut != "" {
		if err := rawExplain(ctx, pool); err != nil {
			return nil, err
		}
	}
	sort.Float64s(lease)
	sort.Float64s(cycle)
	pct := func(l []float64, p float64) float64 { return l[min(len(l)-1, int(p*float64(len(l))))] }
	return &Result{Workload: *workload, System: *system, Unit: "ms", Value: pct(lease, 0.99),
		Note: fmt.Sprintf("%d queued, %d completed before, %d cycles", *queued, *completed, len(lease)),
		Metrics: map[string]float64{"lease p50": pct(lease, 0.5), "lease p99": pct(lease, 0.99),
			"lease+complete p50": pct(cycle, 0.5), "lease+complete p99": pct(cycle, 0.99)}}, nil
}

// rawExplain appends EXPLAIN (ANALYZE, BUFFERS) of a lease(1), rolled back, to -explain-out.
func rawExplain(ctx context.Context, pool *pgxpool.Pool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) `+rawLeaseSQL, 1)
	if err != nil {
		return err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*explainOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "==== %s (raw: lease(1), %d queued, after %d completions)\n-- lease\n%s\n\n", *explainHead, *queued, *completed+*cycles, strings.Join(lines, "\n"))
	return err
}

// rawSchedules is the ceiling of firing -schedules schedules due in the same minute: a
// narrow schedules table, and one statement that queues a job for every due schedule
// (INSERT … SELECT) and advances them (next_start += run_every, run_count + 1), timed.
func rawSchedules(ctx context.Context, pool *pgxpool.Pool) (*Result, error) {
	if _, err := pool.Exec(ctx, `CREATE TABLE schedules (
		id bigserial PRIMARY KEY,
		next_start timestamptz NOT NULL,
		run_every integer NOT NULL,
		run_count integer NOT NULL DEFAULT 0,
		payload jsonb NOT NULL DEFAULT '{}'
	);
	CREATE INDEX schedules_due ON schedules (next_start);
	ALTER TABLE jobs ADD COLUMN schedule_id bigint, ADD COLUMN scheduled_for timestamptz;
	CREATE UNIQUE INDEX jobs_schedule_instant ON jobs (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL`); err != nil {
		return nil, err
	}
	minute := time.Now().UTC().Truncate(time.Minute).Add(-time.Minute)
	step := time.Minute / time.Duration(*schedules)
	if _, err := pool.Exec(ctx, `INSERT INTO schedules (next_start, run_every)
		SELECT $1::timestamptz + (g * $2::bigint) * interval '1 microsecond', 60 FROM generate_series(0, $3::int - 1) g`,
		minute, step.Microseconds(), *schedules); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE schedules`); err != nil {
		return nil, err
	}
	start := time.Now()
	tag, err := pool.Exec(ctx, `WITH due AS (
			SELECT id, next_start, run_every, payload FROM schedules WHERE next_start <= $1 FOR UPDATE SKIP LOCKED
		), queued AS (
			INSERT INTO jobs (payload, schedule_id, scheduled_for) SELECT payload, id, next_start FROM due
			ON CONFLICT (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL DO NOTHING
		)
		UPDATE schedules s SET next_start = due.next_start + due.run_every * interval '1 second', run_count = s.run_count + 1
		FROM due WHERE s.id = due.id`, time.Now())
	took := time.Since(start)
	if err != nil {
		return nil, err
	}
	var jobs int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE schedule_id IS NOT NULL`).Scan(&jobs); err != nil {
		return nil, err
	}
	if int(tag.RowsAffected()) != *schedules || jobs != *schedules {
		return nil, fmt.Errorf("advanced %d schedules, %d jobs queued, want %d", tag.RowsAffected(), jobs, *schedules)
	}
	return &Result{Workload: *workload, System: *system, Unit: "s", Value: took.Seconds(),
		Note: fmt.Sprintf("%d schedules due in one minute, one statement: %.0f schedules/s", *schedules, float64(*schedules)/took.Seconds())}, nil
}

func rawLeaseIDs(ctx context.Context, pool *pgxpool.Pool, n int) ([]int64, error) {
	rows, err := pool.Query(ctx, rawLeaseSQL, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// ---- shared loops ----

// enqueueLoop runs -clients goroutines calling one (which enqueues per tasks) for
// -duration and answers tasks/s.
func enqueueLoop(ctx context.Context, per int, one func(context.Context) error) (*Result, error) {
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
				if err := one(ctx); err != nil {
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
	return &Result{Workload: *workload, System: *system, Unit: "tasks/s",
		Value: float64(n.Load()) / time.Since(start).Seconds()}, nil
}

func throughput(done int, took time.Duration) *Result {
	r := &Result{Workload: *workload, System: *system, Unit: "tasks/s", Value: float64(done) / took.Seconds()}
	if done < *tasks {
		r.Note = fmt.Sprintf("time bound hit: %d of %d done", done, *tasks)
	}
	return r
}

// waitCount polls query (a count) every 50ms until it reaches n or limit passes.
func waitCount(ctx context.Context, pool *pgxpool.Pool, query string, n int, limit time.Duration, start time.Time) (int, time.Duration) {
	deadline := start.Add(limit)
	var got int
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err := pool.QueryRow(ctx, query).Scan(&got); err == nil && got >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return got, time.Since(start)
}

// pickupLoop enqueues -samples single tasks at Poisson arrivals (-rate per second, open
// loop), each timed from just before its enqueue to its start, and answers the
// percentiles in ms.
func pickupLoop(ctx context.Context, enqueue func(context.Context) (int64, error), started func(int64) (time.Time, bool)) (*Result, error) {
	type sample struct {
		id int64
		at time.Time
	}
	var sent []sample
	deadline := time.Now().Add(*limit)
	for i := 0; i < *samples && time.Now().Before(deadline); i++ {
		time.Sleep(time.Duration(mrand.ExpFloat64() / *rate * float64(time.Second)))
		at := time.Now()
		id, err := enqueue(ctx)
		if err != nil {
			return nil, err
		}
		sent = append(sent, sample{id, at})
	}
	var lat []float64
	wait := time.Now().Add(10 * time.Second)
	for _, s := range sent {
		for {
			if t, ok := started(s.id); ok {
				lat = append(lat, float64(t.Sub(s.at))/float64(time.Millisecond))
				break
			}
			if time.Now().After(wait) {
				return nil, fmt.Errorf("task %d did not start within 10s of the last enqueue", s.id)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return latencyResult(lat), nil
}

func latencyResult(lat []float64) *Result {
	sort.Float64s(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return &Result{Workload: *workload, System: *system, Unit: "ms", Value: pct(0.5),
		Metrics: map[string]float64{"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": lat[len(lat)-1]},
		Note:    fmt.Sprintf("%d samples", len(lat))}
}

// ---- report ----

// row is one line of bench-results.json.
type row struct {
	Name     string               `json:"name"`
	Unit     string               `json:"unit"`
	Ours     *float64             `json:"ours"`
	River    *float64             `json:"river"`
	Raw      *float64             `json:"raw"`
	Ratio    *float64             `json:"ratio"`
	RawRatio *float64             `json:"ratio_raw,omitempty"`
	Spread   map[string]float64   `json:"spread"`
	Runs     map[string][]float64 `json:"runs"`
	Note     string               `json:"note,omitempty"`
}

// A line of results.jsonl as scripts/bench writes it: a Result plus the run's labels.
type line struct {
	Result
	Label string `json:"label"` // workload name as printed, e.g. "end to end C=100"
	Rep   int    `json:"rep"`   // 0 = warm-up (discarded)
}

func report(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("in", "", "results.jsonl")
	out := fs.String("out", "bench-results.json", "output")
	machine := fs.String("machine", "", "machine description")
	explain := fs.String("explain", "", "file of the scale workload's lease plans, named in the output")
	fs.Parse(args)
	raw, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	// values[label][metric][system] = values over reps ≥ 1
	type key struct{ label, metric, system string }
	values := map[key][]float64{}
	units := map[string]string{}
	var order []string
	seen := map[string]bool{}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var r line
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			return fmt.Errorf("%s: %w", l, err)
		}
		if r.Rep == 0 {
			continue
		}
		metrics := map[string]float64{"": r.Value}
		if len(r.Metrics) > 0 {
			metrics = r.Metrics
		}
		for _, m := range append([]string{""}, metricNames...) {
			v, ok := metrics[m]
			if !ok {
				continue
			}
			name := r.Label
			if m != "" {
				name += " " + m
			}
			if !seen[name] {
				seen[name] = true
				order = append(order, name)
			}
			units[name] = r.Unit
			values[key{name, "", r.System}] = append(values[key{name, "", r.System}], v)
		}
	}
	rows := []row{}
	for _, name := range order {
		r := row{Name: name, Unit: units[name], Spread: map[string]float64{}, Runs: map[string][]float64{}}
		med := map[string]*float64{}
		for _, sys := range []string{"ours", "river", "raw"} {
			vs := values[key{name, "", sys}]
			if len(vs) == 0 {
				continue
			}
			m, s := medianSpread(vs)
			med[sys] = &m
			r.Spread[sys] = s
			r.Runs[sys] = vs
		}
		r.Ours, r.River, r.Raw = med["ours"], med["river"], med["raw"]
		lowerBetter := units[name] == "ms" || units[name] == "s"
		ratio := func(other *float64) *float64 {
			if r.Ours == nil || other == nil || *r.Ours == 0 || *other == 0 {
				return nil
			}
			v := *r.Ours / *other
			if lowerBetter {
				v = *other / *r.Ours
			}
			v = math.Round(v*100) / 100
			return &v
		}
		r.Ratio, r.RawRatio = ratio(r.River), ratio(r.Raw)
		rows = append(rows, r)
	}
	// One table per workload (the label before any percentile suffix).
	cur := ""
	f := func(p *float64) string {
		if p == nil {
			return "—"
		}
		if *p >= 100 {
			return fmt.Sprintf("%.0f", *p)
		}
		return fmt.Sprintf("%.1f", *p)
	}
	for _, r := range rows {
		if p := prefix(r.Name); p != cur {
			cur = p
			fmt.Printf("\n%s\n", p)
			fmt.Printf("| %-18s | %-7s | %9s | %9s | %9s | %10s | %9s | %-24s |\n", "measure", "unit", "ours", "river", "raw", "ours/river", "ours/raw", "spread ours / river / raw")
			fmt.Printf("|%s|%s|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 20), strings.Repeat("-", 9), strings.Repeat("-", 11), strings.Repeat("-", 11), strings.Repeat("-", 11), strings.Repeat("-", 12), strings.Repeat("-", 11), strings.Repeat("-", 26))
		}
		sp := func(s string) string {
			if v, ok := r.Spread[s]; ok {
				return fmt.Sprintf("%.0f%%", v*100)
			}
			return "—"
		}
		rs := func(p *float64) string {
			if p == nil {
				return "—"
			}
			return fmt.Sprintf("%.2f×", *p)
		}
		measure := strings.TrimSpace(strings.TrimPrefix(r.Name, prefix(r.Name)))
		if measure == "" {
			measure = "median"
		}
		fmt.Printf("| %-18s | %-7s | %9s | %9s | %9s | %10s | %9s | %-24s |\n", measure, r.Unit, f(r.Ours), f(r.River), f(r.Raw),
			rs(r.Ratio), rs(r.RawRatio), sp("ours")+" / "+sp("river")+" / "+sp("raw"))
	}
	fmt.Println("\nratio ≥ 1 is good for ours (throughput: ours/other; latency: other/ours); spread = (max − min) / median over the measured repetitions")
	doc := map[string]any{"machine": *machine, "workloads": rows}
	if *explain != "" {
		doc["explain"] = *explain
		fmt.Printf("EXPLAIN (ANALYZE, BUFFERS) of the scale workload's leases: %s\n", *explain)
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

// metricNames are the Metrics keys a Result may carry, in table order.
var metricNames = []string{"p50", "p90", "p99", "max", "lease p50", "lease p99", "lease+complete p50", "lease+complete p99"}

// prefix is the workload part of a row name (without its metric).
func prefix(name string) string {
	best := name
	for _, m := range metricNames {
		if p := strings.TrimSuffix(name, " "+m); p != name && len(p) < len(best) {
			best = p
		}
	}
	return best
}

func medianSpread(vs []float64) (float64, float64) {
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	var m float64
	if len(s)%2 == 1 {
		m = s[len(s)/2]
	} else {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if m == 0 {
		return 0, 0
	}
	return m, (s[len(s)-1] - s[0]) / m
}
