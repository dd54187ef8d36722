package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/ironcf/ironworker-release/src/secrets"
)

// The runner protocol's SQL: leasing queued tasks, heartbeats, progress and log appends
// by the lease holder, completion with the code's retry policy, and the reaper that
// takes back tasks whose lease expired.
//
// Lifecycle as the store records it:
//
//	queued ──lease──▶ preparing ──heartbeat(running)──▶ running ──complete──▶ final status
//	                      │                                 │
//	                      └──── lease expired (reaper) ─────┘
//	                              · an adoptable backend_ref: back to queued with the ref,
//	                                the next lease hands it over (Adopt) and keeps start_time
//	                              · never reached running: back to queued (at most
//	                                MaxLeaseAttempts leases, then killed)
//	                              · running, nothing adoptable: killed "runner lost", retried
//
// A user's cancel (CancelTask) sets 'cancelled' at once; the holder learns it from its
// next heartbeat or progress call (ErrTaskCancelled), and its complete cannot change it.
// A cancelled task that may still run on its backend with nobody holding it (cancelled
// while queued for adoption, or its holder was lost) is handed out as a Cancel lease so
// that a runner stops it.

var (
	// ErrLeaseLost: the lease id is not (or no longer) the task's; another runner holds
	// the task or the reaper took it back. The runner must stop reporting on it.
	ErrLeaseLost = errors.New("lease is not held")
	// ErrTaskCancelled: the lease is held but the user cancelled the task; the runner
	// must stop the task and complete it (the status stays cancelled).
	ErrTaskCancelled = errors.New("task was cancelled")
)

// Task lease columns are set by LeaseTasks and cleared by the reaper; the final status
// keeps lease_id so that late calls of the last holder are told apart from strangers.

// LeaseRequest asks for up to MaxTasks tasks for one runner.
type LeaseRequest struct {
	RunnerID string
	MaxTasks int
	// Duration is how long the lease lasts without a heartbeat.
	Duration time.Duration
}

// LeasedTask is one task handed to a runner, with everything it needs to run it.
type LeasedTask struct {
	LeaseID   string
	ExpiresAt time.Time
	Task      Task
	// Revision is the code revision the task was queued with, config and env_vars
	// decrypted.
	Revision CodeRevision
	// BackendRef is the reference a previous holder recorded; Adopt is set when the
	// task may still run there and the runner must adopt it instead of starting it.
	BackendRef string
	Adopt      bool
	// Cancel: the user cancelled the task while nobody held it and it may still run
	// under BackendRef: adopt it only to stop it, then complete it (it stays cancelled).
	Cancel bool
	// Attempt counts the leases of this task, this one included.
	Attempt int
}

// leaseLockKey serialises the max_concurrency check of one code across concurrent leases.
func leaseLockKey(codeID string) string { return "lease/code/" + codeID }

// projectLeaseLockKey serialises the max_concurrency check of one project (its plan
// quota, projects.max_concurrency) across concurrent leases.
func projectLeaseLockKey(projectID string) string { return "lease/project/" + projectID }

// activeCount counts the tasks of code $1 that run (or may run) on a backend: held by a
// runner, or queued for adoption with a backend ref. Two index-backed counts, so that
// the code's (possibly long) queue is not read.
const activeCount = `SELECT (SELECT count(*) FROM tasks WHERE code_id = $1 AND status IN ('preparing','running'))
	+ (SELECT count(*) FROM tasks WHERE code_id = $1 AND status = 'queued' AND backend_ref IS NOT NULL)`

// activeProjectCount is activeCount for the tasks of project $1.
const activeProjectCount = `SELECT (SELECT count(*) FROM tasks WHERE project_id = $1 AND status IN ('preparing','running'))
	+ (SELECT count(*) FROM tasks WHERE project_id = $1 AND status = 'queued' AND backend_ref IS NOT NULL)`

// blockedProjects lists the projects at their max_concurrency (a broker plan's quota),
// counting their active tasks as activeProjectCount does; like blockedCodes it reads
// the active tasks only, never the queue, and not even those while no project has a
// max_concurrency (one probe of projects_capped, a one-time filter of the plan).
const blockedProjects = `SELECT a.project_id FROM (
		SELECT project_id FROM tasks WHERE status IN ('preparing','running')
		UNION ALL
		SELECT project_id FROM tasks WHERE status = 'queued' AND backend_ref IS NOT NULL
	) a
	JOIN projects p ON p.id = a.project_id
	WHERE p.max_concurrency IS NOT NULL AND EXISTS (SELECT 1 FROM projects WHERE max_concurrency IS NOT NULL)
	GROUP BY a.project_id, p.max_concurrency
	HAVING count(*) >= p.max_concurrency`

// blockedCodes lists the codes whose new tasks cannot start now: paused, or at their
// max_concurrency. It reads the paused codes and the active tasks (bounded by what the
// runners hold), never the queue; the active tasks only while some code revision has a
// max_concurrency (one probe of code_revisions_capped, a one-time filter of the plan).
const blockedCodes = `SELECT id FROM codes WHERE paused AND deleted_at IS NULL
	UNION
	SELECT a.code_id FROM (
		SELECT code_id FROM tasks WHERE status IN ('preparing','running')
		UNION ALL
		SELECT code_id FROM tasks WHERE status = 'queued' AND backend_ref IS NOT NULL
	) a
	JOIN codes c ON c.id = a.code_id
	JOIN code_revisions r ON r.id = c.latest_revision_id
	WHERE r.max_concurrency IS NOT NULL AND EXISTS (SELECT 1 FROM code_revisions WHERE max_concurrency IS NOT NULL)
	GROUP BY a.code_id, r.max_concurrency
	HAVING count(*) >= r.max_concurrency`

