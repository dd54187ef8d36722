package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// What a task's state forbids; TaskStateError wraps one of these with the status seen.
var (
	// ErrTaskFinished: the task has already ended (cancel, progress).
	ErrTaskFinished = errors.New("task has already finished")
	// ErrTaskNotFinished: the task is still queued, preparing or running (retry).
	ErrTaskNotFinished = errors.New("task has not finished")
	// ErrTaskRetried: the task already has a retry (retry).
	ErrTaskRetried = errors.New("task has already been retried")
)

// TaskStateError reports an operation that the task's current state does not allow.
// errors.Is matches Err (one of ErrTaskFinished, ErrTaskNotFinished, ErrTaskRetried).
type TaskStateError struct {
	Err         error
	Status      string
	RetryTaskID string // set with ErrTaskRetried
}

func (e *TaskStateError) Error() string {
	if e.RetryTaskID != "" {
		return fmt.Sprintf("%v (status %s, retry %s)", e.Err, e.Status, e.RetryTaskID)
	}
	return fmt.Sprintf("%v (status %s)", e.Err, e.Status)
}

func (e *TaskStateError) Unwrap() error { return e.Err }

// activeStatuses are the non-terminal statuses, as an SQL list.
const activeStatuses = `('queued','preparing','running')`

// taskStatus reads a task's status, or ErrNotFound.
func (s *Store) taskStatus(ctx context.Context, projectID, taskID string) (string, error) {
	var status string
	err := s.db.QueryRowContext(ctx, `SELECT status FROM tasks WHERE project_id = $1 AND id = $2`, projectID, taskID).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read status of task %s: %w", taskID, err)
	}
	return status, nil
}

// CancelTask ends a queued, preparing or running task as cancelled (end_time now). A
// runner holding the task sees the status on its next heartbeat. Cancelling a cancelled
// task succeeds again; any other finished task gives *TaskStateError(ErrTaskFinished).
// The UPDATE is conditional on the status, so a task that a runner has just finished
// stays finished. Lease long-polls are woken once the cancel commits: it may free a
// max_concurrency slot (or make a Cancel lease due).
func (s *Store) CancelTask(ctx context.Context, projectID, taskID string) error {
	var cancelled bool
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tasks SET status = 'cancelled', end_time = now(), updated_at = now()
			WHERE project_id = $1 AND id = $2 AND status IN `+activeStatuses, projectID, taskID)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if cancelled = n == 1; !cancelled {
			return nil
		}
		s.notifyAfterCommit(tx)
		return nil
	})
	if err != nil {
		return fmt.Errorf("cancel task %s: %w", taskID, err)
	}
	if cancelled {
		return nil
	}
	status, err := s.taskStatus(ctx, projectID, taskID)
	if err != nil {
		return err
	}
	if status == "cancelled" {
		return nil
	}
	return &TaskStateError{Err: ErrTaskFinished, Status: status}
}

// SetTaskProgress sets percent and/or msg (nil leaves a field as it is) of a task that
// has not finished; a finished task gives *TaskStateError(ErrTaskFinished).
func (s *Store) SetTaskProgress(ctx context.Context, projectID, taskID string, percent *int, msg *string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE tasks SET percent = coalesce($3::int, percent), msg = coalesce($4::text, msg),
		updated_at = now() WHERE project_id = $1 AND id = $2 AND status IN `+activeStatuses, projectID, taskID, percent, msg)
	if err != nil {
		return fmt.Errorf("set progress of task %s: %w", taskID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("set progress of task %s: %w", taskID, err)
	} else if n == 1 {
		return nil
	}
	status, err := s.taskStatus(ctx, projectID, taskID)
	if err != nil {
		return err
	}
	return &TaskStateError{Err: ErrTaskFinished, Status: status}
}

// RetryTask queues a new task that repeats a finished one: the same code name (run at
// the live code's latest revision), payload, priority, timeout, cluster and label, after
// delay seconds. The new task has original_task_id = taskID and retry_count one more
// than the parent's; the parent gets retry_task_id. All of it is one transaction, with
// the parent row locked, so a task gets at most one retry.
//
// Errors: ErrNotFound (no such task in the project), *TaskStateError wrapping
// ErrTaskNotFinished (still queued/preparing/running) or ErrTaskRetried (already has a
// retry; RetryTaskID says which), *ErrCodeNotFound (the code was deleted).
//
// The runner's automatic retries use this too, with the code's retries_delay.
func (s *Store) RetryTask(ctx context.Context, projectID, taskID string, delay int) (string, error) {
	var newID string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var status, retryID string
		var prio int
		nt := NewTask{OriginalTaskID: taskID, Delay: delay, Priority: &prio}
		err := tx.QueryRowContext(ctx, `SELECT status, code_name, payload, priority, timeout, cluster, label, retry_count,
			coalesce(retry_task_id, '') FROM tasks WHERE project_id = $1 AND id = $2 FOR UPDATE`, projectID, taskID).
			Scan(&status, &nt.CodeName, &nt.Payload, &prio, &nt.Timeout, &nt.Cluster, &nt.Label, &nt.RetryCount, &retryID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read task: %w", err)
		}
		if !(Task{Status: status}).Finished() {
			return &TaskStateError{Err: ErrTaskNotFinished, Status: status}
		}
		if retryID != "" {
			return &TaskStateError{Err: ErrTaskRetried, Status: status, RetryTaskID: retryID}
		}
		nt.RetryCount++
		code, err := lookupCodeRef(ctx, tx, projectID, nt.CodeName)
		if err != nil {
			return err
		}
		if newID, err = insertTask(ctx, tx, projectID, code, nt); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tasks SET retry_task_id = $2, updated_at = now() WHERE id = $1`, taskID, newID); err != nil {
			return fmt.Errorf("link retry: %w", err)
		}
		s.notifyAfterCommit(tx)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("retry task %s: %w", taskID, err)
	}
	return newID, nil
}
