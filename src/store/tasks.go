package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
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
//
// Without a key, and for a project without max_queued_tasks, the whole request is one
// autocommitted statement (project check, code lookup under the code's shared delete lock
// (iron_live_code_locked), allowed priorities and
// the insert of every task): queueOneSQL for one task, queueBatchSQL for more (or to
// tell why queueOneSQL queued nothing). A project with that quota, or a request with a
// key, takes a transaction: claim the key, lock the project row so that concurrent
// requests of the project count one after the other, queueBatchSQL (which then counts
// the queued tasks under the lock), record the key, commit. Lease long-polls are woken
// after the commit (queueChanged), never by a NOTIFY inside it.
func (s *Store) QueueTasksOnce(ctx context.Context, projectID string, idem *Idempotency, batch []NewTask) ([]string, bool, error) {
	return s.QueueTasksChecked(ctx, projectID, idem, batch, nil)
}

// ErrQuotasChanged: the project's max_payload_bytes or max_timeout_seconds are not the
// ones the batch was checked against (QueueTasksChecked); nothing was queued.
var ErrQuotasChanged = errors.New("the project's quotas changed")

// QueueTasksChecked is QueueTasksOnce for a batch that the caller checked against
// quotas (max_payload_bytes and max_timeout_seconds; nil = not checked) read earlier,
// possibly cached: the tasks are queued only if the project still has those limits,
// in the same statement, else nothing is and the answer is ErrQuotasChanged (read
// them again, check again, retry). max_queued_tasks and allowed_priorities are always
// the project's current ones.
func (s *Store) QueueTasksChecked(ctx context.Context, projectID string, idem *Idempotency, batch []NewTask, checked *Quotas) ([]string, bool, error) {
	if len(batch) == 0 {
		return []string{}, false, nil
	}
	// A project known (from checked) to have max_queued_tasks goes to the transaction.
	knownQuota := checked != nil && checked.MaxQueuedTasks != nil
	if idem == nil && len(batch) == 1 && !knownQuota {
		id, ok, err := s.queueOne(ctx, projectID, batch[0], checked)
		if err != nil {
			return nil, false, fmt.Errorf("queue 1 task: %w", err)
		}
		if ok {
			s.queueChanged()
			return []string{id}, false, nil
		}
		// Not queued: the batch statement below tells why (or queues it after all).
	}
	args, ids := queueBatchArgs(projectID, batch)
	args = append(args, checkedQuotaArgs(checked)...)
	if idem == nil && !knownQuota {
		res, err := s.queueBatch(ctx, nil, args, false)
		if err == nil && !res.needLock {
			err = res.err(len(batch))
		}
		if err != nil {
			return nil, false, fmt.Errorf("queue %d tasks: %w", len(batch), err)
		}
		if !res.needLock {
			s.queueChanged()
			return ids, false, nil
		}
	}
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
		if err := lockQueuedQuota(ctx, tx, projectID); err != nil {
			return err
		}
		res, err := s.queueBatch(ctx, tx, args, true)
		if err == nil {
			err = res.err(len(batch))
		}
		if err != nil {
			return err
		}
		if idem != nil {
			if err := recordIdempotency(ctx, tx, projectID, idem, ids); err != nil {
				return err
			}
		}
		s.notifyAfterCommit(tx)
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("queue %d tasks: %w", len(batch), err)
	}
	if idem != nil && !replay {
		s.purgeAfterClaim(ctx)
	}
	return ids, replay, nil
}

