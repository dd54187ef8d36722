package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"
	"github.com/robfig/cron/v3"
)

// Schedule statuses.
const (
	ScheduleScheduled = "scheduled"
	ScheduleComplete  = "complete"
	ScheduleCancelled = "cancelled"
)

// Messages a schedule carries when it ends by itself.
const (
	MsgRanMaxTimes = "Ran max times."
	MsgEndReached  = "Reached end_at."
	MsgCronNever   = "The cron expression has no further run time."
)

// FallbackScheduleTimeout is the task timeout of a schedule row that has none (the API
// always stores the resolved timeout; this only covers rows written otherwise).
const FallbackScheduleTimeout = 3600

// ErrScheduleCancelled is returned when updating a cancelled schedule.
var ErrScheduleCancelled = errors.New("schedule is cancelled")

// Schedule is a recurring (run_every or cron) or one-time task schedule.
//
// A one-time schedule (IronWorker's schedule without run_every) is stored with
// run_every = 0 and run_times = 1; RunEvery and Cron are then both empty here.
type Schedule struct {
	ID          string
	ProjectID   string
	CodeName    string
	Name        string
	Payload     string
	Status      string
	Msg         string
	StartAt     time.Time
	EndAt       *time.Time
	RunEvery    int    // seconds; 0 for cron and one-time schedules
	Cron        string // 5-field cron in UTC, or ""
	RunTimes    int    // 0 = unlimited
	RunCount    int
	ErrorCount  int
	Priority    *int // nil = the code's default
	Timeout     *int // nil = FallbackScheduleTimeout
	TaskDelay   int
	Cluster     string
	Label       string
	NextStart   *time.Time // nil once ended
	LastRunTime *time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// OneTime tells whether the schedule fires a single task at start_at.
func (s Schedule) OneTime() bool { return s.RunEvery <= 0 && s.Cron == "" }

// NewSchedule is a schedule to create, with the API's defaults already resolved.
// RunEvery and Cron are exclusive; with neither the schedule is one-time (RunTimes is
// then forced to 1).
type NewSchedule struct {
	CodeName  string
	Name      string
	Payload   string
	StartAt   time.Time
	EndAt     *time.Time
	RunEvery  int
	Cron      string
	RunTimes  int
	Priority  *int
	Timeout   int
	TaskDelay int
	Cluster   string
	Label     string
}

// ScheduleUpdate is a partial update: nil fields stay as they are. Setting RunEvery
// (> 0) turns the schedule into an interval schedule, setting Cron into a cron one.
// ClearEndAt removes end_at.
type ScheduleUpdate struct {
	CodeName   *string
	Name       *string
	Payload    *string
	StartAt    *time.Time
	EndAt      *time.Time
	ClearEndAt bool
	RunEvery   *int
	Cron       *string
	RunTimes   *int
	Priority   *int
	// ClearPriority resets the priority to the code's default.
	ClearPriority bool
	Timeout       *int
	TaskDelay     *int
	Cluster       *string
	Label         *string
}

// ParseCron parses a standard 5-field cron expression (or a descriptor such as
// @hourly), always evaluated in UTC. Time zone prefixes and @every are refused: use
// run_every for intervals.
func ParseCron(expr string) (cron.Schedule, error) {
	expr = strings.TrimSpace(expr)
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, errors.New("time zone prefixes are not supported; cron schedules run in UTC")
	}
	if strings.HasPrefix(expr, "@every") {
		return nil, errors.New("@every is not supported; use run_every")
	}
	sched, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, err
	}
	if spec, ok := sched.(*cron.SpecSchedule); ok {
		spec.Location = time.UTC
	}
	if sched.Next(time.Now().UTC()).IsZero() {
		return nil, errors.New("it never fires")
	}
	return sched, nil
}

// dbTime rounds a time to what PostgreSQL stores (microseconds), in UTC, so that the
// instants computed here compare equal to what is read back.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// timing is what decides when a schedule fires.
type timing struct {
	startAt  time.Time
	endAt    *time.Time
	runEvery int
	cron     string
	runTimes int
	runCount int
}

func timingOf(s Schedule) timing {
	return timing{startAt: s.StartAt, endAt: s.EndAt, runEvery: s.RunEvery, cron: s.Cron, runTimes: s.RunTimes, runCount: s.RunCount}
}

