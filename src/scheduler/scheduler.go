// Package scheduler fires due schedules. Every iron-api instance runs it; one leads at a
// time through a PostgreSQL advisory lock.
package scheduler

import (
	"context"
	"log/slog"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/store"
)

// Run fires due schedules until ctx ends.
func Run(ctx context.Context, st *store.Store, cfg config.Scheduler, log *slog.Logger) error {
	<-ctx.Done()
	return nil
}
