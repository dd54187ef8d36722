package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/lib/pq"
)

// What the code endpoints need beyond saving and reading one code: listing, revisions,
// archives, deletion, pausing, per-code task counts and bulk cancellation.

// ListCodes returns the live codes of a project ordered by name.
func (s *Store) ListCodes(ctx context.Context, projectID string, offset, limit int) ([]Code, error) {
	rows, err := s.db.QueryContext(ctx, codeSelect+` WHERE c.deleted_at IS NULL AND c.project_id = $1
		ORDER BY c.name, c.id OFFSET $2 LIMIT $3`, projectID, offset, limit)
	if err != nil {
		return nil, fmt.Errorf("list codes: %w", err)
	}
	defer rows.Close()
	codes := []Code{}
	for rows.Next() {
		c, err := s.scanCode(rows)
		if err != nil {
			return nil, fmt.Errorf("list codes: %w", err)
		}
		codes = append(codes, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list codes: %w", err)
	}
	return codes, nil
}

// liveCodeName returns the name of a live code of the project, or ErrNotFound.
func liveCodeName(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, projectID, codeID string) (string, error) {
	var name string
	err := q.QueryRowContext(ctx, `SELECT name FROM codes WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL`,
		projectID, codeID).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("find code %s: %w", codeID, err)
	}
	return name, nil
}

// ListCodeRevisions returns the revisions of a live code, newest first, or ErrNotFound.
func (s *Store) ListCodeRevisions(ctx context.Context, projectID, codeID string, offset, limit int) ([]CodeRevision, error) {
	name, err := liveCodeName(ctx, s.db, projectID, codeID)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+revisionColumns+` FROM code_revisions r
		WHERE r.project_id = $1 AND r.code_id = $2 ORDER BY r.rev DESC OFFSET $3 LIMIT $4`, projectID, codeID, offset, limit)
	if err != nil {
		return nil, fmt.Errorf("list revisions of code %s: %w", codeID, err)
	}
	defer rows.Close()
	revs := []CodeRevision{}
	for rows.Next() {
		r, err := s.scanRevision(rows)
		if err != nil {
			return nil, fmt.Errorf("list revisions of code %s: %w", codeID, err)
		}
		r.Name, r.Settings.Name = name, name
		revs = append(revs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list revisions of code %s: %w", codeID, err)
	}
	return revs, nil
}

// GetCodeRevision returns revision rev (0 = the latest) of a live code, or ErrNotFound.
func (s *Store) GetCodeRevision(ctx context.Context, projectID, codeID string, rev int) (CodeRevision, error) {
	var row *sql.Row
	if rev <= 0 {
		row = s.db.QueryRowContext(ctx, `SELECT `+revisionColumns+`, c.name FROM codes c
			JOIN code_revisions r ON r.id = c.latest_revision_id
			WHERE c.project_id = $1 AND c.id = $2 AND c.deleted_at IS NULL`, projectID, codeID)
	} else {
		row = s.db.QueryRowContext(ctx, `SELECT `+revisionColumns+`, c.name FROM codes c
			JOIN code_revisions r ON r.code_id = c.id
			WHERE c.project_id = $1 AND c.id = $2 AND c.deleted_at IS NULL AND r.rev = $3`, projectID, codeID, rev)
	}
	var name string
	r, err := s.scanRevision(row, &name)
	if errors.Is(err, sql.ErrNoRows) {
		return CodeRevision{}, ErrNotFound
	}
	if err != nil {
		return CodeRevision{}, fmt.Errorf("get revision %d of code %s: %w", rev, codeID, err)
	}
	r.Name, r.Settings.Name = name, name
	return r, nil
}

// WriteArchive streams the zip of a revision to w one stored chunk (1 MiB) at a time, so
// that memory stays bounded and no connection is held while w is slow. It returns the
// bytes written.
func (s *Store) WriteArchive(ctx context.Context, revisionID string, w io.Writer) (int64, error) {
	var total int64
	for seq := 0; ; seq++ {
		var data []byte
		err := s.db.QueryRowContext(ctx, `SELECT data FROM code_archive_chunks WHERE revision_id = $1 AND seq = $2`,
			revisionID, seq).Scan(&data)
		if errors.Is(err, sql.ErrNoRows) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("read archive chunk %d of revision %s: %w", seq, revisionID, err)
		}
		n, err := w.Write(data)
		total += int64(n)
		if err != nil {
			return total, fmt.Errorf("write archive: %w", err)
		}
	}
}