// undecryptableMsg is the msg of a task whose revision's secrets (config, env_vars)
// cannot be opened: it names the missing key when that is the reason, never a secret.
func (s *Store) undecryptableMsg(sealed ...[]byte) string {
	for _, v := range sealed {
		if v == nil {
			continue
		}
		if _, err := s.sealer.Open(v); errors.Is(err, secrets.ErrUnknownKey) {
			if label, err := secrets.KeyOf(v); err == nil {
				return fmt.Sprintf("code revision secrets cannot be decrypted: key %s is not configured", label)
			}
		}
	}
	return "code revision secrets cannot be decrypted"
}

// leaseFailure explains why a statement guarded by "lease_id = $lease AND status is
// active" touched no row: ErrNotFound, ErrLeaseLost, ErrTaskCancelled (the lease is held
// and the user cancelled), or *TaskStateError(ErrTaskFinished).
func (s *Store) leaseFailure(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, taskID, leaseID string) error {
	var status, holder string
	err := q.QueryRowContext(ctx, `SELECT status, coalesce(lease_id, '') FROM tasks WHERE id = $1`, taskID).Scan(&status, &holder)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("read lease of task %s: %w", taskID, err)
	}
	switch {
	case holder != leaseID:
		return ErrLeaseLost
	case status == "cancelled":
		return ErrTaskCancelled
	case (Task{Status: status}).Finished():
		return &TaskStateError{Err: ErrTaskFinished, Status: status}
	}
	return ErrLeaseLost // changed under us; the caller may ask again
}

// Heartbeat is what a lease holder reports.
type Heartbeat struct {
	// BackendRef is the backend's reference for the started task; empty keeps the one
	// recorded. Adoptable says another runner can adopt the task by this ref when this
	// lease expires (a CF task can, a local process cannot).
	BackendRef string
	Adoptable  bool
	// Running marks the task as started: status running, start_time set once.
	Running bool
}

// HeartbeatResult is the task's state after a heartbeat.
type HeartbeatResult struct {
	Status    string
	ExpiresAt time.Time
}

// HeartbeatTask extends the lease by d and records what the holder reports. Errors:
// ErrNotFound, ErrLeaseLost, ErrTaskCancelled (the lease is still extended, and the
// result carries its expiry, while the holder stops the task),
// *TaskStateError(ErrTaskFinished).
func (s *Store) HeartbeatTask(ctx context.Context, taskID, leaseID string, hb Heartbeat, d time.Duration) (HeartbeatResult, error) {
	res, errs := s.HeartbeatTasks(ctx, []HeartbeatCall{{TaskID: taskID, LeaseID: leaseID, Heartbeat: hb}}, d)
	return res[0], errs[0]
}

// HeartbeatCall is one heartbeat of HeartbeatTasks.
type HeartbeatCall struct {
	TaskID, LeaseID string
	Heartbeat       Heartbeat
}

// HeartbeatTasks is HeartbeatTask for several tasks at once (a runner's batched
// reports): one result and one error per call, in order. Their fast paths go into the
// group commit together, so that they share statements; the calls it does not apply
// take the one-task path, which tells the reasons apart. A task should appear once.
func (s *Store) HeartbeatTasks(ctx context.Context, calls []HeartbeatCall, d time.Duration) ([]HeartbeatResult, []error) {
	reqs := make([]*heartbeatReq, len(calls))
	for i, c := range calls {
		reqs[i] = &heartbeatReq{taskID: c.TaskID, leaseID: c.LeaseID, backendRef: c.Heartbeat.BackendRef,
			adoptable: c.Heartbeat.Adoptable, running: c.Heartbeat.Running, durationMs: float64(d.Milliseconds()),
			done: make(chan error, 1)}
	}
	errs := s.groups().heartbeat.doAll(ctx, reqs)
	results := make([]HeartbeatResult, len(calls))
	for i, c := range calls {
		switch {
		case errs[i] == nil:
			results[i] = HeartbeatResult{Status: reqs[i].status, ExpiresAt: reqs[i].expiresAt.UTC()}
		case errors.Is(errs[i], errNotEnded):
			results[i], errs[i] = s.heartbeatOne(ctx, c.TaskID, c.LeaseID, c.Heartbeat, d)
		default:
			errs[i] = fmt.Errorf("heartbeat task %s: %w", c.TaskID, errs[i])
		}
	}
	return results, errs
}

// heartbeatOne is a heartbeat's one-task path.
func (s *Store) heartbeatOne(ctx context.Context, taskID, leaseID string, hb Heartbeat, d time.Duration) (HeartbeatResult, error) {
	var r HeartbeatResult
	var ref any
	if hb.BackendRef != "" {
		ref = hb.BackendRef
	}
	err := s.db.QueryRowContext(ctx, `UPDATE tasks SET
			lease_expires_at = now() + $3::float8 * interval '1 millisecond',
			backend_ref = coalesce($4::text, backend_ref),
			backend_adoptable = CASE WHEN $4::text IS NOT NULL THEN $5 ELSE backend_adoptable END,
			status = CASE WHEN $6 THEN 'running' ELSE status END,
			start_time = CASE WHEN $6 AND start_time IS NULL THEN now() ELSE start_time END,
			updated_at = now()
		WHERE id = $1 AND lease_id = $2 AND status IN ('preparing','running')
		RETURNING status, lease_expires_at`,
		taskID, leaseID, d.Milliseconds(), ref, hb.Adoptable, hb.Running).Scan(&r.Status, &r.ExpiresAt)
	if errors.Is(err, sql.ErrNoRows) {
		ferr := s.leaseFailure(ctx, s.db, taskID, leaseID)
		if errors.Is(ferr, ErrTaskCancelled) {
			// The holder is stopping it: keep its lease alive meanwhile, so that the
			// reaper does not hand the stop to another runner.
			r.Status = "cancelled"
			err := s.db.QueryRowContext(ctx, `UPDATE tasks SET lease_expires_at = now() + $3::float8 * interval '1 millisecond'
				WHERE id = $1 AND lease_id = $2 AND status = 'cancelled' AND lease_expires_at IS NOT NULL
				RETURNING lease_expires_at`, taskID, leaseID, d.Milliseconds()).Scan(&r.ExpiresAt)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return HeartbeatResult{}, fmt.Errorf("heartbeat task %s: %w", taskID, err)
			}
			r.ExpiresAt = r.ExpiresAt.UTC()
		}
		return r, ferr
	}
	if err != nil {
		return HeartbeatResult{}, fmt.Errorf("heartbeat task %s: %w", taskID, err)
	}
	r.ExpiresAt = r.ExpiresAt.UTC()
	return r, nil
}

