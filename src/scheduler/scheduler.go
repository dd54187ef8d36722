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

	var lead *store.Leadership
	defer func() { lead.Release() }()
	failing := false // log a run of identical failures once, then its end
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		if lead != nil {
			if err := lead.Check(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				log.Warn("scheduler leadership lost; will try to lead again", "error", err.Error())
				lead.Release()
				lead = nil
			}
		}
		if lead == nil {
			l, ok, err := st.AcquireSchedulerLeadership(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				if !failing {
					log.Warn("scheduler cannot reach the database", "error", err.Error())
				}
				failing = true
			case ok:
				lead = l
				log.Info("became scheduler leader")
			}
		}
		if lead != nil {
			events, err := st.FireDueSchedules(ctx, now(), batch)
			logEvents(log, events)
			switch {
			case err != nil && ctx.Err() == nil:
				if !failing {
					log.Warn("firing due schedules failed", "error", err.Error())
				}
				failing = true
			case err == nil:
				if failing {
					log.Info("scheduler recovered")
				}
				failing = false
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
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
