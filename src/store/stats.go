package store

import (
	"context"
	"fmt"
)

// TaskStatuses is every status a task can have, in lifecycle order.
var TaskStatuses = []string{"queued", "preparing", "running", "complete", "error", "cancelled", "timeout", "killed"}

// CountTasksByStatus counts all tasks by status, for metrics. Every status is present.
func (s *Store) CountTasksByStatus(ctx context.Context) (map[string]int64, error) {
	counts := map[string]int64{}
	for _, st := range TaskStatuses {
		counts[st] = 0
	}
	rows, err := s.db.QueryContext(ctx, `SELECT status, count(*) FROM tasks GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count tasks by status: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count tasks by status: %w", err)
		}
		counts[st] = n
	}
	return counts, rows.Err()
}
