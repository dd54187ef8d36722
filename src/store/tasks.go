package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrCodeNotFound is returned when a task names a code the project does not have.
type ErrCodeNotFound struct{ Name string }

func (e *ErrCodeNotFound) Error() string { return fmt.Sprintf("code %q not found", e.Name) }

// Task is one IronWorker task.
type Task struct {
	ID             string
	ProjectID      string
	CodeID         string
	CodeName       string
	CodeRevisionID string
	CodeRev        int
	Status         string
	Priority       int
	Timeout        int
	Delay          int
	Cluster        string
	Label          string
	Payload        string
	Msg            string
	Percent        *int
	ExitCode       *int
	RunAt          time.Time
	StartTime      *time.Time
	EndTime        *time.Time
	RetryCount     int
	OriginalTaskID string
	RetryTaskID    string
	ScheduleID     string
	ScheduledFor   *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
	LogSize        int64
}

// Duration is the run time, once the task has started and ended.
func (t Task) Duration() *time.Duration {
	if t.StartTime == nil || t.EndTime == nil {
		return nil
	}
	d := t.EndTime.Sub(*t.StartTime)
	return &d
}

// Finished tells whether the status is terminal.
func (t Task) Finished() bool {
	switch t.Status {
	case "queued", "preparing", "running":
		return false
	}
	return true
}

// NewTask is a task to queue. Defaults are resolved by the caller except Priority:
// nil (or out of 0-2) means the code's default_priority, else 0.
type NewTask struct {
	CodeName       string
	Payload        string
	Priority       *int
	Timeout        int
	Delay          int
	Cluster        string
	Label          string
	ScheduleID     string
	ScheduledFor   *time.Time
	OriginalTaskID string
	RetryCount     int
}

const taskColumns = `t.id, t.project_id, t.code_id, t.code_name, t.code_revision_id, t.code_rev, t.status, t.priority,
	t.timeout, t.delay, t.cluster, t.label, t.payload, t.msg, t.percent, t.exit_code, t.run_at, t.start_time, t.end_time,
	t.retry_count, coalesce(t.original_task_id, ''), coalesce(t.retry_task_id, ''), coalesce(t.schedule_id, ''),
	t.scheduled_for, t.created_at, t.updated_at,
	coalesce((SELECT sum(length(l.data)) FROM task_log_chunks l WHERE l.task_id = t.id), 0)`

func scanTask(row rowScanner) (Task, error) {
	var t Task
	var percent, exit sql.NullInt64
	var start, end, schedFor sql.NullTime
	err := row.Scan(&t.ID, &t.ProjectID, &t.CodeID, &t.CodeName, &t.CodeRevisionID, &t.CodeRev, &t.Status, &t.Priority,
		&t.Timeout, &t.Delay, &t.Cluster, &t.Label, &t.Payload, &t.Msg, &percent, &exit, &t.RunAt, &start, &end,
		&t.RetryCount, &t.OriginalTaskID, &t.RetryTaskID, &t.ScheduleID, &schedFor, &t.CreatedAt, &t.UpdatedAt, &t.LogSize)
	if err != nil {
		return Task{}, err
	}
	t.Percent, t.ExitCode = nullInt(percent), nullInt(exit)
	t.StartTime, t.EndTime, t.ScheduledFor = nullTime(start), nullTime(end), nullTime(schedFor)
	t.RunAt, t.CreatedAt, t.UpdatedAt = t.RunAt.UTC(), t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	return t, nil
}

