package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// maxLogCursorBytes bounds a stored log cursor (an opaque backend string).
const maxLogCursorBytes = 256

// ErrBadLogCursor: the cursor is empty or too long.
var ErrBadLogCursor = fmt.Errorf("log cursor must be 1 to %d bytes", maxLogCursorBytes)

// SetLogCursor records how far the backend's own log of a task held by leaseID has been
// appended to the task log. Errors: ErrBadLogCursor, ErrNotFound, ErrLeaseLost,
// ErrTaskCancelled, *TaskStateError(ErrTaskFinished).
func (s *Store) SetLogCursor(ctx context.Context, taskID, leaseID, cursor string) error {
	if cursor == "" || len(cursor) > maxLogCursorBytes {
		return ErrBadLogCursor
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO task_log_cursors (task_id, cursor)
		SELECT id, $3 FROM tasks WHERE id = $1 AND lease_id = $2 AND status IN ('preparing', 'running')
		ON CONFLICT (task_id) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()`, taskID, leaseID, cursor)
	if err != nil {
		return fmt.Errorf("store log cursor of task %s: %w", taskID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return s.leaseFailure(ctx, s.db, taskID, leaseID)
	}
	return nil
}

// LogCursor returns the last log cursor recorded for a task held by leaseID ("" when
// none). Errors: ErrNotFound, ErrLeaseLost.
func (s *Store) LogCursor(ctx context.Context, taskID, leaseID string) (string, error) {
	var holder string
	var cursor sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT coalesce(t.lease_id, ''), c.cursor
		FROM tasks t LEFT JOIN task_log_cursors c ON c.task_id = t.id WHERE t.id = $1`, taskID).Scan(&holder, &cursor)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read log cursor of task %s: %w", taskID, err)
	}
	if holder != leaseID {
		return "", ErrLeaseLost
	}
	return cursor.String, nil
}
