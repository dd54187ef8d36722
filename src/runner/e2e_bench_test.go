package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironcf/ironworker-release/src/backend/noop"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/runner"
)

// BenchmarkEndToEnd drains no-op tasks through the API over loopback HTTP and 10
// runners × 100 slots (lease batch 50), as scripts/bench's end to end does, in one
// process, for CPU profiles of the API and the runner side:
//
//	IRON_TEST_DATABASE_URL=… go test ./src/runner -run '^$' -bench EndToEnd -benchtime 1x -cpuprofile cpu.out
//
// IRON_E2E_TASKS sets the tasks (default 5000). Not part of the suite (Ginkgo's specs
// run under TestRunner).
func BenchmarkEndToEnd(b *testing.B) {
	if os.Getenv("IRON_TEST_DATABASE_URL") == "" {
		b.Skip("IRON_TEST_DATABASE_URL is not set")
	}
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("IRON_E2E_TASKS")); err == nil && v > 0 {
		n = v
	}
	a, err := testsupport.StartAPI(config.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Stop()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	raw, _ := json.Marshal(map[string]any{"name": "noop", "image": "iron/noop"})
	mw.WriteField("data", string(raw))
	mw.Close()
	if resp := a.DoAs(a.Token, http.MethodPost, a.Project()+"/codes", body.Bytes(), http.Header{"Content-Type": {mw.FormDataContentType()}}); resp.Status != http.StatusOK {
		b.Fatalf("upload: %d %s", resp.Status, resp.Body)
	}
	db, err := a.DB.SQL()
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for b.Loop() {
		for queued := 0; queued < n; queued += 100 {
			tasks := make([]map[string]any, min(100, n-queued))
			for i := range tasks {
				tasks[i] = map[string]any{"code_name": "noop", "payload": "{}"}
			}
			if resp := a.Do(http.MethodPost, a.Project()+"/tasks", map[string]any{"tasks": tasks}); resp.Status != http.StatusOK {
				b.Fatalf("queue: %d %s", resp.Status, resp.Body)
			}
		}
		db.Exec(`VACUUM ANALYZE tasks`)
		var counts leaseCounts
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{}, 10)
		start := time.Now()
		for i := 0; i < 10; i++ {
			cl, err := client.NewRunnerClient(a.Server.URL, a.RunnerName, a.RunnerSecret, client.RunnerOptions{})
			if err != nil {
				b.Fatal(err)
			}
			r, err := runner.New(runner.Options{Client: &countingClient{RunnerClient: cl, c: &counts}, Backend: noop.New(), RunnerID: fmt.Sprintf("bench-%d", i),
				Slots: 100, LeaseBatch: 50, LeaseWait: 20 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			go func() { r.Run(ctx); done <- struct{}{} }()
		}
		// Counts only the tasks still queued or in flight (the queue's partial indexes),
		// not the whole table next to the drain being profiled; bounded in time.
		deadline := start.Add(5 * time.Minute)
		for {
			var left int
			if err := db.QueryRow(`SELECT count(*) FROM tasks WHERE status IN ('queued', 'preparing', 'running')`).Scan(&left); err != nil {
				b.Fatal(err)
			}
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d tasks still queued or running after 5 minutes", left)
			}
			time.Sleep(20 * time.Millisecond)
		}
		took := time.Since(start)
		var failed int
		if err := db.QueryRow(`SELECT count(*) FROM tasks WHERE status <> 'complete'`).Scan(&failed); err != nil {
			b.Fatal(err)
		}
		if failed > 0 {
			b.Fatalf("%d tasks ended otherwise than complete", failed)
		}
		cancel()
		for i := 0; i < 10; i++ {
			<-done
		}
		b.ReportMetric(float64(n)/took.Seconds(), "tasks/s")
		b.ReportMetric(float64(counts.leased.Load())/float64(max(1, counts.leases.Load())), "tasks/lease")
		b.ReportMetric(float64(counts.reported.Load())/float64(max(1, counts.reports.Load())), "reports/request")
		b.ReportMetric(float64(counts.heartbeats.Load())/float64(n), "heartbeats/task")
	}
}

type leaseCounts struct{ leases, leased, reports, reported, heartbeats atomic.Int64 }

// countingClient counts lease and report requests and their sizes.
type countingClient struct {
	*client.RunnerClient
	c *leaseCounts
}

func (c *countingClient) Lease(ctx context.Context, req client.LeaseRequest) ([]client.Lease, error) {
	ls, err := c.RunnerClient.Lease(ctx, req)
	if len(ls) > 0 {
		c.c.leases.Add(1)
		c.c.leased.Add(int64(len(ls)))
	}
	return ls, err
}

func (c *countingClient) Report(ctx context.Context, items []client.ReportItem) ([]client.ReportResult, error) {
	c.c.reports.Add(1)
	c.c.reported.Add(int64(len(items)))
	for _, it := range items {
		if it.Heartbeat != nil {
			c.c.heartbeats.Add(1)
		}
	}
	return c.RunnerClient.Report(ctx, items)
}
