package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"time"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
)

var (
	nSchedules = flag.Int("schedules", 100000, "schedules: schedules due in the same minute")
	fireBatch  = flag.Int("fire-batch", 0, "schedules: schedules per firing transaction (0: iron-api's default scheduler.batch_size)")
)

// schedulesWorkload: -schedules interval schedules (run_every 60 s) whose next run falls
// in the same minute, the one before now: one created through POST /schedules (the
// product's create path resolves the defaults), the others copies of it with their own
// id and start_at = next_start spread over that minute, as POST /schedules writes a
// schedule with a past start_at that never ran. Then the product's firing code, the call
// the scheduler leader makes on each tick (store.FireDueSchedules with now and
// scheduler.batch_size), is timed from its start until it returns, every schedule having
// queued its task (checked).
func schedulesWorkload(a *testsupport.API, db *sql.DB) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	n := *nSchedules
	minute := time.Now().UTC().Truncate(time.Minute).Add(-time.Minute)
	step := time.Minute / time.Duration(n)
	resp := a.Do(http.MethodPost, a.Project()+"/schedules", map[string]any{"schedules": []any{map[string]any{
		"code_name": "noop", "payload": "{}", "run_every": 60, "start_at": minute.Format(time.RFC3339Nano)}}})
	if resp.Status != http.StatusOK {
		return nil, fmt.Errorf("POST /schedules: HTTP %d: %s", resp.Status, resp.Body)
	}
	var created struct {
		Schedules []struct {
			ID string `json:"id"`
		} `json:"schedules"`
	}
	if err := json.Unmarshal(resp.Body, &created); err != nil || len(created.Schedules) != 1 {
		return nil, fmt.Errorf("POST /schedules: unexpected answer %s", resp.Body)
	}
	at := `$3::timestamptz + (s.g * $4::bigint) * interval '1 microsecond'`
	if err := copyRows(ctx, db, "schedules", created.Schedules[0].ID, n-1, map[string]string{
		"id": idExpr, "start_at": at, "next_start": at, "created_at": "s.ts", "updated_at": "s.ts"},
		minute, step.Microseconds()); err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE schedules`); err != nil {
		return nil, err
	}
	var due int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM schedules WHERE status = 'scheduled' AND next_start >= $1 AND next_start < $2`,
		minute, minute.Add(time.Minute)).Scan(&due); err != nil {
		return nil, err
	}
	if due != n {
		return nil, fmt.Errorf("%d schedules due in the minute from %s, want %d", due, minute.Format(time.RFC3339), n)
	}

	batch := *fireBatch
	if batch <= 0 {
		var cfg config.API
		cfg.ApplyDefaults()
		batch = cfg.Scheduler.BatchSize
	}
	start := time.Now()
	events, err := a.Store.FireDueSchedules(ctx, time.Now(), batch)
	took := time.Since(start)
	if err != nil {
		return nil, err
	}
	fired := 0
	for _, ev := range events {
		if ev.TaskID != "" {
			fired++
		}
	}
	var tasks int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM tasks WHERE schedule_id IS NOT NULL AND status = 'queued'`).Scan(&tasks); err != nil {
		return nil, err
	}
	if fired != n || tasks != n {
		return nil, fmt.Errorf("fired %d, %d tasks queued, want %d", fired, tasks, n)
	}
	return &result{Unit: "s", Value: took.Seconds(),
		Note: fmt.Sprintf("%d schedules due in one minute, batch %d per transaction: %.0f schedules/s", n, batch, float64(n)/took.Seconds())}, nil
}
