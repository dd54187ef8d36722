// bench measures iron-api + iron-runner end to end with the no-op backend (tasks complete
// the moment they start, so what is measured is the queue, the runner protocol and the
// runner): the throughput of draining a backlog of tasks, and the pickup latency (queue
// → running) of single tasks on an idle queue. Run it through scripts/bench, which
// starts a throwaway PostgreSQL cluster.
package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/ironcf/ironworker-release/src/backend/noop"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/cli"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
)

var (
	diegoTasks = flag.Int("diego-tasks", 40, "tasks per round of the diego backend's Cloud Controller request count (0: skip)")
	diegoSlots = flag.Int("diego-slots", 20, "runner slots of the diego run")
	diegoPoll  = flag.Duration("diego-poll", 500*time.Millisecond, "poll interval of the diego run")
	cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of the whole run (API, runners and load generator: one process) to this file")
)

func main() { os.Exit(benchMain()) }

// benchMain runs the bench and answers the exit code; a CPU profile, if asked for, is
// written before it returns.
func benchMain() int {
	flag.Parse()
	// iron-api and iron-runner run with this GC setting (cli.Main); so do they here.
	cli.TuneGC()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: cpu profile:", err)
			return 1
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if *workload != "" {
		// One measurement of scripts/bench's side-by-side run (see sidebyside.go).
		if err := sideBySide(); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", *workload, err)
			return 1
		}
		return 0
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if *diegoTasks > 0 {
		if err := runDiego(*diegoTasks, *diegoSlots, *diegoPoll); err != nil {
			fmt.Fprintln(os.Stderr, "bench: diego:", err)
			return 1
		}
	}
	return 0
}

var (
	tasks   = flag.Int("tasks", 2000, "tasks in the backlog for the throughput run")
	slots   = flag.Int("slots", 32, "runner slots")
	batch   = flag.Int("lease-batch", 32, "tasks per lease request")
	runners = flag.Int("runners", 1, "runners (each with -slots slots)")
	samples = flag.Int("samples", 200, "single tasks for the pickup latency")
)

func run() error {

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
	fmt.Printf("bench: iron-api (in-process, HTTP on loopback) + %d runner(s) × %d slots, no-op backend; GOMAXPROCS=%d, %d CPUs\n",
		*runners, *slots, runtime.GOMAXPROCS(0), runtime.NumCPU())

	// Throughput: queue a backlog, then let the runners drain it.
	queued := time.Now()
	for done := 0; done < *tasks; {
		n := min(100, *tasks-done)
		if _, err := post(a, n); err != nil {
			return err
		}
		done += n
	}
	fmt.Printf("queued %d tasks in %s (%.0f tasks/s through POST /tasks, 100 per request)\n",
		*tasks, time.Since(queued).Round(time.Millisecond), float64(*tasks)/time.Since(queued).Seconds())
	stop := startRunnersWith(a, *runners, *slots, *batch, noop.New())
	start := time.Now()
	if err := waitComplete(db, *tasks, 10*time.Minute); err != nil {
		stop()
		return err
	}
	took := time.Since(start)
	fmt.Printf("throughput: %d no-op tasks leased, run and completed in %s = %.0f tasks/s\n",
		*tasks, took.Round(time.Millisecond), float64(*tasks)/took.Seconds())

	// Pickup latency: one task at a time on an idle queue (the runners are long-polling).
	time.Sleep(500 * time.Millisecond)
	var lat []time.Duration
	for i := 0; i < *samples; i++ {
		ids, err := post(a, 1)
		if err != nil {
			stop()
			return err
		}
		id := ids[0]
		d, err := waitStarted(db, id, 30*time.Second)
		if err != nil {
			stop()
			return err
		}
		lat = append(lat, d)
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("pickup latency (created_at → start_time, idle queue, %d samples): p50 %s, p99 %s, max %s\n",
		len(lat), pct(0.50).Round(100*time.Microsecond), pct(0.99).Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond))
	return nil
}

func uploadImageCode(a *testsupport.API, name string) error {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	raw, _ := json.Marshal(map[string]any{"name": name, "image": "iron/noop"})
	mw.WriteField("data", string(raw))
	mw.Close()
	resp := a.DoAs(a.Token, http.MethodPost, a.Project()+"/codes", body.Bytes(), http.Header{"Content-Type": {mw.FormDataContentType()}})
	if resp.Status != http.StatusOK {
		return fmt.Errorf("upload code: HTTP %d: %s", resp.Status, resp.Body)
	}
	return nil
}

// waitComplete waits (countComplete) until the n tasks queued so far are complete.
func waitComplete(db *sql.DB, n int, limit time.Duration) error {
	done, _, err := countComplete(db, n, limit, time.Now())
	if err != nil {
		return err
	}
	if done < n {
		return errors.New("tasks did not complete in time")
	}
	return nil
}

// waitStarted waits for the task to end and answers created_at → start_time, both as
// the database recorded them.
func waitStarted(db *sql.DB, id string, limit time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		var status string
		var ms sql.NullFloat64
		if err := db.QueryRow(`SELECT status, extract(epoch FROM start_time - created_at) * 1000 FROM tasks WHERE id = $1`, id).
			Scan(&status, &ms); err != nil {
			return 0, err
		}
		if status == "complete" && ms.Valid {
			return time.Duration(ms.Float64 * float64(time.Millisecond)), nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("task %s did not complete in time", id)
}