// SetLeasedTaskProgress sets percent and/or msg (nil leaves a field) for the lease
// holder. Errors as HeartbeatTask.
func (s *Store) SetLeasedTaskProgress(ctx context.Context, taskID, leaseID string, percent *int, msg *string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE tasks SET percent = coalesce($3::int, percent), msg = coalesce($4::text, msg),
		updated_at = now() WHERE id = $1 AND lease_id = $2 AND status IN ('preparing','running')`, taskID, leaseID, percent, msg)
	if err != nil {
		return fmt.Errorf("set progress of task %s: %w", taskID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("set progress of task %s: %w", taskID, err)
	} else if n == 0 {
		return s.leaseFailure(ctx, s.db, taskID, leaseID)
	}
	return nil
}

// AppendLeasedTaskLog appends output for the lease holder (also after the task
// finished, so that a last flush racing the completion is kept). Errors: ErrNotFound,
// ErrLeaseLost.
func (s *Store) AppendLeasedTaskLog(ctx context.Context, taskID, leaseID string, stream int, data []byte) error {
	if stream != LogStdout && stream != LogStderr {
		return fmt.Errorf("append log of task %s: invalid stream %d", taskID, stream)
	}
	if len(data) == 0 {
		return s.leaseHeld(ctx, taskID, leaseID)
	}
	if max := s.maxLogBytes.Load(); max > 0 {
		ok, err := s.appendCapped(ctx, taskID, leaseID, stream, data, max)
		if err != nil || ok {
			return err
		}
		if err := s.leaseHeld(ctx, taskID, leaseID); err != nil {
			return err
		}
		return ErrLeaseLost
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO task_log_chunks (task_id, stream, data)
		SELECT id, $3, $4 FROM tasks WHERE id = $1 AND lease_id = $2`, taskID, leaseID, stream, data)
	if err != nil {
		return fmt.Errorf("append log of task %s: %w", taskID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("append log of task %s: %w", taskID, err)
	} else if n == 1 {
		return nil
	}
	if err := s.leaseHeld(ctx, taskID, leaseID); err != nil {
		return err
	}
	return ErrLeaseLost
}

// leaseHeld is nil when leaseID is the task's lease, whatever its status.
func (s *Store) leaseHeld(ctx context.Context, taskID, leaseID string) error {
	var holder string
	err := s.db.QueryRowContext(ctx, `SELECT coalesce(lease_id, '') FROM tasks WHERE id = $1`, taskID).Scan(&holder)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("read lease of task %s: %w", taskID, err)
	}
	if holder != leaseID {
		return ErrLeaseLost
	}
	return nil
}

// LeasedTaskArchive returns the code revision whose zip the lease holder may download,
// and whether it has one. Errors: ErrNotFound, ErrLeaseLost.
func (s *Store) LeasedTaskArchive(ctx context.Context, taskID, leaseID string) (revisionID string, size int64, checksum string, err error) {
	var holder string
	var sz sql.NullInt64
	err = s.db.QueryRowContext(ctx, `SELECT coalesce(t.lease_id, ''), r.id, r.archive_size, r.checksum
		FROM tasks t JOIN code_revisions r ON r.id = t.code_revision_id WHERE t.id = $1`, taskID).
		Scan(&holder, &revisionID, &sz, &checksum)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, "", ErrNotFound
	}
	if err != nil {
		return "", 0, "", fmt.Errorf("read archive of task %s: %w", taskID, err)
	}
	if holder != leaseID {
		return "", 0, "", ErrLeaseLost
	}
	if !sz.Valid {
		return "", 0, "", ErrNotFound
	}
	return revisionID, sz.Int64, checksum, nil
}

// ErrNotAdoptable: a running task without an adoptable backend ref cannot be handed
// back (another runner would start it a second time); complete it instead.
var ErrNotAdoptable = errors.New("task is running and cannot be adopted by another runner")

// ReleaseTask hands a leased task back to the queue at once, as a draining runner does
// (and the API when a lease answer could not be delivered): a task that has not started
// is queued plainly (its backend ref dropped, its lease not counted as an attempt), a
// task with an adoptable backend ref is queued for adoption. Errors: ErrNotFound,
// ErrLeaseLost, ErrTaskCancelled, *TaskStateError(ErrTaskFinished), ErrNotAdoptable.
func (s *Store) ReleaseTask(ctx context.Context, taskID, leaseID string) error {
	var status string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `UPDATE tasks SET status = 'queued', lease_id = NULL, lease_expires_at = NULL,
				runner_id = NULL, updated_at = now(),
				lease_count = CASE WHEN status = 'preparing' AND NOT (backend_ref IS NOT NULL AND backend_adoptable)
				                   THEN greatest(lease_count - 1, 0) ELSE lease_count END,
				backend_ref = CASE WHEN backend_adoptable THEN backend_ref END,
				backend_adoptable = backend_adoptable AND backend_ref IS NOT NULL
			WHERE id = $1 AND lease_id = $2
			  AND (status = 'preparing' OR (status = 'running' AND backend_ref IS NOT NULL AND backend_adoptable))
			RETURNING status`, taskID, leaseID).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			if ferr := s.leaseFailure(ctx, tx, taskID, leaseID); !errors.Is(ferr, ErrLeaseLost) || !s.isRunningHolder(ctx, tx, taskID, leaseID) {
				return ferr
			}
			return ErrNotAdoptable
		}
		if err != nil {
			return fmt.Errorf("release task %s: %w", taskID, err)
		}
		s.notifyAfterCommit(tx)
		return nil
	})
	return err
}

