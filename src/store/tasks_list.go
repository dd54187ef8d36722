package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// TaskFilter selects tasks of a project for ListTasks. Zero fields do not filter.
type TaskFilter struct {
	CodeName string
	Label    string
	Cluster  string
	// Statuses are OR-ed; empty means every status.
	Statuses []string
	// CreatedFrom (inclusive) and CreatedBefore (exclusive) bound created_at.
	CreatedFrom   *time.Time
	CreatedBefore *time.Time
	Offset        int
	Limit         int // 0 means 30
}

// ListTasks returns the project's tasks that match f, newest first. The WHERE always
// starts with project_id and the ORDER BY is the tasks_project_created index's order, so
// the page is read from that index without sorting.
func (s *Store) ListTasks(ctx context.Context, projectID string, f TaskFilter) ([]Task, error) {
	where := []string{"t.project_id = $1"}
	args := []any{projectID}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.CodeName != "" {
		add("t.code_name = $%d", f.CodeName)
	}
	if f.Label != "" {
		add("t.label = $%d", f.Label)
	}
	if f.Cluster != "" {
		add("t.cluster = $%d", f.Cluster)
	}
	if len(f.Statuses) > 0 {
		add("t.status = ANY($%d::text[])", pq.Array(f.Statuses))
	}
	if f.CreatedFrom != nil {
		add("t.created_at >= $%d", *f.CreatedFrom)
	}
	if f.CreatedBefore != nil {
		add("t.created_at < $%d", *f.CreatedBefore)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 30
	}
	offset := max(f.Offset, 0)
	q := `SELECT ` + taskColumns + ` FROM tasks t WHERE ` + strings.Join(where, " AND ") +
		fmt.Sprintf(` ORDER BY t.created_at DESC, t.id DESC LIMIT %d OFFSET %d`, limit, offset)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	tasks := []Task{}
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("list tasks: %w", err)
		}
		tasks = append(tasks, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return tasks, nil
}
