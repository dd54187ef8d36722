// Package scheduler fires due schedules. Every iron-api instance runs it; one leads at a
// time through a PostgreSQL advisory lock.
//
// Leadership only saves work: the firing SQL (store.FireDueSchedules) locks due
// schedules with SKIP LOCKED and a unique index allows one task per schedule instant,
// so a stale leader that has not yet noticed its lost connection cannot double-fire.
package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/leader"
	"github.com/ironcf/ironworker-release/src/store"
)

// firer is what Run needs of the store.
type firer interface {
	AcquireSchedulerLeadership(ctx context.Context) (*store.Leadership, bool, error)
	FireDueSchedules(ctx context.Context, now time.Time, batchSize int) ([]store.FireEvent, error)
}

// Run fires due schedules every cfg.Interval until ctx ends. Each tick it makes sure
// it holds leadership (acquiring it, or noticing it was lost with its connection) and,
// as leader, fires what is due.
func Run(ctx context.Context, st *store.Store, cfg config.Scheduler, log *slog.Logger) error {
	return run(ctx, st, cfg, log, time.Now)
}

func run(ctx context.Context, st firer, cfg config.Scheduler, log *slog.Logger, now func() time.Time) error {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "scheduler")
	interval := cfg.Interval.Std()
	if interval <= 0 {
		interval = time.Second
	}
	batch := cfg.BatchSize
	if batch < 1 {
		batch = 500
	}

	return leader.Run(ctx, leader.Config{Name: "scheduler", Interval: interval, WorkFailed: "firing due schedules failed", Log: log},
		st.AcquireSchedulerLeadership,
		func(ctx context.Context) error {
			events, err := st.FireDueSchedules(ctx, now(), batch)
			logEvents(log, events)
			return err
		})
}

// logEvents logs each fire at debug and each problem at warn; payloads never.
func logEvents(log *slog.Logger, events []store.FireEvent) {
	for _, ev := range events {
		attrs := []any{"schedule_id", ev.ScheduleID, "project_id", ev.ProjectID, "code_name", ev.CodeName,
			"scheduled_for", ev.ScheduledFor.Format(time.RFC3339Nano), "status", ev.Status}
		switch {
		case ev.Problem != "":
			log.Warn("schedule did not run", append(attrs, "problem", ev.Problem)...)
		case ev.AlreadyFired:
			log.Debug("schedule instant already fired", attrs...)
		case ev.TaskID != "":
			log.Debug("schedule fired", append(attrs, "task_id", ev.TaskID)...)
		default:
			log.Debug("schedule ended", attrs...)
		}
	}
}