// GetTask returns a task of the project, or ErrNotFound (also for another project's task).
func (s *Store) GetTask(ctx context.Context, projectID, taskID string) (Task, error) {
	t, err := scanTask(s.db.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks t WHERE t.project_id = $1 AND t.id = $2`, projectID, taskID))
	if errors.Is(err, sql.ErrNoRows) {
		return Task{}, ErrNotFound
	}
	if err != nil {
		return Task{}, fmt.Errorf("get task %s: %w", taskID, err)
	}
	return t, nil
}

// QueueTasks inserts a batch of tasks in one transaction, in order: all or none. A code
// name the project does not have fails the whole batch with *ErrCodeNotFound.
func (s *Store) QueueTasks(ctx context.Context, projectID string, batch []NewTask) ([]string, error) {
	ids, _, err := s.QueueTasksOnce(ctx, projectID, nil, batch)
	return ids, err
}

// QueueTasksOnce is QueueTasks under an idempotency key (nil = none), recorded in the
// same transaction as the tasks. A repeat of an earlier request (same key, route and
// body hash, within IdempotencyTTL) queues nothing and returns the first request's ids
// with replay true; a different request under a used key is ErrIdempotencyMismatch.
func (s *Store) QueueTasksOnce(ctx context.Context, projectID string, idem *Idempotency, batch []NewTask) ([]string, bool, error) {
	ids := make([]string, 0, len(batch))
	replay := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if idem != nil {
			prev, again, err := claimIdempotency(ctx, tx, projectID, idem)
			if err != nil {
				return err
			}
			if again {
				ids, replay = prev, true
				return nil
			}
		}
		if err := checkQueuedQuota(ctx, tx, projectID, len(batch)); err != nil {
			return err
		}
		codes := map[string]codeRef{}
		for _, nt := range batch {
			code, ok := codes[nt.CodeName]
			if !ok {
				var err error
				if code, err = lookupCodeRef(ctx, tx, projectID, nt.CodeName); err != nil {
					return err
				}
				codes[nt.CodeName] = code
			}
			id, err := insertTask(ctx, tx, projectID, code, nt)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		if idem != nil {
			if err := recordIdempotency(ctx, tx, projectID, idem, ids); err != nil {
				return err
			}
		}
		return notifyQueued(ctx, tx)
	})
	if err != nil {
		return nil, false, fmt.Errorf("queue %d tasks: %w", len(batch), err)
	}
	if idem != nil && !replay {
		s.purgeAfterClaim(ctx)
	}
	return ids, replay, nil
}

// codeRef is what a new task needs of its code: the revision it runs and the defaults.
type codeRef struct {
	ID, Name, RevisionID string
	Rev                  int
	DefaultPriority      *int
	Retries              int
	RetriesDelay         int
}

func lookupCodeRef(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, projectID, name string) (codeRef, error) {
	var c codeRef
	var defPrio sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT c.id, c.name, c.latest_revision_id, c.rev, r.default_priority, r.retries, r.retries_delay
		FROM codes c JOIN code_revisions r ON r.id = c.latest_revision_id
		WHERE c.project_id = $1 AND c.name = $2 AND c.deleted_at IS NULL
		FOR SHARE OF c`, projectID, name).
		Scan(&c.ID, &c.Name, &c.RevisionID, &c.Rev, &defPrio, &c.Retries, &c.RetriesDelay)
	if errors.Is(err, sql.ErrNoRows) {
		return codeRef{}, &ErrCodeNotFound{Name: name}
	}
	if err != nil {
		return codeRef{}, fmt.Errorf("look up code %q: %w", name, err)
	}
	c.DefaultPriority = nullInt(defPrio)
	return c, nil
}

// insertTask adds one queued task. A schedule instant that already has its task is
// reported as ErrConflict (see the tasks_schedule_instant index).
func insertTask(ctx context.Context, tx *sql.Tx, projectID string, code codeRef, nt NewTask) (string, error) {
	priority := 0
	if code.DefaultPriority != nil && *code.DefaultPriority >= 0 && *code.DefaultPriority <= 2 {
		priority = *code.DefaultPriority
	}
	if nt.Priority != nil && *nt.Priority >= 0 && *nt.Priority <= 2 {
		priority = *nt.Priority
	}
	cluster := nt.Cluster
	if cluster == "" {
		cluster = "default"
	}
	id := NewID()
	var orig, sched any
	if nt.OriginalTaskID != "" {
		orig = nt.OriginalTaskID
	}
	if nt.ScheduleID != "" {
		sched = nt.ScheduleID
	}
	// clock_timestamp(), not now(): the tasks of one batch (one transaction) get
	// increasing times, so that lists (newest first) and the queue (oldest run_at
	// first) keep the batch's order instead of falling back to the random id order.
	// A priority that the project's plan does not allow (projects.allowed_priorities)
	// falls back to 0, as on hosted IronWorker; a disabled (deprovisioned) project
	// takes no task.
	res, err := tx.ExecContext(ctx, `INSERT INTO tasks
		(id, project_id, code_id, code_name, code_revision_id, code_rev, status, priority, timeout, delay, cluster, label,
		 payload, run_at, retry_count, original_task_id, schedule_id, scheduled_for, created_at, updated_at)
		SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::int, 'queued',
		       CASE WHEN p.allowed_priorities IS NULL OR $7::int = ANY (p.allowed_priorities) THEN $7::int ELSE 0 END,
		       $8::int, $9::int, $10::text,
		       $11::text, $12::text, c.ts + $9::int * interval '1 second', $13::int, $14::text, $15::text, $16::timestamptz,
		       c.ts, c.ts
		FROM (SELECT clock_timestamp() AS ts) c, projects p
		WHERE p.id = $2::text AND p.deleted_at IS NULL`,
		id, projectID, code.ID, code.Name, code.RevisionID, code.Rev, priority, nt.Timeout, nt.Delay, cluster, nt.Label,
		nt.Payload, nt.RetryCount, orig, sched, nt.ScheduledFor)
	if isUniqueViolation(err) {
		return "", ErrConflict
	}
	if err != nil {
		return "", fmt.Errorf("insert task: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return "", fmt.Errorf("insert task: %w", err)
	} else if n == 0 {
		return "", ErrNotFound
	}
	return id, nil
}

// TaskQueueChannel is the LISTEN/NOTIFY channel that wakes lease long-polls.
const TaskQueueChannel = "iron_tasks_queued"

func notifyQueued(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, TaskQueueChannel); err != nil {
		return fmt.Errorf("notify queue: %w", err)
	}
	return nil
}
