package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/lib/pq"
)

// Quotas are a project's plan limits (see migrations/0004_broker.sql). A nil limit is
// unlimited; projects made with `iron-api admin create-project` have none.
type Quotas struct {
	PlanID            string
	MaxConcurrency    *int
	MaxTimeoutSeconds *int
	MaxPayloadBytes   *int
	MaxQueuedTasks    *int
	MaxSchedules      *int
	// AllowedPriorities nil = every priority; otherwise another priority runs as 0.
	AllowedPriorities []int
}

// QuotaError is a request that a plan limit refuses. Limit is the quota's name
// (max_queued_tasks, max_schedules), Max its value and Current the use before the request.
type QuotaError struct {
	Limit   string
	Max     int
	Current int
	Adding  int
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("quota %s exceeded: %d in use, %d more asked, at most %d", e.Limit, e.Current, e.Adding, e.Max)
}

const quotaColumns = `coalesce(plan_id, ''), max_concurrency, max_timeout_seconds, max_payload_bytes, max_queued_tasks,
	max_schedules, allowed_priorities`

func scanQuotas(row rowScanner) (Quotas, error) {
	var q Quotas
	var conc, timeout, payload, queued, scheds sql.NullInt64
	var prios pq.Int64Array
	if err := row.Scan(&q.PlanID, &conc, &timeout, &payload, &queued, &scheds, &prios); err != nil {
		return Quotas{}, err
	}
	q.MaxConcurrency, q.MaxTimeoutSeconds, q.MaxPayloadBytes = nullInt(conc), nullInt(timeout), nullInt(payload)
	q.MaxQueuedTasks, q.MaxSchedules = nullInt(queued), nullInt(scheds)
	if prios != nil {
		q.AllowedPriorities = make([]int, len(prios))
		for i, p := range prios {
			q.AllowedPriorities[i] = int(p)
		}
	}
	return q, nil
}

// quotaArgs are the quota columns' values for an INSERT or UPDATE, in quotaColumns order
// without plan_id.
func quotaArgs(q Quotas) []any {
	var prios any
	if q.AllowedPriorities != nil {
		arr := make(pq.Int64Array, len(q.AllowedPriorities))
		for i, p := range q.AllowedPriorities {
			arr[i] = int64(p)
		}
		prios = arr
	}
	return []any{q.MaxConcurrency, q.MaxTimeoutSeconds, q.MaxPayloadBytes, q.MaxQueuedTasks, q.MaxSchedules, prios}
}

const projectQuotasSQL = `SELECT ` + quotaColumns + ` FROM projects WHERE id = $1 AND deleted_at IS NULL`

// ProjectQuotas returns the limits of a live project, or ErrNotFound.
func (s *Store) ProjectQuotas(ctx context.Context, projectID string) (Quotas, error) {
	// Prepared: queueing requests (on a miss of the API's quota cache), webhooks and
	// schedule changes read them.
	stmt, err := s.stmt(ctx, nil, projectQuotasSQL)
	if err != nil {
		return Quotas{}, fmt.Errorf("quotas of project %s: %w", projectID, err)
	}
	q, err := scanQuotas(stmt.QueryRowContext(ctx, projectID))
	if errors.Is(err, sql.ErrNoRows) {
		return Quotas{}, ErrNotFound
	}
	if err != nil {
		return Quotas{}, fmt.Errorf("quotas of project %s: %w", projectID, err)
	}
	return q, nil
}

// ApplyPlanQuotas sets the quotas of every live project on the plan, so that a plan
// whose limits the operator changed applies to existing instances too. It returns how
// many projects changed.
func (s *Store) ApplyPlanQuotas(ctx context.Context, q Quotas) (int, error) {
	args := append([]any{q.PlanID}, quotaArgs(q)...)
	res, err := s.db.ExecContext(ctx, `UPDATE projects SET max_concurrency = $2, max_timeout_seconds = $3,
		max_payload_bytes = $4, max_queued_tasks = $5, max_schedules = $6, allowed_priorities = $7, updated_at = now()
		WHERE plan_id = $1 AND deleted_at IS NULL AND (max_concurrency, max_timeout_seconds, max_payload_bytes,
		      max_queued_tasks, max_schedules, allowed_priorities) IS DISTINCT FROM ($2, $3, $4, $5, $6, $7::integer[])`, args...)
	if err != nil {
		return 0, fmt.Errorf("apply quotas of plan %s: %w", q.PlanID, err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// lockedQuotas reads a live project's quotas in tx; with lock it holds the row (FOR
// UPDATE) so that concurrent checks of one project's limits serialise.
func lockedQuotas(ctx context.Context, tx *sql.Tx, projectID string, lock bool) (Quotas, error) {
	query := projectQuotasSQL
	if lock {
		query += ` FOR UPDATE`
	}
	q, err := scanQuotas(tx.QueryRowContext(ctx, query, projectID))
	if errors.Is(err, sql.ErrNoRows) {
		return Quotas{}, ErrNotFound
	}
	if err != nil {
		return Quotas{}, fmt.Errorf("read quotas: %w", err)
	}
	return q, nil
}

// checkQueuedQuota refuses adding tasks beyond max_queued_tasks (*QuotaError). When the
// project has that limit, its row stays locked until tx ends, so concurrent queueing
// requests of the project count one after the other.
func checkQueuedQuota(ctx context.Context, tx *sql.Tx, projectID string, adding int) error {
	q, err := lockedQuotas(ctx, tx, projectID, false)
	if err != nil || q.MaxQueuedTasks == nil {
		return err
	}
	if q, err = lockedQuotas(ctx, tx, projectID, true); err != nil || q.MaxQueuedTasks == nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM tasks WHERE project_id = $1 AND status = 'queued'`, projectID).Scan(&n); err != nil {
		return fmt.Errorf("count queued tasks: %w", err)
	}
	if n+adding > *q.MaxQueuedTasks {
		return &QuotaError{Limit: "max_queued_tasks", Max: *q.MaxQueuedTasks, Current: n, Adding: adding}
	}
	return nil
}

// checkScheduleQuota refuses creating schedules beyond max_schedules (*QuotaError),
// counting the project's schedules that are still scheduled, under the project row lock.
func checkScheduleQuota(ctx context.Context, tx *sql.Tx, projectID string, adding int) error {
	q, err := lockedQuotas(ctx, tx, projectID, false)
	if err != nil || q.MaxSchedules == nil {
		return err
	}
	if q, err = lockedQuotas(ctx, tx, projectID, true); err != nil || q.MaxSchedules == nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schedules WHERE project_id = $1 AND status = 'scheduled'`, projectID).Scan(&n); err != nil {
		return fmt.Errorf("count schedules: %w", err)
	}
	if n+adding > *q.MaxSchedules {
		return &QuotaError{Limit: "max_schedules", Max: *q.MaxSchedules, Current: n, Adding: adding}
	}
	return nil
}

// CheckQueuedQuota tells (outside any transaction) whether adding tasks would exceed
// max_queued_tasks; for paths that queue through code shared with the runner (retry).
func (s *Store) CheckQueuedQuota(ctx context.Context, projectID string, adding int) error {
	return s.inTx(ctx, func(tx *sql.Tx) error { return checkQueuedQuota(ctx, tx, projectID, adding) })
}