// cronNext is the first cron instant strictly after t (zero when there is none).
func cronNext(expr string, t time.Time) (time.Time, error) {
	sched, err := ParseCron(expr)
	if err != nil {
		return time.Time{}, fmt.Errorf("cron %q: %w", expr, err)
	}
	return dbTime(sched.Next(t.UTC())), nil
}

// plan is where a schedule stands after a computation: status, msg and next_start.
type plan struct {
	status string
	msg    string
	next   *time.Time
}

// finish turns a candidate next instant into a plan, applying run_times and end_at.
func (t timing) finish(next *time.Time, keepMsg string) plan {
	if t.runTimes > 0 && t.runCount >= t.runTimes {
		return plan{status: ScheduleComplete, msg: MsgRanMaxTimes}
	}
	if next == nil {
		if t.runEvery <= 0 && t.cron == "" {
			return plan{status: ScheduleComplete, msg: MsgRanMaxTimes}
		}
		return plan{status: ScheduleComplete, msg: MsgCronNever}
	}
	if t.endAt != nil && next.After(*t.endAt) {
		return plan{status: ScheduleComplete, msg: MsgEndReached}
	}
	return plan{status: ScheduleScheduled, msg: keepMsg, next: next}
}

// initial plans a schedule as created or re-timed by an update. A schedule that has
// never run starts at start_at, even in the past (it fires at once, as IronWorker
// did); one that has run continues at the first instant of its cadence after now.
func (t timing) initial(now time.Time, keepMsg string) (plan, error) {
	now = dbTime(now)
	start := dbTime(t.startAt)
	switch {
	case t.cron != "":
		from := start.Add(-time.Nanosecond)
		if from.Before(now) {
			from = now
		}
		n, err := cronNext(t.cron, from)
		if err != nil {
			return plan{}, err
		}
		if n.IsZero() {
			return t.finish(nil, keepMsg), nil
		}
		return t.finish(&n, keepMsg), nil
	case t.runEvery > 0:
		if t.runCount == 0 || start.After(now) {
			return t.finish(&start, keepMsg), nil
		}
		n := skipForward(start, t.runEvery, now)
		return t.finish(&n, keepMsg), nil
	default: // one-time
		if t.runCount > 0 {
			return t.finish(nil, keepMsg), nil
		}
		return t.finish(&start, keepMsg), nil
	}
}

// afterFire plans a schedule once the instant `fired` has been handled at `now`.
// Interval schedules advance by run_every, skipping instants missed during downtime
// (no burst of catch-up tasks); cron schedules go to the first instant after
// max(now, fired); one-time schedules end.
func (t timing) afterFire(fired, now time.Time, keepMsg string) (plan, error) {
	now = dbTime(now)
	switch {
	case t.cron != "":
		from := fired
		if now.After(from) {
			from = now
		}
		n, err := cronNext(t.cron, from)
		if err != nil {
			return plan{}, err
		}
		if n.IsZero() {
			return t.finish(nil, keepMsg), nil
		}
		return t.finish(&n, keepMsg), nil
	case t.runEvery > 0:
		n := fired.Add(time.Duration(t.runEvery) * time.Second)
		if !n.After(now) {
			n = skipForward(fired, t.runEvery, now)
		}
		return t.finish(&n, keepMsg), nil
	default:
		return t.finish(nil, keepMsg), nil
	}
}

// skipForward is the first instant base + k*every (k ≥ 1) strictly after now.
func skipForward(base time.Time, every int, now time.Time) time.Time {
	step := time.Duration(every) * time.Second
	if !now.After(base) {
		return base.Add(step)
	}
	k := now.Sub(base)/step + 1
	return base.Add(k * step)
}

const scheduleColumns = `id, project_id, code_name, name, payload, status, msg, start_at, end_at, run_every, cron,
	run_times, run_count, error_count, priority, timeout, task_delay, cluster, label, next_start, last_run_time,
	created_at, updated_at`

