// Package reaper takes back tasks whose runner lease expired (see
// store.ReapExpiredLeases). Every iron-api instance runs it; one leads at a time through
// a PostgreSQL advisory lock. Leadership only saves work: the reaping SQL locks rows
// with SKIP LOCKED, so a stale leader cannot act on a task twice.
package reaper

import (
	"context"
	"log/slog"
	"time"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/leader"
	"github.com/ironcf/ironworker-release/src/store"
)

// Store is what Run needs of the store.
type Store interface {
	AcquireReaperLeadership(ctx context.Context) (*store.Leadership, bool, error)
	ReapExpiredLeases(ctx context.Context, opts store.ReapOptions) ([]store.ReapEvent, error)
}

// batchSize is how many expired tasks one reaping transaction takes.
const batchSize = 100

// Run reaps every cfg.ReaperInterval until ctx ends.
func Run(ctx context.Context, st Store, cfg config.RunnerAPI, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "reaper")
	interval := cfg.ReaperInterval.Std()
	if interval <= 0 {
		interval = 5 * time.Second
	}
	opts := store.ReapOptions{BatchSize: batchSize, MaxAttempts: cfg.MaxLeaseAttempts}
	// A preparing/running task without a lease expiry (not leased through the
	// protocol) is stale after a few lease durations.
	if d := cfg.LeaseDuration.Std(); d > 0 {
		opts.StaleAfter = 4 * d
	}

	return leader.Run(ctx, leader.Config{Name: "reaper", Interval: interval, WorkFailed: "reaping expired leases failed", Log: log},
		st.AcquireReaperLeadership,
		func(ctx context.Context) error { return ReapOnce(ctx, st, opts, log) })
}

// ReapOnce reaps until no expired lease is left (batch by batch), logging each task.
func ReapOnce(ctx context.Context, st Store, opts store.ReapOptions, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	if opts.BatchSize < 1 {
		opts.BatchSize = batchSize
	}
	for {
		events, err := st.ReapExpiredLeases(ctx, opts)
		for _, ev := range events {
			attrs := []any{"task_id", ev.TaskID, "project_id", ev.ProjectID, "action", ev.Action}
			if ev.RetryTaskID != "" {
				attrs = append(attrs, "retry_task_id", ev.RetryTaskID)
			}
			if ev.Action == store.ReapKilled {
				log.Warn("lease expired: task killed", attrs...)
			} else {
				log.Info("lease expired: task back in the queue", attrs...)
			}
		}
		if err != nil {
			return err
		}
		if len(events) < opts.BatchSize {
			return nil
		}
	}
}