// isRunningHolder tells whether leaseID holds the task while it runs.
func (s *Store) isRunningHolder(ctx context.Context, tx *sql.Tx, taskID, leaseID string) bool {
	var ok bool
	err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND lease_id = $2 AND status = 'running')`,
		taskID, leaseID).Scan(&ok)
	return err == nil && ok
}

// FinalStatuses are the statuses a runner may complete a task with.
var FinalStatuses = []string{"complete", "error", "timeout", "killed", "cancelled"}

// IsFinalStatus tells whether status is one of FinalStatuses.
func IsFinalStatus(status string) bool {
	for _, s := range FinalStatuses {
		if s == status {
			return true
		}
	}
	return false
}

// Completion is how a task ended, as its runner reports it.
type Completion struct {
	Status   string // one of FinalStatuses
	ExitCode *int
	// Msg replaces the task's msg when not empty (for error: the last stderr line).
	Msg string
	// Duration is the run time the runner measured; 0 when unknown.
	Duration time.Duration
	// NoRetry skips the code's retry policy: the code itself cannot run (a bad zip, an
	// image on a backend without images), so a retry would fail the same way.
	NoRetry bool
}

// CompleteResult is the task's final state.
type CompleteResult struct {
	Status      string
	RetryTaskID string
}

// retryStatuses end a task in a way the code's retries policy applies to.
func retryStatus(status string) bool {
	return status == "error" || status == "timeout" || status == "killed"
}

// CompleteTask ends a leased task. It is idempotent: the same final status again
// answers the recorded result. A task the user cancelled stays cancelled (the result
// says so). For error, timeout and killed it queues a retry task while retry_count is
// below the revision's retries, run_at retries_delay later, linked both ways, in the
// same transaction. Lease long-polls are woken once it commits (a retry may be due, a
// freed max_concurrency slot may let another task run).
//
// Errors: ErrNotFound; ErrLeaseLost (another lease holds or held the task);
// *TaskStateError(ErrTaskFinished) when the task already ended with another status.
func (s *Store) CompleteTask(ctx context.Context, taskID, leaseID string, c Completion) (CompleteResult, error) {
	res, errs := s.CompleteTasks(ctx, []CompleteCall{{TaskID: taskID, LeaseID: leaseID, Completion: c}})
	return res[0], errs[0]
}

// CompleteCall is one completion of CompleteTasks.
type CompleteCall struct {
	TaskID, LeaseID string
	Completion      Completion
}

// CompleteTasks is CompleteTask for several tasks at once (a runner's batched reports):
// one result and one error per call, in order. The fast paths (no retry policy to
// apply: see flushCompletes) go into the group commit together, so that they share
// statements; anything they do not end (not found, another lease, finished or
// cancelled meanwhile) and the completions a retry policy applies to take the one-task
// transaction, which tells those apart. A task should appear once.
func (s *Store) CompleteTasks(ctx context.Context, calls []CompleteCall) ([]CompleteResult, []error) {
	results, errs := make([]CompleteResult, len(calls)), make([]error, len(calls))
	slow := make([]bool, len(calls)) // for the one-task transaction
	var fast []*completeReq
	var fastIdx []int
	for i, call := range calls {
		c := call.Completion
		if !IsFinalStatus(c.Status) {
			errs[i] = fmt.Errorf("complete task %s: invalid status %q", call.TaskID, c.Status)
			continue
		}
		if retryStatus(c.Status) && !c.NoRetry {
			slow[i] = true
			continue
		}
		exit := ""
		if c.ExitCode != nil {
			exit = strconv.Itoa(*c.ExitCode)
		}
		fast = append(fast, &completeReq{taskID: call.TaskID, leaseID: call.LeaseID, status: c.Status,
			exitCode: exit, msg: c.Msg, durationMs: float64(c.Duration.Milliseconds()), done: make(chan error, 1)})
		fastIdx = append(fastIdx, i)
	}
	if len(fast) > 0 {
		for j, err := range s.groups().complete.doAll(ctx, fast) {
			i := fastIdx[j]
			switch {
			case err == nil:
				results[i] = CompleteResult{Status: calls[i].Completion.Status}
			case errors.Is(err, errNotEnded):
				slow[i] = true
			default:
				errs[i] = fmt.Errorf("complete task %s: %w", calls[i].TaskID, err)
			}
		}
	}
	for i, c := range calls {
		if slow[i] {
			results[i], errs[i] = s.completeOne(ctx, c.TaskID, c.LeaseID, c.Completion)
		}
	}
	return results, errs
}

// completeOne is a completion's one-task transaction.
func (s *Store) completeOne(ctx context.Context, taskID, leaseID string, c Completion) (CompleteResult, error) {
	var res CompleteResult
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var status, holder, projectID, revisionID, retryID string
		err := tx.QueryRowContext(ctx, `SELECT status, coalesce(lease_id, ''), project_id, code_revision_id, coalesce(retry_task_id, '')
			FROM tasks WHERE id = $1 FOR UPDATE`, taskID).Scan(&status, &holder, &projectID, &revisionID, &retryID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read task: %w", err)
		}
		if holder != leaseID {
			return ErrLeaseLost
		}
		if (Task{Status: status}).Finished() {
			res = CompleteResult{Status: status, RetryTaskID: retryID}
			if status == c.Status || status == "cancelled" {
				_, err := tx.ExecContext(ctx, `UPDATE tasks SET lease_expires_at = NULL WHERE id = $1 AND lease_expires_at IS NOT NULL`, taskID)
				return err
			}
			return &TaskStateError{Err: ErrTaskFinished, Status: status}
		}
		var msg any
		if c.Msg != "" {
			msg = c.Msg
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tasks SET status = $2, exit_code = $3, msg = coalesce($4::text, msg),
				start_time = CASE WHEN start_time IS NOT NULL THEN start_time
				                  ELSE now() - $5::float8 * interval '1 millisecond' END,
				end_time = CASE WHEN start_time IS NOT NULL AND $5::float8 > 0
				                THEN least(now(), start_time + $5::float8 * interval '1 millisecond') ELSE now() END,
				lease_expires_at = NULL, updated_at = now()
			WHERE id = $1`, taskID, c.Status, c.ExitCode, msg, c.Duration.Milliseconds()); err != nil {
			return fmt.Errorf("finish task: %w", err)
		}
		res = CompleteResult{Status: c.Status}
		if retryStatus(c.Status) && !c.NoRetry {
			if res.RetryTaskID, err = s.applyRetryPolicy(ctx, tx, projectID, taskID, revisionID); err != nil {
				return err
			}
		}
		s.notifyAfterCommit(tx)
		return nil
	})
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrLeaseLost) {
		return CompleteResult{}, err
	}
	var stateErr *TaskStateError
	if errors.As(err, &stateErr) {
		return res, err
	}
	if err != nil {
		return CompleteResult{}, fmt.Errorf("complete task %s: %w", taskID, err)
	}
	return res, nil
}