func scanSchedule(row rowScanner) (Schedule, error) {
	var s Schedule
	var end, next, last sql.NullTime
	var every, prio, timeout sql.NullInt64
	var cronExpr sql.NullString
	err := row.Scan(&s.ID, &s.ProjectID, &s.CodeName, &s.Name, &s.Payload, &s.Status, &s.Msg, &s.StartAt, &end,
		&every, &cronExpr, &s.RunTimes, &s.RunCount, &s.ErrorCount, &prio, &timeout, &s.TaskDelay, &s.Cluster,
		&s.Label, &next, &last, &s.CreatedAt, &s.UpdatedAt)
	if err != nil {
		return Schedule{}, err
	}
	s.StartAt, s.CreatedAt, s.UpdatedAt = s.StartAt.UTC(), s.CreatedAt.UTC(), s.UpdatedAt.UTC()
	s.EndAt, s.NextStart, s.LastRunTime = nullTime(end), nullTime(next), nullTime(last)
	if every.Valid {
		s.RunEvery = int(every.Int64)
	}
	s.Cron = cronExpr.String
	s.Priority, s.Timeout = nullInt(prio), nullInt(timeout)
	return s, nil
}

// cadenceColumns turns a schedule's cadence into the run_every and cron column values
// (exactly one non-NULL, as the table requires; one-time schedules store run_every 0).
func cadenceColumns(runEvery int, cronExpr string) (any, any) {
	if cronExpr != "" {
		return nil, cronExpr
	}
	if runEvery < 0 {
		runEvery = 0
	}
	return runEvery, nil
}

// CreateSchedules inserts a batch of schedules in one transaction, in order: all or
// none. Every code name must be a live code of the project (*ErrCodeNotFound).
func (s *Store) CreateSchedules(ctx context.Context, projectID string, batch []NewSchedule, now time.Time) ([]string, error) {
	ids, _, err := s.CreateSchedulesOnce(ctx, projectID, nil, batch, now)
	return ids, err
}

// CreateSchedulesOnce is CreateSchedules under an idempotency key (nil = none); see
// QueueTasksOnce.
func (s *Store) CreateSchedulesOnce(ctx context.Context, projectID string, idem *Idempotency, batch []NewSchedule, now time.Time) ([]string, bool, error) {
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
		if err := checkScheduleQuota(ctx, tx, projectID, len(batch)); err != nil {
			return err
		}
		checked := map[string]bool{}
		for _, ns := range batch {
			if !checked[ns.CodeName] {
				if _, err := lookupCodeRef(ctx, tx, projectID, ns.CodeName); err != nil {
					return err
				}
				checked[ns.CodeName] = true
			}
			if ns.RunEvery <= 0 && ns.Cron == "" {
				ns.RunTimes = 1
			}
			var endAt *time.Time
			if ns.EndAt != nil {
				e := dbTime(*ns.EndAt)
				endAt = &e
			}
			t := timing{startAt: dbTime(ns.StartAt), endAt: endAt, runEvery: ns.RunEvery, cron: ns.Cron, runTimes: ns.RunTimes}
			p, err := t.initial(now, "")
			if err != nil {
				return err
			}
			cluster := ns.Cluster
			if cluster == "" {
				cluster = "default"
			}
			every, cronCol := cadenceColumns(ns.RunEvery, ns.Cron)
			id := NewID()
			// created_at is clock_timestamp(), not now(): the schedules of one batch get
			// increasing times, so that the list (newest first) keeps the batch's order.
			if _, err := tx.ExecContext(ctx, `INSERT INTO schedules
				(id, project_id, code_name, name, payload, status, msg, start_at, end_at, run_every, cron, run_times,
				 priority, timeout, task_delay, cluster, label, next_start, created_at, updated_at)
				VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18, clock_timestamp(), clock_timestamp())`,
				id, projectID, ns.CodeName, ns.Name, ns.Payload, p.status, p.msg, t.startAt, endAt, every, cronCol,
				ns.RunTimes, ns.Priority, ns.Timeout, ns.TaskDelay, cluster, ns.Label, p.next); err != nil {
				return fmt.Errorf("insert schedule: %w", err)
			}
			ids = append(ids, id)
		}
		if idem != nil {
			return recordIdempotency(ctx, tx, projectID, idem, ids)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("create %d schedules: %w", len(batch), err)
	}
	if idem != nil && !replay {
		s.purgeAfterClaim(ctx)
	}
	return ids, replay, nil
}