// queueBatchSQL queues a batch of tasks in one statement, or none of them. $1 is the
// project; $2-$13 are one array per column, one element per task in batch order (see
// queueBatchArgs); $14-$16 the quotas the caller checked the batch against (see
// checkedQuotaArgs); $17 tells whether the caller holds the project row's lock (taken
// by lockQueuedQuota): only then is max_queued_tasks counted (a count of this
// statement's snapshot, taken after the lock was granted). The answer is one row:
// whether the project is live, whether its quotas are the checked ones, its
// max_queued_tasks, the queued count (-1 when it was not counted), the first code
// name (in batch order) that the project does not have, and how many tasks were
// inserted: all of them, or none when any check failed.
//
// The tasks' times are one clock_timestamp() plus a microsecond per position, so that
// lists (newest first) and the queue (oldest run_at first) keep the batch's order, as
// insertTask's clock_timestamp() per row does. Each code is checked live again under a
// shared advisory lock (iron_live_code_locked, migration 0009), so that a concurrent
// delete of the code either waits for these tasks (and then cancels them) or wins, and
// the batch finds no code. A priority outside
// 0-2 means the code's default_priority (else 0); a priority the project's plan does
// not allow (projects.allowed_priorities) falls back to 0; a disabled (deprovisioned)
// project takes no task.
const queueBatchSQL = `WITH p AS (
	SELECT allowed_priorities, max_queued_tasks,
	       NOT $14::bool OR (max_payload_bytes IS NOT DISTINCT FROM $15::int
	                         AND max_timeout_seconds IS NOT DISTINCT FROM $16::int) AS checked
	FROM projects WHERE id = $1::text AND deleted_at IS NULL
), cd AS MATERIALIZED (
	SELECT c.id, c.name, c.latest_revision_id, c.rev, r.default_priority
	FROM codes c JOIN code_revisions r ON r.id = c.latest_revision_id
	WHERE c.project_id = $1::text AND c.name = ANY ($3::text[]) AND c.deleted_at IS NULL
	  AND iron_live_code_locked(c.id)
), t AS (
	SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::int[], $8::text[], $9::text[],
	                     $10::int[], $11::text[], $12::text[], $13::text[])
		WITH ORDINALITY AS t(id, code_name, payload, priority, timeout, delay, cluster, label,
		                     retry_count, original_task_id, schedule_id, scheduled_for, ord)
), missing AS (
	SELECT t.code_name FROM t WHERE NOT EXISTS (SELECT 1 FROM cd WHERE cd.name = t.code_name) ORDER BY t.ord LIMIT 1
), quota AS (
	SELECT CASE WHEN p.max_queued_tasks IS NULL OR NOT $17::bool THEN -1
	            ELSE (SELECT count(*) FROM tasks WHERE project_id = $1::text AND status = 'queued') END AS queued
	FROM p
), ok AS (
	SELECT 1 FROM p, quota
	WHERE p.checked AND NOT EXISTS (SELECT 1 FROM missing)
	  AND (p.max_queued_tasks IS NULL OR (quota.queued >= 0 AND quota.queued + cardinality($2::text[]) <= p.max_queued_tasks))
), ins AS (
	INSERT INTO tasks
		(id, project_id, code_id, code_name, code_revision_id, code_rev, status, priority, timeout, delay, cluster, label,
		 payload, run_at, retry_count, original_task_id, schedule_id, scheduled_for, created_at, updated_at)
	SELECT t.id, $1::text, cd.id, cd.name, cd.latest_revision_id, cd.rev, 'queued',
	       CASE WHEN p.allowed_priorities IS NULL OR x.prio = ANY (p.allowed_priorities) THEN x.prio ELSE 0 END,
	       t.timeout, t.delay, t.cluster, t.label, t.payload,
	       x.at + t.delay * interval '1 second', t.retry_count, nullif(t.original_task_id, ''), nullif(t.schedule_id, ''),
	       nullif(t.scheduled_for, '')::timestamptz, x.at, x.at
	FROM t JOIN cd ON cd.name = t.code_name CROSS JOIN p CROSS JOIN (SELECT clock_timestamp() AS ts) now,
	     LATERAL (SELECT CASE WHEN t.priority BETWEEN 0 AND 2 THEN t.priority
	                          WHEN cd.default_priority BETWEEN 0 AND 2 THEN cd.default_priority ELSE 0 END AS prio,
	                     now.ts + (t.ord - 1) * interval '1 microsecond' AS at) x
	WHERE EXISTS (SELECT 1 FROM ok)
	RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM p), coalesce((SELECT checked FROM p), false), (SELECT max_queued_tasks FROM p), coalesce((SELECT queued FROM quota), -1),
       coalesce((SELECT code_name FROM missing), ''), (SELECT count(*) FROM ins)`