// DeleteCode soft-deletes a live code: it disappears from the API, its name becomes free
// (a new upload makes a new code id) and its queued tasks are cancelled. Revisions,
// archives and past tasks are kept. It returns how many tasks were cancelled.
func (s *Store) DeleteCode(ctx context.Context, projectID, codeID string) (int64, error) {
	var cancelled int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Waits for the enqueues of the code under way; later ones find it deleted
		// (iron_live_code_locked, migration 0009).
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('code-delete/' || $1::text, 0))`, codeID); err != nil {
			return fmt.Errorf("lock code: %w", err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE codes SET deleted_at = now(), updated_at = now()
			WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL`, projectID, codeID)
		if err != nil {
			return fmt.Errorf("delete code: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		cancelled, err = s.cancelCodeTasks(ctx, tx, projectID, codeID, []string{"queued"})
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return 0, fmt.Errorf("delete code %s: %w", codeID, err)
	}
	return cancelled, err
}

// CancelCodeTasks cancels every queued, preparing or running task of a live code and
// returns how many, or ErrNotFound.
func (s *Store) CancelCodeTasks(ctx context.Context, projectID, codeID string) (int64, error) {
	var cancelled int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := liveCodeName(ctx, tx, projectID, codeID); err != nil {
			return err
		}
		var err error
		cancelled, err = s.cancelCodeTasks(ctx, tx, projectID, codeID, []string{"queued", "preparing", "running"})
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return 0, fmt.Errorf("cancel tasks of code %s: %w", codeID, err)
	}
	return cancelled, err
}

// cancelCodeTasks cancels the code's tasks in statuses and, when it cancelled any,
// wakes lease long-polls once the transaction commits.
func (s *Store) cancelCodeTasks(ctx context.Context, tx *sql.Tx, projectID, codeID string, statuses []string) (int64, error) {
	res, err := tx.ExecContext(ctx, `UPDATE tasks SET status = 'cancelled', end_time = now(), updated_at = now()
		WHERE project_id = $1 AND code_id = $2 AND status = ANY($3::text[])
		  -- the two partial indexes by code: tasks_code_queue, tasks_code_active
		  AND (status = 'queued' OR status IN ('preparing', 'running'))`, projectID, codeID, pq.Array(statuses))
	if err != nil {
		return 0, fmt.Errorf("cancel tasks: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("cancel tasks: %w", err)
	}
	if n > 0 {
		// A cancelled task may free a max_concurrency slot (of its code or project).
		s.notifyAfterCommit(tx)
	}
	return n, nil
}

// SetCodePaused pauses or resumes the task queue of a live code. While paused its queued
// tasks stay queued (the lease skips them) and the API shows max_concurrency -1. Resuming
// wakes the lease long-polls. Returns ErrNotFound for no such live code.
func (s *Store) SetCodePaused(ctx context.Context, projectID, codeID string, paused bool) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE codes SET paused = $3 WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL`,
			projectID, codeID, paused)
		if err != nil {
			return fmt.Errorf("set paused: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if !paused {
			s.notifyAfterCommit(tx)
			return nil
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("pause code %s: %w", codeID, err)
	}
	return err
}

// CodeTaskCounts counts the tasks of a live code created in [from, to) by status (to nil =
// no upper bound); every status in TaskStatuses is present. ErrNotFound when there is no
// such live code.
func (s *Store) CodeTaskCounts(ctx context.Context, projectID, codeID string, from time.Time, to *time.Time) (map[string]int64, error) {
	if _, err := liveCodeName(ctx, s.db, projectID, codeID); err != nil {
		return nil, err
	}
	counts := make(map[string]int64, len(TaskStatuses))
	for _, st := range TaskStatuses {
		counts[st] = 0
	}
	rows, err := s.db.QueryContext(ctx, `SELECT status, count(*) FROM tasks
		WHERE project_id = $1 AND code_id = $2 AND created_at >= $3 AND ($4::timestamptz IS NULL OR created_at < $4) GROUP BY status`,
		projectID, codeID, from, to)
	if err != nil {
		return nil, fmt.Errorf("count tasks of code %s: %w", codeID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count tasks of code %s: %w", codeID, err)
		}
		counts[st] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count tasks of code %s: %w", codeID, err)
	}
	return counts, nil
}
