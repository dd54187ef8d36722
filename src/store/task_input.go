package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
)

// Task input for backends whose tasks run away from the runner (diego): the task's
// container fetches its payload and config from the API with a task-scoped token that
// the lease holder asked for (IssueInputToken). See migrations/0005_diego.sql.

var (
	// ErrInputUnauthorized: no such token for this task (or no such task).
	ErrInputUnauthorized = errors.New("task input token not valid for this task")
	// ErrInputExpired: the token was valid, but its task has finished.
	ErrInputExpired = errors.New("task has finished; its input is no longer served")
)

// maxInputTokensPerTask bounds the tokens one task accumulates (one per lease that asked).
const maxInputTokensPerTask = 20

// IssueInputToken makes a new input token for a task held by leaseID and returns it; only
// its SHA-256 is stored. Earlier tokens of the task stay valid (a CF task started under an
// earlier lease may still need its own). Errors: ErrNotFound, ErrLeaseLost,
// ErrTaskCancelled, *TaskStateError(ErrTaskFinished).
func (s *Store) IssueInputToken(ctx context.Context, taskID, leaseID string) (string, error) {
	token := NewToken()
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var status, holder string
		err := tx.QueryRowContext(ctx, `SELECT status, coalesce(lease_id, '') FROM tasks WHERE id = $1 FOR UPDATE`, taskID).Scan(&status, &holder)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read task %s: %w", taskID, err)
		}
		if holder != leaseID || (status != "preparing" && status != "running") {
			return s.leaseFailure(ctx, tx, taskID, leaseID)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM task_input_tokens WHERE token_sha256 IN (
				SELECT token_sha256 FROM task_input_tokens WHERE task_id = $1
				ORDER BY created_at DESC OFFSET $2)`, taskID, maxInputTokensPerTask-1); err != nil {
			return fmt.Errorf("prune input tokens of task %s: %w", taskID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO task_input_tokens (token_sha256, task_id) VALUES ($1, $2)`,
			HashToken(token), taskID); err != nil {
			return fmt.Errorf("store input token of task %s: %w", taskID, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// TaskInput is what a task's container fetches.
type TaskInput struct {
	Payload string
	Config  string
}

// TaskInputByToken returns the payload and config of a task for a bearer of one of its
// input tokens. The token's hash is compared in constant time against each of the task's.
// Errors: ErrInputUnauthorized (unknown task, wrong token, another task's token),
// ErrInputExpired (the task has finished).
func (s *Store) TaskInputByToken(ctx context.Context, taskID, token string) (TaskInput, error) {
	if token == "" {
		return TaskInput{}, ErrInputUnauthorized
	}
	want := HashToken(token)
	rows, err := s.db.QueryContext(ctx, `SELECT token_sha256 FROM task_input_tokens WHERE task_id = $1`, taskID)
	if err != nil {
		return TaskInput{}, fmt.Errorf("read input tokens of task %s: %w", taskID, err)
	}
	match := 0
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return TaskInput{}, fmt.Errorf("read input tokens of task %s: %w", taskID, err)
		}
		match |= subtle.ConstantTimeCompare(h, want)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return TaskInput{}, fmt.Errorf("read input tokens of task %s: %w", taskID, err)
	}
	if match != 1 {
		return TaskInput{}, ErrInputUnauthorized
	}
	var (
		status, payload string
		sealed          []byte
	)
	err = s.db.QueryRowContext(ctx, `SELECT t.status, t.payload, r.config_sealed
		FROM tasks t JOIN code_revisions r ON r.id = t.code_revision_id WHERE t.id = $1`, taskID).Scan(&status, &payload, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return TaskInput{}, ErrInputUnauthorized
	}
	if err != nil {
		return TaskInput{}, fmt.Errorf("read input of task %s: %w", taskID, err)
	}
	if (Task{Status: status}).Finished() {
		return TaskInput{}, ErrInputExpired
	}
	in := TaskInput{Payload: payload}
	if sealed != nil {
		var st CodeSettings
		if err := s.openSettings(&st, sealed, nil); err != nil {
			return TaskInput{}, fmt.Errorf("task %s: code revision config cannot be decrypted: %w", taskID, err)
		}
		if st.Config != nil {
			in.Config = *st.Config
		}
	}
	return in, nil
}

// TaskHasBrokerInstance tells whether a task's project was made by the service broker.
func (s *Store) TaskHasBrokerInstance(ctx context.Context, taskID string) (bool, error) {
	var ok bool
	err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM tasks t JOIN broker_instances b ON b.project_id = t.project_id
		WHERE t.id = $1)`, taskID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("read broker instance of task %s: %w", taskID, err)
	}
	return ok, nil
}