// queueOneSQL is queueBatchSQL for the common request of one task without a key: a
// plain INSERT … SELECT that inserts the task, or nothing when anything is amiss (the
// project is gone, has max_queued_tasks or other quotas than $14-$16 say, or has no
// such code); queueBatchSQL then says which. Same rules, same lock on the code.
const queueOneSQL = `INSERT INTO tasks
	(id, project_id, code_id, code_name, code_revision_id, code_rev, status, priority, timeout, delay, cluster, label,
	 payload, run_at, retry_count, original_task_id, schedule_id, scheduled_for, created_at, updated_at)
SELECT $2::text, $1::text, c.id, c.name, c.latest_revision_id, c.rev, 'queued',
       CASE WHEN p.allowed_priorities IS NULL OR x.prio = ANY (p.allowed_priorities) THEN x.prio ELSE 0 END,
       $6::int, $7::int, $8::text, $9::text, $4::text,
       x.at + $7::int * interval '1 second', $10::int, nullif($11::text, ''), nullif($12::text, ''),
       nullif($13::text, '')::timestamptz, x.at, x.at
FROM projects p, codes c JOIN code_revisions r ON r.id = c.latest_revision_id,
     LATERAL (SELECT CASE WHEN $5::int BETWEEN 0 AND 2 THEN $5::int
                          WHEN r.default_priority BETWEEN 0 AND 2 THEN r.default_priority ELSE 0 END AS prio,
                     clock_timestamp() AS at) x
WHERE p.id = $1::text AND p.deleted_at IS NULL AND p.max_queued_tasks IS NULL
  AND (NOT $14::bool OR (p.max_payload_bytes IS NOT DISTINCT FROM $15::int
                         AND p.max_timeout_seconds IS NOT DISTINCT FROM $16::int))
  AND c.project_id = $1::text AND c.name = $3::text AND c.deleted_at IS NULL
  AND iron_live_code_locked(c.id)`

// queueOne runs queueOneSQL: ok tells whether the task was queued.
func (s *Store) queueOne(ctx context.Context, projectID string, nt NewTask, checked *Quotas) (string, bool, error) {
	args, ids := queueBatchArgs(projectID, []NewTask{nt})
	for i := 1; i < len(args); i++ { // one-element arrays → their element
		switch a := args[i].(type) {
		case pq.StringArray:
			args[i] = a[0]
		case pq.Int64Array:
			args[i] = a[0]
		}
	}
	args = append(args, checkedQuotaArgs(checked)...)
	stmt, err := s.stmt(ctx, nil, queueOneSQL)
	if err != nil {
		return "", false, err
	}
	res, err := stmt.ExecContext(ctx, args...)
	if isUniqueViolation(err) {
		return "", false, ErrConflict
	}
	if err != nil {
		return "", false, fmt.Errorf("insert task: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return "", false, fmt.Errorf("insert task: %w", err)
	}
	return ids[0], n == 1, nil
}

// queueBatchArgs turns a batch into queueBatchSQL's arguments and the new tasks' ids.
func queueBatchArgs(projectID string, batch []NewTask) ([]any, []string) {
	n := len(batch)
	ids := make([]string, n)
	names, payloads, clusters, labels := make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n)
	origs, scheds, schedFor := make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n)
	prios, timeouts, delays, retries := make(pq.Int64Array, n), make(pq.Int64Array, n), make(pq.Int64Array, n), make(pq.Int64Array, n)
	for i, nt := range batch {
		ids[i] = NewID()
		names[i], payloads[i], labels[i] = nt.CodeName, nt.Payload, nt.Label
		clusters[i] = nt.Cluster
		if clusters[i] == "" {
			clusters[i] = "default"
		}
		prios[i] = -1 // the code's default
		if nt.Priority != nil && *nt.Priority >= 0 && *nt.Priority <= 2 {
			prios[i] = int64(*nt.Priority)
		}
		timeouts[i], delays[i], retries[i] = int64(nt.Timeout), int64(nt.Delay), int64(nt.RetryCount)
		origs[i], scheds[i] = nt.OriginalTaskID, nt.ScheduleID
		if nt.ScheduledFor != nil {
			schedFor[i] = nt.ScheduledFor.UTC().Format(time.RFC3339Nano)
		}
	}
	return []any{projectID, pq.StringArray(ids), names, payloads, prios, timeouts, delays, clusters, labels,
		retries, origs, scheds, schedFor}, ids
}

// checkedQuotaArgs are queueBatchSQL's $14-$16 for the quotas a batch was checked
// against (nil: none, queue whatever the project's limits).
func checkedQuotaArgs(q *Quotas) []any {
	if q == nil {
		return []any{false, nil, nil}
	}
	return []any{true, q.MaxPayloadBytes, q.MaxTimeoutSeconds} // a nil *int is NULL
}