// groupCommit batches the fast paths of concurrent store calls (CompleteTask's and
// HeartbeatTask's): each call is one autocommitted UPDATE of one task row by its lease
// holder, and concurrent calls share one UPDATE (and its WAL flush) instead of a commit
// each. Up to maxGroupFlushers statements run at once; calls that arrive meanwhile wait
// and go out together in the next (at most maxGroupBatch), so a lone call is not
// delayed. No goroutine of its own: a waiting caller flushes whatever is pending when a
// flusher slot is free. A call the batch does not apply (errNotEnded) takes its
// method's one-task path, which tells the reasons apart.
type groupCommit[R groupReq] struct {
	sem     chan struct{}
	mu      sync.Mutex
	pending []R
	flush   func(batch []R)
}

// groupReq is a call waiting in a groupCommit; flush answers it exactly once on done.
type groupReq interface{ doneCh() chan error }

const (
	maxGroupFlushers = 4
	maxGroupBatch    = 500
)

var errNotEnded = errors.New("not applied by the batched fast path")

// doAll queues rs together, so that the first flush takes them all (up to
// maxGroupBatch) instead of the few queued by the time each caller got there, and
// answers, per call, what flush answered for it (nil, errNotEnded or an error), or
// ctx's error (the call may still be applied later: heartbeats and completions are
// idempotent for the holder).
func (g *groupCommit[R]) doAll(ctx context.Context, rs []R) []error {
	g.mu.Lock()
	g.pending = append(g.pending, rs...)
	g.mu.Unlock()
	errs := make([]error, len(rs))
	for i, r := range rs {
		errs[i] = g.wait(ctx, r)
	}
	return errs
}

