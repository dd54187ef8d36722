// Package leader runs a job on one iron-api instance at a time: a loop that holds
// leadership (a PostgreSQL advisory lock on a dedicated connection, store.Leadership),
// takes it again after its connection was lost, and does the job every interval while
// it leads. The reaper and the scheduler run on it.
package leader

import (
	"context"
	"log/slog"
	"time"
)

// Lock is a held leadership (store.Leadership).
type Lock interface {
	// Check returns an error when leadership is lost (or cannot be vouched for).
	Check(ctx context.Context) error
	// Release gives leadership up.
	Release()
}

// Config describes one leader loop.
type Config struct {
	// Name names the job in log messages ("reaper", "scheduler").
	Name string
	// Interval is the time between two rounds.
	Interval time.Duration
	// WorkFailed is the message logged when work returns an error.
	WorkFailed string
	Log        *slog.Logger
}

// Run makes sure every cfg.Interval that it leads (acquiring leadership, or noticing it
// was lost with its connection and acquiring it again) and, as leader, calls work. A run
// of failures (of acquire or work) is logged once, and so is its end. Run returns nil
// when ctx ends, after releasing leadership.
func Run[L Lock](ctx context.Context, cfg Config, acquire func(context.Context) (L, bool, error), work func(context.Context) error) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	interval := cfg.Interval
	if interval <= 0 {
		interval = time.Second
	}
	var lead L
	held := false
	defer func() {
		if held {
			lead.Release()
		}
	}()
	failing := false // log a run of identical failures once, then its end
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		if held {
			if err := lead.Check(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				log.Warn(cfg.Name+" leadership lost; will try to lead again", "error", err.Error())
				lead.Release()
				held = false
			}
		}
		if !held {
			l, ok, err := acquire(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				if !failing {
					log.Warn(cfg.Name+" cannot reach the database", "error", err.Error())
				}
				failing = true
			case err == nil && ok:
				lead, held = l, true
				log.Info("became " + cfg.Name + " leader")
			}
		}
		if held {
			err := work(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				if !failing {
					log.Warn(cfg.WorkFailed, "error", err.Error())
				}
				failing = true
			case err == nil:
				if failing {
					log.Info(cfg.Name + " recovered")
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