// queueBatchResult is queueBatchSQL's answer.
type queueBatchResult struct {
	live        bool
	checked     bool
	maxQueued   sql.NullInt64
	queued      int64
	missingCode string
	inserted    int
	// needLock: the project has max_queued_tasks and the caller did not hold its lock,
	// so nothing was counted nor inserted.
	needLock bool
}

// err tells why nothing was inserted (nil when the batch of n is in).
func (r queueBatchResult) err(n int) error {
	switch {
	case !r.live:
		return ErrNotFound
	case !r.checked:
		return ErrQuotasChanged
	case r.maxQueued.Valid && r.queued >= 0 && int(r.queued)+n > int(r.maxQueued.Int64):
		return &QuotaError{Limit: "max_queued_tasks", Max: int(r.maxQueued.Int64), Current: int(r.queued), Adding: n}
	case r.missingCode != "":
		return &ErrCodeNotFound{Name: r.missingCode}
	case r.inserted != n:
		return fmt.Errorf("inserted %d of %d tasks", r.inserted, n)
	}
	return nil
}

// queueBatch runs queueBatchSQL, in tx when not nil (with the project row locked:
// locked true), else on its own.
func (s *Store) queueBatch(ctx context.Context, tx *sql.Tx, args []any, locked bool) (queueBatchResult, error) {
	stmt, err := s.stmt(ctx, tx, queueBatchSQL)
	if err != nil {
		return queueBatchResult{}, err
	}
	var r queueBatchResult
	err = stmt.QueryRowContext(ctx, append(args, locked)...).
		Scan(&r.live, &r.checked, &r.maxQueued, &r.queued, &r.missingCode, &r.inserted)
	if isUniqueViolation(err) {
		return queueBatchResult{}, ErrConflict
	}
	if err != nil {
		return queueBatchResult{}, fmt.Errorf("insert tasks: %w", err)
	}
	r.needLock = r.live && r.checked && r.maxQueued.Valid && !locked
	return r, nil
}

// lockQueuedQuota holds the project's row until tx ends when the project has
// max_queued_tasks, so that concurrent queueing requests of the project count one after
// the other (queueBatchSQL counts in a statement of its own, after the lock). Nothing
// when the project has no such quota, or is gone (queueBatchSQL reports that).
func lockQueuedQuota(ctx context.Context, tx *sql.Tx, projectID string) error {
	var discard sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT max_queued_tasks FROM projects
		WHERE id = $1 AND deleted_at IS NULL AND max_queued_tasks IS NOT NULL FOR UPDATE`, projectID).Scan(&discard)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("lock project quota: %w", err)
	}
	return nil
}

// codeRef is what a new task needs of its code: the revision it runs and the defaults.
type codeRef struct {
	ID, Name, RevisionID string
	Rev                  int
	DefaultPriority      *int
	Retries              int
	RetriesDelay         int
}

// taskDefaults is a new task's priority (its own if 0-2, else its code's default if
// 0-2, else 0) and cluster ("default" when empty), as queueBatchSQL decides them too.
func taskDefaults(code codeRef, priority *int, cluster string) (int, string) {
	p := 0
	if code.DefaultPriority != nil && *code.DefaultPriority >= 0 && *code.DefaultPriority <= 2 {
		p = *code.DefaultPriority
	}
	if priority != nil && *priority >= 0 && *priority <= 2 {
		p = *priority
	}
	if cluster == "" {
		cluster = "default"
	}
	return p, cluster
}

// lookupCodeRef reads a live code by name, under its shared delete lock until the
// transaction ends (iron_live_code_locked).
func lookupCodeRef(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, projectID, name string) (codeRef, error) {
	var c codeRef
	var defPrio sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT c.id, c.name, c.latest_revision_id, c.rev, r.default_priority, r.retries, r.retries_delay
		FROM codes c JOIN code_revisions r ON r.id = c.latest_revision_id
		WHERE c.project_id = $1 AND c.name = $2 AND c.deleted_at IS NULL AND iron_live_code_locked(c.id)`, projectID, name).
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
	priority, cluster := taskDefaults(code, nt.Priority, nt.Cluster)
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