// GetSchedule returns a schedule of the project, or ErrNotFound (also for another
// project's schedule).
func (s *Store) GetSchedule(ctx context.Context, projectID, id string) (Schedule, error) {
	sc, err := scanSchedule(s.db.QueryRowContext(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE project_id = $1 AND id = $2`, projectID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Schedule{}, ErrNotFound
	}
	if err != nil {
		return Schedule{}, fmt.Errorf("get schedule %s: %w", id, err)
	}
	return sc, nil
}

// ListSchedules returns the project's schedules, newest first.
func (s *Store) ListSchedules(ctx context.Context, projectID string, offset, limit int) ([]Schedule, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE project_id = $1
		ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT $3`, projectID, offset, limit)
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	defer rows.Close()
	out := []Schedule{}
	for rows.Next() {
		sc, err := scanSchedule(rows)
		if err != nil {
			return nil, fmt.Errorf("list schedules: %w", err)
		}
		out = append(out, sc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	return out, nil
}

// CancelSchedule stops a schedule for good (idempotent). ErrNotFound for an unknown id.
func (s *Store) CancelSchedule(ctx context.Context, projectID, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE schedules SET status = 'cancelled', next_start = NULL,
		updated_at = CASE WHEN status = 'cancelled' THEN updated_at ELSE now() END
		WHERE project_id = $1 AND id = $2`, projectID, id)
	if err != nil {
		return fmt.Errorf("cancel schedule %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// ScheduleValidator checks a schedule as it would be after an update; a non-nil error
// aborts the update and is returned as is.
type ScheduleValidator func(Schedule) error

// UpdateSchedule applies a partial update under the row lock, re-plans next_start and
// status, and returns the schedule as updated. A schedule that had completed is
// scheduled again when the new settings leave runs to do. ErrNotFound,
// ErrScheduleCancelled, *ErrCodeNotFound (a new code_name that does not exist), or the
// validator's error.
func (s *Store) UpdateSchedule(ctx context.Context, projectID, id string, u ScheduleUpdate, now time.Time, validate ScheduleValidator) (Schedule, error) {
	var out Schedule
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		cur, err := scanSchedule(tx.QueryRowContext(ctx, `SELECT `+scheduleColumns+` FROM schedules
			WHERE project_id = $1 AND id = $2 FOR UPDATE`, projectID, id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("lock schedule: %w", err)
		}
		if cur.Status == ScheduleCancelled {
			return ErrScheduleCancelled
		}
		retimed := false
		if u.CodeName != nil && *u.CodeName != cur.CodeName {
			if _, err := lookupCodeRef(ctx, tx, projectID, *u.CodeName); err != nil {
				return err
			}
			cur.CodeName = *u.CodeName
		}
		setStr := func(dst *string, v *string) {
			if v != nil {
				*dst = *v
			}
		}
		setStr(&cur.Name, u.Name)
		setStr(&cur.Payload, u.Payload)
		setStr(&cur.Label, u.Label)
		if u.Cluster != nil {
			cur.Cluster = *u.Cluster
			if cur.Cluster == "" {
				cur.Cluster = "default"
			}
		}
		wasOneTime := cur.OneTime()
		if u.StartAt != nil && !dbTime(*u.StartAt).Equal(cur.StartAt) {
			cur.StartAt = dbTime(*u.StartAt)
			retimed = true
		}
		if u.ClearEndAt {
			cur.EndAt = nil
		} else if u.EndAt != nil {
			e := dbTime(*u.EndAt)
			cur.EndAt = &e
		}
		if u.RunEvery != nil && *u.RunEvery > 0 && (*u.RunEvery != cur.RunEvery || cur.Cron != "") {
			cur.RunEvery, cur.Cron = *u.RunEvery, ""
			retimed = true
		}
		if u.Cron != nil && *u.Cron != "" && *u.Cron != cur.Cron {
			cur.RunEvery, cur.Cron = 0, *u.Cron
			retimed = true
		}
		if u.RunTimes != nil {
			cur.RunTimes = *u.RunTimes
		} else if wasOneTime && !cur.OneTime() {
			// run_times 1 was implied by one-time; a recurring schedule without
			// run_times is unlimited.
			cur.RunTimes = 0
		}
		if cur.OneTime() {
			cur.RunTimes = 1
		}
		if u.ClearPriority {
			cur.Priority = nil
		} else if u.Priority != nil {
			p := *u.Priority
			cur.Priority = &p
		}
		if u.Timeout != nil {
			t := *u.Timeout
			cur.Timeout = &t
		}
		if u.TaskDelay != nil {
			cur.TaskDelay = *u.TaskDelay
		}
		if validate != nil {
			if err := validate(cur); err != nil {
				return err
			}
		}

		// Re-plan. Unchanged timing keeps a pending next_start (an instant due but not
		// yet fired still fires); otherwise the schedule is planned afresh.
		t := timingOf(cur)
		keepMsg := ""
		if cur.Status == ScheduleScheduled {
			keepMsg = cur.Msg
		}
		var p plan
		if !retimed && cur.Status == ScheduleScheduled && cur.NextStart != nil {
			p = t.finish(cur.NextStart, keepMsg)
		} else {
			if p, err = t.initial(now, keepMsg); err != nil {
				return err
			}
		}
		cur.Status, cur.Msg, cur.NextStart = p.status, p.msg, p.next

		every, cronCol := cadenceColumns(cur.RunEvery, cur.Cron)
		out, err = scanSchedule(tx.QueryRowContext(ctx, `UPDATE schedules SET code_name = $3, name = $4, payload = $5, status = $6,
			msg = $7, start_at = $8, end_at = $9, run_every = $10, cron = $11, run_times = $12, priority = $13,
			timeout = $14, task_delay = $15, cluster = $16, label = $17, next_start = $18, updated_at = now()
			WHERE project_id = $1 AND id = $2 RETURNING `+scheduleColumns,
			projectID, id, cur.CodeName, cur.Name, cur.Payload, cur.Status, cur.Msg, cur.StartAt, cur.EndAt, every,
			cronCol, cur.RunTimes, cur.Priority, cur.Timeout, cur.TaskDelay, cur.Cluster, cur.Label, cur.NextStart))
		if err != nil {
			return fmt.Errorf("update schedule: %w", err)
		}
		return nil
	})
	if err != nil {
		return Schedule{}, err
	}
	return out, nil
}

// FireEvent is what happened to one due schedule in FireDueSchedules.
type FireEvent struct {
	ScheduleID   string
	ProjectID    string
	CodeName     string
	ScheduledFor time.Time // the instant handled
	TaskID       string    // the task queued, or "" when none was
	// AlreadyFired means the instant already had its task (nothing was queued).
	AlreadyFired bool
	// Problem is why no task was queued (the schedule's error_count went up), or "".
	Problem string
	// Status and NextStart are where the schedule stands afterwards.
	Status    string
	NextStart *time.Time
}

// FireDueSchedules queues one task for every schedule due at now (status scheduled,
// next_start <= now), batchSize schedules per transaction, until none is left.
//
// A batch is set-based, a fixed number of statements whatever its size: one locks its
// schedules with FOR UPDATE SKIP LOCKED (so concurrent callers share the work instead of
// repeating it), one reads their codes, one inserts all their tasks and one updates all
// the schedules (next_start, run_count, ...). The unique index on (schedule_id,
// scheduled_for) makes a second task for one instant impossible even so: the insert
// skips such an instant (ON CONFLICT DO NOTHING) and it is reported as AlreadyFired.
// Safe to call from any number of processes. In a backlog (a batch came back full)
// fireWorkers batches run at once, each in a transaction of its own, so events come in
// no particular order. Lease long-polls are woken after each batch that queued tasks
// has committed.
func (s *Store) FireDueSchedules(ctx context.Context, now time.Time, batchSize int) ([]FireEvent, error) {
	if batchSize < 1 {
		batchSize = 100
	}
	now = dbTime(now)
	// One batch first; when it came back full there is a backlog (a burst of schedules
	// due at once), which fireWorkers batches then share, SKIP LOCKED keeping them apart.
	all, more, err := s.fireOneBatch(ctx, now, batchSize)
	if err != nil || !more {
		return all, err
	}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for w := 0; w < fireWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				events, more, err := s.fireOneBatch(ctx, now, batchSize)
				mu.Lock()
				all = append(all, events...)
				if err != nil && firstErr == nil {
					firstErr = err
				}
				stop := firstErr != nil
				mu.Unlock()
				if !more || stop {
					return
				}
			}
		}()
	}
	wg.Wait()
	return all, firstErr
}

// fireWorkers is how many batches FireDueSchedules fires at once in a backlog: two
// keep PostgreSQL busy on two cores (each batch is CPU-bound on its backend) while one
// waits for its commit; more gain little and take connections from the API.
const fireWorkers = 2

// fireOneBatch fires one batch in a transaction of its own; more tells that the batch
// was full (more may be due).
func (s *Store) fireOneBatch(ctx context.Context, now time.Time, batchSize int) ([]FireEvent, bool, error) {
	var events []FireEvent
	queued := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		events, queued, err = fireBatch(ctx, tx, now, batchSize)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("fire due schedules: %w", err)
	}
	if queued {
		s.queueChanged()
	}
	return events, len(events) == batchSize && ctx.Err() == nil, nil
}

func lockDueSchedules(ctx context.Context, tx *sql.Tx, now time.Time, limit int) ([]Schedule, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+scheduleColumns+` FROM schedules
		WHERE status = 'scheduled' AND next_start <= $1
		ORDER BY next_start LIMIT $2 FOR UPDATE SKIP LOCKED`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("select due schedules: %w", err)
	}
	defer rows.Close()
	var due []Schedule
	for rows.Next() {
		sc, err := scanSchedule(rows)
		if err != nil {
			return nil, fmt.Errorf("scan due schedule: %w", err)
		}
		due = append(due, sc)
	}
	return due, rows.Err()
}

// codeKey names a code of a project.
type codeKey struct{ project, name string }

// firingCode is a live code as fireBatch needs it: what its tasks run, and whether its
// project is live (a deprovisioned project takes no task).
type firingCode struct {
	codeRef
	projectLive bool
}

// lookupFiringCodes reads the live codes named by keys in one statement, each under its
// shared delete lock until tx ends (iron_live_code_locked, as the queue statements and
// lookupCodeRef take it); a name without a live code is absent from the answer.
func lookupFiringCodes(ctx context.Context, tx *sql.Tx, keys map[codeKey]bool) (map[codeKey]firingCode, error) {
	projects := make([]string, 0, len(keys))
	names := make([]string, 0, len(keys))
	for k := range keys {
		projects, names = append(projects, k.project), append(names, k.name)
	}
	rows, err := tx.QueryContext(ctx, `SELECT c.project_id, c.name, c.id, c.latest_revision_id, c.rev, r.default_priority,
			p.deleted_at IS NULL
		FROM unnest($1::text[], $2::text[]) AS k(project_id, name)
		JOIN codes c ON c.project_id = k.project_id AND c.name = k.name AND c.deleted_at IS NULL
		JOIN code_revisions r ON r.id = c.latest_revision_id
		JOIN projects p ON p.id = c.project_id
		WHERE iron_live_code_locked(c.id)`, pq.Array(projects), pq.Array(names))
	if err != nil {
		return nil, fmt.Errorf("look up codes: %w", err)
	}
	defer rows.Close()
	out := make(map[codeKey]firingCode, len(keys))
	for rows.Next() {
		var c firingCode
		var project string
		var defPrio sql.NullInt64
		if err := rows.Scan(&project, &c.Name, &c.ID, &c.RevisionID, &c.Rev, &defPrio, &c.projectLive); err != nil {
			return nil, fmt.Errorf("look up codes: %w", err)
		}
		c.DefaultPriority = nullInt(defPrio)
		out[codeKey{project, c.Name}] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up codes: %w", err)
	}
	return out, nil
}

// insertScheduledTasks queues the tasks of a batch of schedule instants in one
// statement, each the row that QueueTasks writes (the batch's times one
// clock_timestamp() plus a microsecond per position, so that the queue keeps the due
// order; run_at = created_at + delay; a priority that the project's plan does not allow
// falls back to 0; a disabled project takes no task), except that an instant which
// already has its task (tasks_schedule_instant) is skipped instead of failing the
// statement. It answers the task queued per schedule id.
func insertScheduledTasks(ctx context.Context, tx *sql.Tx, b *taskBatch) (map[string]string, error) {
	rows, err := tx.QueryContext(ctx, `INSERT INTO tasks
		(id, project_id, code_id, code_name, code_revision_id, code_rev, status, priority, timeout, delay, cluster, label,
		 payload, run_at, retry_count, original_task_id, schedule_id, scheduled_for, created_at, updated_at)
		SELECT u.id, u.project_id, u.code_id, u.code_name, u.code_revision_id, u.code_rev, 'queued',
		       CASE WHEN p.allowed_priorities IS NULL OR u.priority = ANY (p.allowed_priorities) THEN u.priority ELSE 0 END,
		       u.timeout, u.delay, u.cluster, u.label, u.payload, x.at + u.delay * interval '1 second', 0, NULL,
		       u.schedule_id, u.scheduled_for, x.at, x.at
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::int[],
		            $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::timestamptz[])
		         WITH ORDINALITY AS u(id, project_id, code_id, code_name, code_revision_id, code_rev, priority, timeout,
		                              delay, cluster, label, payload, schedule_id, scheduled_for, ord)
		JOIN projects p ON p.id = u.project_id AND p.deleted_at IS NULL
		CROSS JOIN (SELECT clock_timestamp() AS ts) now
		CROSS JOIN LATERAL (SELECT now.ts + (u.ord - 1) * interval '1 microsecond' AS at) x
		ON CONFLICT (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL DO NOTHING
		RETURNING schedule_id, id`,
		pq.Array(b.id), pq.Array(b.projectID), pq.Array(b.codeID), pq.Array(b.codeName), pq.Array(b.revisionID),
		pq.Array(b.rev), pq.Array(b.priority), pq.Array(b.timeout), pq.Array(b.delay), pq.Array(b.cluster),
		pq.Array(b.label), pq.Array(b.payload), pq.Array(b.scheduleID), pq.Array(b.scheduledFor))
	if err != nil {
		return nil, fmt.Errorf("insert tasks: %w", err)
	}
	defer rows.Close()
	out := make(map[string]string, len(b.id))
	for rows.Next() {
		var scheduleID, taskID string
		if err := rows.Scan(&scheduleID, &taskID); err != nil {
			return nil, fmt.Errorf("insert tasks: %w", err)
		}
		out[scheduleID] = taskID
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("insert tasks: %w", err)
	}
	return out, nil
}

// taskBatch holds the tasks of a firing batch column by column, as the insert's unnest
// takes them.
type taskBatch struct {
	id, projectID, codeID, codeName, revisionID, cluster, label, payload, scheduleID, scheduledFor []string
	rev, priority, timeout, delay                                                                  []int64
}

func (b *taskBatch) add(sc Schedule, code codeRef, instant time.Time) {
	priority, cluster := taskDefaults(code, sc.Priority, sc.Cluster)
	timeout := FallbackScheduleTimeout
	if sc.Timeout != nil && *sc.Timeout > 0 {
		timeout = *sc.Timeout
	}
	b.id = append(b.id, NewID())
	b.projectID = append(b.projectID, sc.ProjectID)
	b.codeID = append(b.codeID, code.ID)
	b.codeName = append(b.codeName, code.Name)
	b.revisionID = append(b.revisionID, code.RevisionID)
	b.rev = append(b.rev, int64(code.Rev))
	b.priority = append(b.priority, int64(priority))
	b.timeout = append(b.timeout, int64(timeout))
	b.delay = append(b.delay, int64(sc.TaskDelay))
	b.cluster = append(b.cluster, cluster)
	b.label = append(b.label, sc.Label)
	b.payload = append(b.payload, sc.Payload)
	b.scheduleID = append(b.scheduleID, sc.ID)
	b.scheduledFor = append(b.scheduledFor, instant.UTC().Format(time.RFC3339Nano))
}

// existingInstants answers which of the schedules' instants already have their task.
func existingInstants(ctx context.Context, tx *sql.Tx, scheduleIDs, instants []string) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT t.schedule_id FROM tasks t
		JOIN unnest($1::text[], $2::timestamptz[]) AS k(schedule_id, scheduled_for)
		  ON t.schedule_id = k.schedule_id AND t.scheduled_for = k.scheduled_for
		WHERE t.schedule_id = ANY ($1::text[])`,
		pq.Array(scheduleIDs), pq.Array(instants))
	if err != nil {
		return nil, fmt.Errorf("read fired instants: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read fired instants: %w", err)
		}
		out[id] = true
	}
	return out, rows.Err()
}

// fireBatch handles the due instants of up to limit schedules in tx, in four
// statements (five when an instant was skipped by the insert): it answers one event per
// schedule, in due order, and whether any task was queued.
func fireBatch(ctx context.Context, tx *sql.Tx, now time.Time, limit int) ([]FireEvent, bool, error) {
	due, err := lockDueSchedules(ctx, tx, now, limit)
	if err != nil || len(due) == 0 {
		return nil, false, err
	}
	events := make([]FireEvent, len(due))
	pastEnd := make([]bool, len(due))
	keys := map[codeKey]bool{}
	for i, sc := range due {
		instant := *sc.NextStart
		events[i] = FireEvent{ScheduleID: sc.ID, ProjectID: sc.ProjectID, CodeName: sc.CodeName, ScheduledFor: instant}
		// An instant past end_at (end_at moved by an update) ends the schedule unfired.
		if sc.EndAt != nil && instant.After(*sc.EndAt) {
			pastEnd[i] = true
			continue
		}
		keys[codeKey{sc.ProjectID, sc.CodeName}] = true
	}

	var codes map[codeKey]firingCode
	if len(keys) > 0 {
		if codes, err = lookupFiringCodes(ctx, tx, keys); err != nil {
			return nil, false, err
		}
	}
	var batch taskBatch
	for i, sc := range due {
		if pastEnd[i] {
			continue
		}
		instant := *sc.NextStart
		code, ok := codes[codeKey{sc.ProjectID, sc.CodeName}]
		switch {
		case !ok:
			events[i].Problem = fmt.Sprintf("Code %q not found: the run due at %s was skipped", sc.CodeName, instant.Format(time.RFC3339))
		case !code.projectLive:
			events[i].Problem = fmt.Sprintf("The project is disabled: the run due at %s was skipped", instant.Format(time.RFC3339))
		default:
			batch.add(sc, code.codeRef, instant)
		}
	}
	var queued map[string]string // schedule id → task id
	if len(batch.id) > 0 {
		if queued, err = insertScheduledTasks(ctx, tx, &batch); err != nil {
			return nil, false, err
		}
	}
	if len(queued) < len(batch.id) {
		// Skipped by the insert: the instant already has its task, or (a deprovision
		// that committed since the codes were read) the project is gone.
		var ids, instants []string
		for i, id := range batch.scheduleID {
			if _, ok := queued[id]; !ok {
				ids, instants = append(ids, id), append(instants, batch.scheduledFor[i])
			}
		}
		fired, err := existingInstants(ctx, tx, ids, instants)
		if err != nil {
			return nil, false, err
		}
		for i, sc := range due {
			if _, ok := queued[sc.ID]; ok || pastEnd[i] || events[i].Problem != "" {
				continue
			}
			if fired[sc.ID] {
				events[i].AlreadyFired = true
			} else {
				events[i].Problem = fmt.Sprintf("The project is disabled: the run due at %s was skipped", sc.NextStart.Format(time.RFC3339))
			}
		}
	}

	// Plan every schedule and save the plans in one statement.
	n := len(due)
	ids, statuses, msgs := make([]string, n), make([]string, n), make([]string, n)
	nexts := make([]sql.NullString, n)
	ran, failed := make([]int64, n), make([]int64, n)
	for i, sc := range due {
		ev := &events[i]
		instant := *sc.NextStart
		t := timingOf(sc)
		var p plan
		if pastEnd[i] {
			p = t.finish(&instant, "")
		} else {
			if id, ok := queued[sc.ID]; ok {
				ev.TaskID = id
				t.runCount++
				ran[i] = 1
			}
			keepMsg := ""
			if ev.Problem != "" {
				keepMsg = ev.Problem
				failed[i] = 1
			} else if ev.AlreadyFired {
				keepMsg = sc.Msg
			}
			if p, err = t.afterFire(instant, now, keepMsg); err != nil {
				// An expression stored unparseable (it was checked on the way in): end it.
				p = plan{status: ScheduleComplete, msg: "Invalid cron expression: " + err.Error()}
			}
		}
		ev.Status, ev.NextStart = p.status, p.next
		ids[i], statuses[i], msgs[i] = sc.ID, p.status, p.msg
		if p.next != nil {
			nexts[i] = sql.NullString{String: p.next.UTC().Format(time.RFC3339Nano), Valid: true}
		}
	}
	// s.id = ANY ($1) lets the planner look the batch up by primary key instead of
	// hashing a scan of the whole table (which would make firing quadratic).
	if _, err := tx.ExecContext(ctx, `UPDATE schedules s SET status = u.status, msg = u.msg, next_start = u.next_start,
			run_count = s.run_count + u.ran, error_count = s.error_count + u.failed,
			last_run_time = CASE WHEN u.ran > 0 THEN $7::timestamptz ELSE s.last_run_time END, updated_at = now()
		FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::int[])
		     AS u(id, status, msg, next_start, ran, failed)
		WHERE s.id = u.id AND s.id = ANY ($1::text[])`,
		pq.Array(ids), pq.Array(statuses), pq.Array(msgs), pq.Array(nexts), pq.Array(ran), pq.Array(failed), now); err != nil {
		return nil, false, fmt.Errorf("update schedules: %w", err)
	}
	return events, len(queued) > 0, nil
}
