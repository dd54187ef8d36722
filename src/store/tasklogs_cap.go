package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Bounded task logs: a task stores at most maxLogBytes of output. The append that
// crosses the cap stores what still fits (cut at a UTF-8 boundary), then one
// truncation note; later appends are accepted and dropped. tasks.log_bytes and
// tasks.log_truncated (migration 0006) keep the count, updated under the task's row
// lock so that concurrent appends cannot overshoot.

// SetMaxTaskLogBytes sets the per-task log cap (0 or less = unlimited).
func (s *Store) SetMaxTaskLogBytes(n int64) {
	if n < 0 {
		n = 0
	}
	s.maxLogBytes.Store(n)
}

// TruncationNote is the line that ends a log cut at max bytes.
func TruncationNote(max int64) string {
	return fmt.Sprintf("\n[iron: log truncated: this task's log reached the limit of %d bytes; further output was dropped]\n", max)
}

// appendCapped appends data under the cap. leaseID "" = no lease check. ok false: no
// such task (or not under that lease); the caller tells which.
func (s *Store) appendCapped(ctx context.Context, taskID, leaseID string, stream int, data []byte, max int64) (ok bool, err error) {
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var used int64
		var truncated bool
		q := `SELECT log_bytes, log_truncated FROM tasks WHERE id = $1 FOR UPDATE`
		args := []any{taskID}
		if leaseID != "" {
			q = `SELECT log_bytes, log_truncated FROM tasks WHERE id = $1 AND lease_id = $2 FOR UPDATE`
			args = append(args, leaseID)
		}
		err := tx.QueryRowContext(ctx, q, args...).Scan(&used, &truncated)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		if truncated {
			return nil
		}
		keep := data
		over := used+int64(len(data)) > max
		if over {
			room := max - used
			if room < 0 {
				room = 0
			}
			keep = cutRune(data[:room])
		}
		insert := `INSERT INTO task_log_chunks (task_id, stream, data) VALUES ($1, $2, $3)`
		if len(keep) > 0 {
			if _, err := tx.ExecContext(ctx, insert, taskID, stream, keep); err != nil {
				return err
			}
		}
		if over {
			if _, err := tx.ExecContext(ctx, insert, taskID, stream, []byte(TruncationNote(max))); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE tasks SET log_bytes = log_bytes + $2, log_truncated = $3 WHERE id = $1`,
			taskID, len(keep), over)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("append log of task %s: %w", taskID, err)
	}
	return ok, nil
}

// cutRune drops a multi-byte character cut in two at the end of b.
func cutRune(b []byte) []byte {
	i := len(b) - 1
	for i > 0 && len(b)-i < utf8.UTFMax && !utf8.RuneStart(b[i]) {
		i--
	}
	if i >= 0 && !utf8.FullRune(b[i:]) {
		return b[:i]
	}
	return b
}