// wait answers r once a flush (its own or another caller's) has.
func (g *groupCommit[R]) wait(ctx context.Context, r R) error {
	for {
		select {
		case err := <-r.doneCh():
			return err
		case <-ctx.Done():
			return ctx.Err()
		case g.sem <- struct{}{}:
			g.mu.Lock()
			n := min(len(g.pending), maxGroupBatch)
			batch := g.pending[:n:n]
			g.pending = append([]R(nil), g.pending[n:]...)
			g.mu.Unlock()
			if n > 0 {
				g.flush(batch)
			}
			<-g.sem
			if n == 0 {
				// Our call is in a batch another flusher runs: it answers.
				select {
				case err := <-r.doneCh():
					return err
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
	}
}

type storeGroups struct {
	complete  *groupCommit[*completeReq]
	heartbeat *groupCommit[*heartbeatReq]
}

func (s *Store) groups() *storeGroups {
	s.groupsOnce.Do(func() {
		g := &storeGroups{
			complete:  &groupCommit[*completeReq]{sem: make(chan struct{}, maxGroupFlushers)},
			heartbeat: &groupCommit[*heartbeatReq]{sem: make(chan struct{}, maxGroupFlushers)},
		}
		g.complete.flush = func(b []*completeReq) { s.flushCompletes(b) }
		g.heartbeat.flush = func(b []*heartbeatReq) { s.flushHeartbeats(b) }
		s.grp = g
	})
	return s.grp
}

// completeReq is one CompleteTask fast path; exitCode and msg are "" for NULL.
type completeReq struct {
	taskID, leaseID, status, exitCode, msg string
	durationMs                             float64
	done                                   chan error
}

func (r *completeReq) doneCh() chan error { return r.done }

// dedupe answers errNotEnded to the calls of a task already in the batch (they take
// the one-task path, which answers once the first is applied) and returns the rest.
func dedupe[R groupReq](batch []R, id func(R) string) []R {
	seen := make(map[string]bool, len(batch))
	run := batch[:0:0]
	for _, r := range batch {
		if seen[id(r)] {
			r.doneCh() <- errNotEnded
			continue
		}
		seen[id(r)] = true
		run = append(run, r)
	}
	return run
}

// heartbeatReq is one HeartbeatTask fast path; backendRef "" leaves the task's. flush
// sets status and expiresAt when it answers nil.
type heartbeatReq struct {
	taskID, leaseID, backendRef string
	adoptable, running          bool
	durationMs                  float64
	done                        chan error
	status                      string
	expiresAt                   time.Time
}

func (r *heartbeatReq) doneCh() chan error { return r.done }

// flushHeartbeats extends a batch of leases in one statement, as HeartbeatTask's
// one-task UPDATE does for each.
func (s *Store) flushHeartbeats(batch []*heartbeatReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := dedupe(batch, func(r *heartbeatReq) string { return r.taskID })
	ids, leases, refs := make([]string, len(run)), make([]string, len(run)), make([]string, len(run))
	adoptable, running := make([]bool, len(run)), make([]bool, len(run))
	durs := make([]float64, len(run))
	for i, r := range run {
		ids[i], leases[i], refs[i], adoptable[i], running[i], durs[i] = r.taskID, r.leaseID, r.backendRef, r.adoptable, r.running, r.durationMs
	}
	type applied struct {
		status  string
		expires time.Time
	}
	got := map[string]applied{}
	err := func() error {
		rows, err := s.hotQuery(ctx, nil, `WITH l AS (
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bool[], $6::float8[])
					AS l(id, lease_id, ref, adoptable, running, dur)),
			-- rows locked in id order (no deadlock between batches); a row another call
			-- holds (its complete, say) is left to the one-task path, which waits for it
			k AS MATERIALIZED (SELECT id FROM tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE SKIP LOCKED)
			UPDATE tasks t SET
				lease_expires_at = now() + l.dur * interval '1 millisecond',
				backend_ref = coalesce(nullif(l.ref, ''), t.backend_ref),
				backend_adoptable = CASE WHEN l.ref <> '' THEN l.adoptable ELSE t.backend_adoptable END,
				status = CASE WHEN l.running THEN 'running' ELSE t.status END,
				start_time = CASE WHEN l.running AND t.start_time IS NULL THEN now() ELSE t.start_time END,
				updated_at = now()
			FROM l JOIN k ON k.id = l.id
			WHERE t.id = l.id AND t.lease_id = l.lease_id AND t.status IN ('preparing','running')
			RETURNING t.id, t.status, t.lease_expires_at`,
			pq.Array(ids), pq.Array(leases), pq.Array(refs), pq.Array(adoptable), pq.Array(running), pq.Array(durs))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var a applied
			if err := rows.Scan(&id, &a.status, &a.expires); err != nil {
				return err
			}
			got[id] = a
		}
		return rows.Err()
	}()
	for _, r := range run {
		a, ok := got[r.taskID]
		if err != nil || !ok {
			r.done <- errNotEnded // the one-task path retries it and tells why
			continue
		}
		r.status, r.expiresAt = a.status, a.expires
		r.done <- nil
	}
}

// flushCompletes ends a batch of CompleteTask fast paths in one statement. Lease
// long-polls are woken only when an ended task's code or project has a max_concurrency,
// the only case where a lease may be waiting for the slot it frees (waking every idle
// long-poll on each completion would only make them scan the queue for nothing).
func (s *Store) flushCompletes(batch []*completeReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := dedupe(batch, func(r *completeReq) string { return r.taskID })
	// In id order: the update locks the rows in the order of l (a nested loop over the
	// primary key), so that two batches that share tasks (a report sent again while
	// the first is still running) cannot deadlock. Locking them first in a FOR UPDATE
	// subquery, as before, wrote every row twice: ~10% of a drain in scripts/bench.
	slices.SortFunc(run, func(a, b *completeReq) int { return strings.Compare(a.taskID, b.taskID) })
	ids, leases, statuses, exits, msgs := make([]string, len(run)), make([]string, len(run)), make([]string, len(run)),
		make([]string, len(run)), make([]string, len(run))
	durs := make([]float64, len(run))
	for i, r := range run {
		ids[i], leases[i], statuses[i], exits[i], msgs[i], durs[i] = r.taskID, r.leaseID, r.status, r.exitCode, r.msg, r.durationMs
	}
	ended := map[string]bool{}
	freed := false // a capped code's or project's slot
	err := func() error {
		rows, err := s.hotQuery(ctx, nil, `WITH l AS (
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[])
					AS l(id, lease_id, status, exit_code, msg, dur)),
			u AS (
				UPDATE tasks t SET status = l.status, exit_code = nullif(l.exit_code, '')::int,
					msg = coalesce(nullif(l.msg, ''), t.msg),
					start_time = CASE WHEN t.start_time IS NOT NULL THEN t.start_time
					                  ELSE now() - l.dur * interval '1 millisecond' END,
					end_time = CASE WHEN t.start_time IS NOT NULL AND l.dur > 0
					                THEN least(now(), t.start_time + l.dur * interval '1 millisecond') ELSE now() END,
					lease_expires_at = NULL, updated_at = now()
				FROM l
				WHERE t.id = l.id AND t.lease_id = l.lease_id AND t.status IN ('queued', 'preparing', 'running')
				RETURNING t.id, t.code_id, t.project_id),
			-- one check per distinct code and project, not per task
			c AS (SELECT EXISTS (SELECT 1 FROM codes c JOIN code_revisions r ON r.id = c.latest_revision_id
			                     WHERE c.id IN (SELECT DISTINCT code_id FROM u) AND r.max_concurrency IS NOT NULL)
			          OR EXISTS (SELECT 1 FROM projects p
			                     WHERE p.id IN (SELECT DISTINCT project_id FROM u) AND p.max_concurrency IS NOT NULL) AS capped)
			SELECT u.id, c.capped FROM u, c`, pq.Array(ids), pq.Array(leases), pq.Array(statuses), pq.Array(exits), pq.Array(msgs), pq.Array(durs))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var capped bool
			if err := rows.Scan(&id, &capped); err != nil {
				return err
			}
			ended[id] = true
			freed = freed || capped
		}
		return rows.Err()
	}()
	if err == nil && freed {
		s.queueChanged()
	}
	for _, r := range run {
		switch {
		case err != nil:
			r.done <- errNotEnded // the slow path reports its own error, if any
		case ended[r.taskID]:
			r.done <- nil
		default:
			r.done <- errNotEnded
		}
	}
}

// applyRetryPolicy queues the retry of a failed task when its revision's retries allow
// one more, returning the new id ("" when none). Like RetryTask, the retry runs the live
// code's latest revision; a deleted code is not retried.
func (s *Store) applyRetryPolicy(ctx context.Context, tx *sql.Tx, projectID, taskID, revisionID string) (string, error) {
	var retries, delay int
	if err := tx.QueryRowContext(ctx, `SELECT retries, retries_delay FROM code_revisions WHERE id = $1`, revisionID).
		Scan(&retries, &delay); err != nil {
		return "", fmt.Errorf("read retry policy: %w", err)
	}
	var prio int
	nt := NewTask{OriginalTaskID: taskID, Delay: delay, Priority: &prio}
	var retryID string
	if err := tx.QueryRowContext(ctx, `SELECT code_name, payload, priority, timeout, cluster, label, retry_count, coalesce(retry_task_id, '')
		FROM tasks WHERE id = $1`, taskID).
		Scan(&nt.CodeName, &nt.Payload, &prio, &nt.Timeout, &nt.Cluster, &nt.Label, &nt.RetryCount, &retryID); err != nil {
		return "", fmt.Errorf("read task for retry: %w", err)
	}
	if retryID != "" || nt.RetryCount >= retries {
		return retryID, nil
	}
	nt.RetryCount++
	code, err := lookupCodeRef(ctx, tx, projectID, nt.CodeName)
	var cnf *ErrCodeNotFound
	if errors.As(err, &cnf) {
		s.log.Info("not retrying a task of a deleted code", "task_id", taskID, "code_name", nt.CodeName)
		return "", nil
	}
	if err != nil {
		return "", err
	}
	newID, err := insertTask(ctx, tx, projectID, code, nt)
	if err != nil {
		return "", fmt.Errorf("queue retry: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE tasks SET retry_task_id = $2, updated_at = now() WHERE id = $1`, taskID, newID); err != nil {
		return "", fmt.Errorf("link retry: %w", err)
	}
	return newID, nil
}

// Reaper outcomes.
const (
	ReapRequeued = "requeued" // never started: back to the queue
	ReapAdopt    = "adopt"    // may still run on its backend: queued for adoption
	ReapKilled   = "killed"   // started and lost with its runner
	// A cancelled task whose holder was lost before stopping it:
	ReapStop    = "stop"    // may still run: handed to the next lease to stop (Cancel)
	ReapStopped = "stopped" // nothing adoptable: nothing left to do
)

// MsgRunnerLost is the msg of a task the reaper ends killed.
const MsgRunnerLost = "runner lost"

// ReapEvent is what the reaper did to one task.
type ReapEvent struct {
	TaskID      string
	ProjectID   string
	Action      string
	RetryTaskID string
}

// ReapOptions tune ReapExpiredLeases.
type ReapOptions struct {
	// BatchSize bounds the tasks taken per call (default 100).
	BatchSize int
	// MaxAttempts: a task that never started and lost this many leases ends killed
	// instead of going back to the queue (a task that kills its runner must not loop
	// forever). Default 5.
	MaxAttempts int
	// StaleAfter: a preparing/running task without a lease expiry (not leased through
	// the protocol) counts as expired this long after its last update (default 10m).
	StaleAfter time.Duration
}

// ReapExpiredLeases takes back preparing and running tasks whose lease expired:
//   - with an adoptable backend ref: queued again keeping the ref and start_time, so the
//     next lease hands it over for adoption (ReapAdopt);
//   - never reached running: queued again (ReapRequeued), or killed after MaxAttempts;
//   - running with nothing adoptable: killed with msg "runner lost" and retried by the
//     code's policy (ReapKilled).
//
// It also releases cancelled tasks whose holder was lost before stopping them: with an
// adoptable ref the next lease hands them out to be stopped (ReapStop), otherwise there
// is nothing left to do (ReapStopped).
//
// Rows are taken with SKIP LOCKED, so concurrent reapers (or a runner completing the
// task at that moment) never both act. Call it until it returns fewer than BatchSize
// events.
func (s *Store) ReapExpiredLeases(ctx context.Context, opts ReapOptions) ([]ReapEvent, error) {
	if opts.BatchSize < 1 {
		opts.BatchSize = 100
	}
	if opts.MaxAttempts < 1 {
		opts.MaxAttempts = 5
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = 10 * time.Minute
	}
	var events []ReapEvent
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		events = nil
		rows, err := tx.QueryContext(ctx, `SELECT id, project_id, code_revision_id, status, coalesce(backend_ref, ''),
				backend_adoptable, lease_count
			FROM tasks
			WHERE status IN ('preparing','running')
			  AND (lease_expires_at < now() OR (lease_expires_at IS NULL AND updated_at < now() - $2::float8 * interval '1 millisecond'))
			ORDER BY lease_expires_at NULLS FIRST
			LIMIT $1
			FOR UPDATE SKIP LOCKED`, opts.BatchSize, opts.StaleAfter.Milliseconds())
		if err != nil {
			return fmt.Errorf("select expired leases: %w", err)
		}
		type expired struct {
			id, projectID, revisionID, status, ref string
			adoptable                              bool
			attempts                               int
		}
		var list []expired
		for rows.Next() {
			var e expired
			if err := rows.Scan(&e.id, &e.projectID, &e.revisionID, &e.status, &e.ref, &e.adoptable, &e.attempts); err != nil {
				rows.Close()
				return fmt.Errorf("select expired leases: %w", err)
			}
			list = append(list, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("select expired leases: %w", err)
		}
		for _, e := range list {
			ev := ReapEvent{TaskID: e.id, ProjectID: e.projectID}
			switch {
			case e.ref != "" && e.adoptable:
				ev.Action = ReapAdopt
				_, err = tx.ExecContext(ctx, `UPDATE tasks SET status = 'queued', lease_id = NULL, lease_expires_at = NULL,
					runner_id = NULL, updated_at = now() WHERE id = $1`, e.id)
			case e.status == "preparing" && e.attempts < opts.MaxAttempts:
				ev.Action = ReapRequeued
				_, err = tx.ExecContext(ctx, `UPDATE tasks SET status = 'queued', lease_id = NULL, lease_expires_at = NULL,
					runner_id = NULL, backend_ref = NULL, backend_adoptable = false, updated_at = now() WHERE id = $1`, e.id)
			default:
				ev.Action = ReapKilled
				msg := MsgRunnerLost
				if e.status == "preparing" {
					msg = fmt.Sprintf("%s (%d leases expired before the task started)", MsgRunnerLost, e.attempts)
				}
				_, err = tx.ExecContext(ctx, `UPDATE tasks SET status = 'killed', msg = $2, end_time = now(),
					start_time = coalesce(start_time, now()), lease_expires_at = NULL, updated_at = now() WHERE id = $1`, e.id, msg)
				if err == nil {
					ev.RetryTaskID, err = s.applyRetryPolicy(ctx, tx, e.projectID, e.id, e.revisionID)
				}
			}
			if err != nil {
				return fmt.Errorf("reap task %s: %w", e.id, err)
			}
			events = append(events, ev)
		}
		// Cancelled while held, and the holder was lost before it stopped the task: an
		// adoptable one becomes free for a Cancel lease, the others are done with.
		rows, err = tx.QueryContext(ctx, `UPDATE tasks t SET
				lease_id = CASE WHEN t.backend_ref IS NOT NULL AND t.backend_adoptable THEN NULL ELSE t.lease_id END,
				lease_expires_at = NULL, runner_id = NULL
			WHERE t.id IN (SELECT id FROM tasks WHERE status = 'cancelled' AND lease_expires_at < now()
				ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
			RETURNING t.id, t.project_id, t.lease_id IS NULL`, opts.BatchSize)
		if err != nil {
			return fmt.Errorf("release cancelled tasks: %w", err)
		}
		for rows.Next() {
			ev := ReapEvent{Action: ReapStopped}
			var toStop bool
			if err := rows.Scan(&ev.TaskID, &ev.ProjectID, &toStop); err != nil {
				rows.Close()
				return fmt.Errorf("release cancelled tasks: %w", err)
			}
			if toStop {
				ev.Action = ReapStop
			}
			events = append(events, ev)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("release cancelled tasks: %w", err)
		}
		if len(events) > 0 {
			s.notifyAfterCommit(tx)
			return nil
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reap expired leases: %w", err)
	}
	return events, nil
}

// QueueWaker wakes lease long-polls: one LISTEN connection per process on
// TaskQueueChannel, fanned out to every waiter. A waiter takes Wait() before it looks at
// the queue and sleeps on it after finding nothing; any notification (or a reconnect,
// after which notifications may have been missed) closes the channel. Waiters should
// still re-check every few seconds: NOTIFY is best effort across connection loss.
type QueueWaker struct {
	mu       sync.Mutex
	ch       chan struct{}
	listener *pq.Listener
	done     chan struct{}
	log      *slog.Logger
	ignore   atomic.Value // string: the payload of this process's own NOTIFYs (Store.WakeLocally)
}

// NewQueueWaker starts listening with its own connection (dsn as for Open). It does not
// wait for the connection: until it is up, waiters rely on their re-checks.
func NewQueueWaker(dsn string, log *slog.Logger) *QueueWaker {
	if log == nil {
		log = slog.Default()
	}
	w := &QueueWaker{ch: make(chan struct{}), done: make(chan struct{}), log: log.With("component", "queue-waker")}
	w.listener = pq.NewListener(dsn, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventConnectionAttemptFailed, pq.ListenerEventDisconnected:
			if err != nil {
				w.log.Warn("queue listener connection problem", "event", ev.String(), "error", err.Error())
			}
		case pq.ListenerEventReconnected:
			w.log.Info("queue listener reconnected")
			w.Wake()
		}
	})
	go func() {
		if err := w.listener.Listen(TaskQueueChannel); err != nil && !errors.Is(err, pq.ErrChannelAlreadyOpen) {
			w.log.Warn("cannot LISTEN on the task queue channel", "error", err.Error())
		}
	}()
	go w.loop()
	return w
}

func (w *QueueWaker) loop() {
	defer close(w.done)
	ping := time.NewTicker(60 * time.Second)
	defer ping.Stop()
	for {
		select {
		case n, ok := <-w.listener.Notify:
			if !ok {
				return
			}
			if own, _ := w.ignore.Load().(string); n != nil && own != "" && n.Extra == own {
				continue // this process woke its waiters when it committed
			}
			w.Wake() // nil after a reconnect: wake too
		case <-ping.C:
			go w.listener.Ping()
		}
	}
}

// Wait returns a channel that is closed at the next wake-up. A nil waker never wakes.
func (w *QueueWaker) Wait() <-chan struct{} {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

// Wake wakes every current waiter.
func (w *QueueWaker) Wake() {
	if w == nil {
		return
	}
	w.mu.Lock()
	close(w.ch)
	w.ch = make(chan struct{})
	w.mu.Unlock()
}

// Close stops listening.
func (w *QueueWaker) Close() error {
	if w == nil {
		return nil
	}
	err := w.listener.Close()
	<-w.done
	return err
}
