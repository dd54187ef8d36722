package store

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/lib/pq"
)

// Log streams, as stored in task_log_chunks.stream.
const (
	LogStdout = 1
	LogStderr = 2
)

// ErrLogNotFound: the task exists and has not finished, but has no log output yet (of
// the streams asked for). Clients waiting for a log retry on the 404 this becomes.
var ErrLogNotFound = errors.New("log not found")

// AppendTaskLog adds one piece of a task's output (stream LogStdout or LogStderr). Empty
// data is a no-op. ErrNotFound when the task does not exist.
func (s *Store) AppendTaskLog(ctx context.Context, taskID string, stream int, data []byte) error {
	if stream != LogStdout && stream != LogStderr {
		return fmt.Errorf("append log of task %s: invalid stream %d", taskID, stream)
	}
	if len(data) == 0 {
		return nil
	}
	if max := s.maxLogBytes.Load(); max > 0 {
		ok, err := s.appendCapped(ctx, taskID, "", stream, data, max)
		if err == nil && !ok {
			return ErrNotFound
		}
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO task_log_chunks (task_id, stream, data) VALUES ($1, $2, $3)`, taskID, stream, data)
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "23503" { // foreign_key_violation
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("append log of task %s: %w", taskID, err)
	}
	return nil
}

// TaskLog writes the task's log to w: every chunk in append order (stdout and stderr
// interleaved), or only stdout. Rows are streamed one chunk at a time, never
// concatenated in memory or in SQL.
//
// Errors: ErrNotFound when the project has no such task; ErrLogNotFound when nothing
// was written and the task has not finished (so output may still come). A finished task
// without output writes nothing and returns nil: clients that retry on 404 (iron_go3
// WaitForTaskLog retries forever) would otherwise never stop. This relies on runners
// appending all output before they mark a task finished.
func (s *Store) TaskLog(ctx context.Context, projectID, taskID string, stdoutOnly bool, w io.Writer) error {
	// The status is read before the chunks: a task seen unfinished may have finished
	// since, which at worst answers "not yet" once more; the other order could answer
	// an empty log for output appended just before the task finished.
	status, err := s.taskStatus(ctx, projectID, taskID)
	if err != nil {
		return err
	}
	q := `SELECT data FROM task_log_chunks WHERE task_id = $1 ORDER BY seq`
	if stdoutOnly {
		q = `SELECT data FROM task_log_chunks WHERE task_id = $1 AND stream = 1 ORDER BY seq`
	}
	rows, err := s.db.QueryContext(ctx, q, taskID)
	if err != nil {
		return fmt.Errorf("read log of task %s: %w", taskID, err)
	}
	defer rows.Close()
	chunks := 0
	var data []byte
	for rows.Next() {
		if err := rows.Scan(&data); err != nil {
			return fmt.Errorf("read log of task %s: %w", taskID, err)
		}
		chunks++
		if _, err := w.Write(data); err != nil {
			return fmt.Errorf("write log of task %s: %w", taskID, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read log of task %s: %w", taskID, err)
	}
	if chunks == 0 && !(Task{Status: status}).Finished() {
		return ErrLogNotFound
	}
	return nil
}
