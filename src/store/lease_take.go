package store

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/lib/pq"
)

// LeaseTasks leases up to req.MaxTasks queued tasks: highest priority first, then oldest
// run_at, skipping tasks whose run_at (delay) is in the future, codes that are paused,
// codes at their max_concurrency (of the code's latest revision, counting its preparing
// and running tasks and those queued for adoption) and projects at theirs
// (projects.max_concurrency, a broker plan's quota, counted the same way over all the
// project's codes). A task queued for adoption (an adoptable backend ref) is leased
// regardless of pause and max_concurrency: it already runs.
//
// A lease is a few rounds (usually one) of two statements: a scan that reads candidates
// without locks (scanQueue), then a take that locks the picks with FOR UPDATE SKIP
// LOCKED, re-checks their status, leases them and returns everything a runner needs
// (takeTasks), autocommitted. Only when a pick's code or project has a max_concurrency
// does the take run in a transaction that first locks those codes and projects
// (pg_advisory_xact_lock on their keys, in sorted order) and counts their active tasks,
// so that concurrent leases never exceed either. A lease holds row locks only on what it
// takes, so concurrent leases do not hide tasks from each other.
//
// A leased task becomes 'preparing' ('running' when it is adopted after having
// started). Cancelled tasks that may still run under an adoptable backend ref and that
// no runner holds (cancelled while queued for adoption, or their holder was lost) come
// first, as Cancel leases, so that nothing cancelled keeps running. An empty result is
// not an error.
//
// A task that would start but whose code revision's config or env_vars cannot be
// decrypted (sealed with a key that is no longer configured) is not handed out: it ends
// 'error' at once, with a msg naming the key (never a secret) and without a retry (it
// would fail alike), and the lease goes on with other tasks. Adopt and Cancel leases of
// such a revision are handed out without config and env_vars, which only starting a
// task needs.
func (s *Store) LeaseTasks(ctx context.Context, req LeaseRequest) ([]LeasedTask, error) {
	if req.MaxTasks < 1 {
		req.MaxTasks = 1
	}
	if req.Duration <= 0 {
		req.Duration = 30 * time.Second
	}
	var out []LeasedTask
	st := &leaseState{skip: []string{}, excluded: []string{}, excludedProjects: []string{}}
	for round := 0; round < maxLeaseRounds && len(out) < req.MaxTasks; round++ {
		got, again, err := s.leaseRound(ctx, req, req.MaxTasks-len(out), st, round == 0)
		if err != nil {
			if len(out) > 0 {
				break // hand out what is leased; the next call reports the problem
			}
			return nil, fmt.Errorf("lease tasks: %w", err)
		}
		out = append(out, got...)
		if !again {
			break
		}
	}
	return out, nil
}

// maxLeaseRounds bounds the rounds of one lease: each round skips the rows earlier
// rounds took or found locked and the codes and projects they found full.
const maxLeaseRounds = 4

// leaseState carries what earlier rounds of one lease learnt (never nil: SQL arrays).
type leaseState struct {
	skip             []string // tasks taken, or picked and found locked by another lease
	excluded         []string // codes found full or busy
	excludedProjects []string // projects found full or busy
}

// candidate is a task a lease may take.
type candidate struct {
	id, codeID, projectID string
	adopt                 bool
	cancel                bool // a Cancel lease: cancelled, may still run, nobody holds it
	priority              int
	runAt                 time.Time
	maxConc               sql.NullInt64 // the code's
	projectMaxConc        sql.NullInt64 // the project's (plan quota)
}

func (c candidate) capped() bool {
	return !c.adopt && !c.cancel && (c.maxConc.Valid || c.projectMaxConc.Valid)
}

// leaseRound takes up to want tasks in one scan and one take. again tells whether
// another round may find more (rows were locked elsewhere, codes or projects were full,
// the scan was cut short, or tasks ended undecryptable).
func (s *Store) leaseRound(ctx context.Context, req LeaseRequest, want int, st *leaseState, first bool) (
	out []LeasedTask, again bool, err error) {
	cancelLimit := 0
	if first {
		cancelLimit = want
	}
	limit := candidateLimit(want)
	scan, err := s.scanQueue(ctx, nil, limit, cancelLimit, st)
	if err != nil {
		return nil, false, err
	}
	st.excluded = append(st.excluded, scan.blockedCodes...)
	st.excludedProjects = append(st.excludedProjects, scan.blockedProjects...)
	more := scan.more

	var picks []candidate
	var heldBack roundHeldBack
	capped := false
	for _, c := range scan.cands {
		capped = capped || c.capped()
	}
	var leased []LeasedTask
	var sealedOff map[string]string
	if !capped {
		picks = scan.cands
		if len(picks) > want {
			picks, more = picks[:want], true
		}
		leased, sealedOff, err = s.takeTasks(ctx, nil, picks, req)
	} else {
		err = s.inHotTx(ctx, func(tx *sql.Tx) error {
			var err error
			if picks, heldBack, more, err = pickWithinCaps(ctx, tx, scan.cands, want, more); err != nil {
				return err
			}
			leased, sealedOff, err = s.takeTasks(ctx, tx, picks, req)
			return err
		})
	}
	if err != nil {
		return nil, false, err
	}
	taken := make(map[string]bool, len(leased))
	for _, lt := range leased {
		taken[lt.Task.ID] = true
	}
	lockedElsewhere := 0
	for _, c := range picks {
		st.skip = append(st.skip, c.id)
		if !taken[c.id] {
			lockedElsewhere++
		}
	}
	st.excluded = append(st.excluded, heldBack.codes...)
	st.excludedProjects = append(st.excludedProjects, heldBack.projects...)
	out, failed, err := s.endUndecryptable(ctx, leased, sealedOff)
	if err != nil {
		return out, false, err
	}
	again = lockedElsewhere > 0 || len(heldBack.codes) > 0 || len(heldBack.projects) > 0 || more || failed > 0
	return out, again, nil
}

// candidateLimit is how many candidates a round reads to take want tasks: some may fail
// the concurrency check or be taken by another lease, so a few more than wanted, so that
// one capped code does not starve the lease.
func candidateLimit(want int) int { return 2*want + 8 }

// endUndecryptable ends the leased tasks of revisions whose secrets cannot be
// decrypted (sealedOff, by revision) that were to start, and returns the others.
func (s *Store) endUndecryptable(ctx context.Context, leased []LeasedTask, sealedOff map[string]string) ([]LeasedTask, int, error) {
	if len(sealedOff) == 0 {
		return leased, 0, nil
	}
	out := leased[:0:0]
	failed := 0
	for _, lt := range leased {
		msg, bad := sealedOff[lt.Task.CodeRevisionID]
		if !bad || lt.Adopt || lt.Cancel {
			out = append(out, lt)
			continue
		}
		t := lt.Task
		if _, err := s.db.ExecContext(ctx, `UPDATE tasks SET status = 'error', msg = $3, start_time = coalesce(start_time, now()),
				end_time = now(), lease_expires_at = NULL, updated_at = now()
			WHERE id = $1 AND lease_id = $2`, t.ID, lt.LeaseID, msg); err != nil {
			// The lease expires and the reaper hands the task back; it fails alike then.
			return out, failed, fmt.Errorf("end task %s with undecryptable secrets: %w", t.ID, err)
		}
		failed++
		s.log.Error("task ended: its code revision's secrets cannot be decrypted", "task_id", t.ID,
			"project_id", t.ProjectID, "code_name", t.CodeName, "code_revision_id", t.CodeRevisionID, "msg", msg)
	}
	if failed > 0 {
		s.queueChanged() // the slots they took are free again
	}
	return out, failed, nil
}

// queueScanRows bounds how many rows per priority the scan reads before it falls back
// to reading each code's queue head.
const queueScanRows = 500

// scanResult is what scanQueue found.
type scanResult struct {
	cands           []candidate // Cancel leases first, then priority, then run_at order
	blockedCodes    []string    // paused or at max_concurrency now
	blockedProjects []string    // at max_concurrency now
	more            bool        // limit reached: there may be more candidates
}

// queueScan is scanQueue's statement. $1/$4: codes/projects excluded by earlier rounds,
// $2: tasks to skip, $3: rows read at most per priority, $5: candidates wanted, $6:
// Cancel leases wanted.
//
// Per priority it walks one index range (tasks_queue: priority, run_at), so tasks
// delayed into the future are never walked over, and keeps the first $5 eligible rows
// (not of an excluded code or project, unless queued for adoption); the walk stops as
// soon as it has them, and after $3 rows at most. A priority that yielded fewer than $5
// although its walk read $3 rows is reported saturated: eligible tasks may lie beyond
// (that count runs only for such a short priority). In the same round trip: the paused
// and full codes and projects (which read the active tasks only, never the queue), each
// candidate's max_concurrency (its code's latest revision's) and its project's, and the
// Cancel leases due.
var queueScan = func() string {
	const window = `SELECT t.id, t.code_id, t.backend_ref IS NOT NULL AS adopt, t.priority, t.run_at, t.project_id FROM tasks t
		WHERE t.status = 'queued' AND t.priority = %d AND t.run_at <= now() AND NOT (t.id = ANY($2::text[]))
		ORDER BY t.run_at, t.id LIMIT $3`
	const eligible = `(SELECT w.* FROM (` + window + `) w
		WHERE w.adopt OR NOT (w.code_id = ANY((SELECT codes FROM ex)::text[]) OR w.project_id = ANY((SELECT projects FROM ex)::text[]))
		ORDER BY w.run_at, w.id LIMIT $5)`
	const saturated = `SELECT 'saturated', NULL, NULL, NULL, false, %d, NULL, NULL, NULL
		WHERE (SELECT count(*) FROM e WHERE e.priority = %d) < $5
		  AND (SELECT count(*) FROM (` + window + `) w) = $3`
	return `WITH bc AS (` + blockedCodes + `), bp AS (` + blockedProjects + `),
		ex AS MATERIALIZED (SELECT array(SELECT * FROM bc) || $1::text[] AS codes, array(SELECT * FROM bp) || $4::text[] AS projects),
		e AS (` + fmt.Sprintf(eligible, 2) + ` UNION ALL ` + fmt.Sprintf(eligible, 1) + ` UNION ALL ` + fmt.Sprintf(eligible, 0) + `)
		SELECT 'task'::text, e.id::text, e.code_id::text, e.project_id::text, e.adopt, e.priority::int, e.run_at::timestamptz,
		       r.max_concurrency::int, p.max_concurrency::int
		FROM e LEFT JOIN codes c ON c.id = e.code_id LEFT JOIN code_revisions r ON r.id = c.latest_revision_id
		       LEFT JOIN projects p ON p.id = e.project_id
		UNION ALL ` + fmt.Sprintf(saturated, 2, 2, 2) + `
		UNION ALL ` + fmt.Sprintf(saturated, 1, 1, 1) + `
		UNION ALL ` + fmt.Sprintf(saturated, 0, 0, 0) + `
		UNION ALL SELECT 'cancel', k.id, NULL, NULL, true, 0, NULL, NULL, NULL FROM (SELECT id FROM tasks
			WHERE status = 'cancelled' AND lease_id IS NULL AND backend_ref IS NOT NULL AND backend_adoptable
			ORDER BY updated_at LIMIT $6) k
		UNION ALL SELECT 'code', b.*, NULL, NULL, false, 0, NULL, NULL, NULL FROM bc b
		UNION ALL SELECT 'project', b.*, NULL, NULL, false, 0, NULL, NULL, NULL FROM bp b`
}()

// scanQueue reads up to limit candidates (and up to cancelLimit Cancel leases) without
// locks; when a priority's range is saturated with tasks of excluded codes or projects
// (a paused code's, a full code's or a full project's backlog) before enough eligible
// ones are found, it falls back to the head of each live code's queue (queueHeads),
// which costs a few index probes per code instead of a walk through the backlog.
func (s *Store) scanQueue(ctx context.Context, tx *sql.Tx, limit, cancelLimit int, st *leaseState) (scanResult, error) {
	rows, err := s.hotQuery(ctx, tx, queueScan, pq.Array(st.excluded), pq.Array(st.skip), max(queueScanRows, 2*limit),
		pq.Array(st.excludedProjects), limit, cancelLimit)
	if err != nil {
		return scanResult{}, fmt.Errorf("scan the queue: %w", err)
	}
	var res scanResult
	var cancels []candidate
	byPrio := map[int][]candidate{}
	saturated := map[int]bool{}
	for rows.Next() {
		var kind string
		var id, codeID, projectID sql.NullString
		var runAt sql.NullTime
		var c candidate
		if err := rows.Scan(&kind, &id, &codeID, &projectID, &c.adopt, &c.priority, &runAt, &c.maxConc, &c.projectMaxConc); err != nil {
			rows.Close()
			return scanResult{}, fmt.Errorf("scan the queue: %w", err)
		}
		c.id, c.codeID, c.projectID, c.runAt = id.String, codeID.String, projectID.String, runAt.Time
		switch kind {
		case "task":
			byPrio[c.priority] = append(byPrio[c.priority], c)
		case "saturated":
			saturated[c.priority] = true
		case "cancel":
			c.cancel = true
			cancels = append(cancels, c)
		case "code":
			res.blockedCodes = append(res.blockedCodes, c.id)
		case "project":
			res.blockedProjects = append(res.blockedProjects, c.id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return scanResult{}, fmt.Errorf("scan the queue: %w", err)
	}
	var cands []candidate
	complete := true
	for prio := 2; prio >= 0 && len(cands) < limit; prio-- {
		list := byPrio[prio]
		sortCandidates(list)
		take := min(len(list), limit-len(cands))
		cands = append(cands, list[:take]...)
		if len(cands) < limit && saturated[prio] {
			complete = false // eligible tasks of this priority may lie beyond the scan
			break
		}
	}
	if !complete {
		excluded := append(append([]string{}, st.excluded...), res.blockedCodes...)
		excludedProjects := append(append([]string{}, st.excludedProjects...), res.blockedProjects...)
		if cands, err = s.queueHeads(ctx, tx, limit, excluded, excludedProjects, st.skip); err != nil {
			return scanResult{}, err
		}
	}
	res.more = len(cands) == limit
	res.cands = append(cancels, cands...)
	return res, nil
}

// queueHeads is scanQueue's fallback: the first due tasks of each live code that is not
// excluded (nor of an excluded project), merged, plus the tasks of excluded codes and
// projects queued for adoption, each with its max_concurrency and its project's.
func (s *Store) queueHeads(ctx context.Context, tx *sql.Tx, limit int, excluded, excludedProjects, skip []string) ([]candidate, error) {
	const head = `(SELECT t.id, t.code_id, t.backend_ref IS NOT NULL AS adopt, t.priority, t.run_at, t.project_id FROM tasks t
		WHERE t.code_id = c.id AND t.status = 'queued' AND t.priority = %d AND t.run_at <= now() AND NOT (t.id = ANY($3::text[]))
		ORDER BY t.run_at, t.id LIMIT $1)`
	rows, err := s.hotQuery(ctx, tx, `WITH h AS (SELECT h.id, h.code_id, h.adopt, h.priority, h.run_at, h.project_id
		FROM codes c CROSS JOIN LATERAL (`+fmt.Sprintf(head, 2)+` UNION ALL `+fmt.Sprintf(head, 1)+` UNION ALL `+fmt.Sprintf(head, 0)+`) h
		WHERE c.deleted_at IS NULL AND NOT (c.id = ANY($2::text[])) AND NOT (c.project_id = ANY($4::text[]))
		UNION ALL
		SELECT t.id, t.code_id, true, t.priority, t.run_at, t.project_id FROM tasks t
		WHERE t.status = 'queued' AND t.backend_ref IS NOT NULL AND t.run_at <= now()
		  AND (t.code_id = ANY($2::text[]) OR t.project_id = ANY($4::text[])) AND NOT (t.id = ANY($3::text[]))
		ORDER BY 4 DESC, 5, 1
		LIMIT $1)
		SELECT h.id, h.code_id, h.adopt, h.priority, h.run_at, h.project_id, r.max_concurrency, p.max_concurrency
		FROM h LEFT JOIN codes c ON c.id = h.code_id LEFT JOIN code_revisions r ON r.id = c.latest_revision_id
		       LEFT JOIN projects p ON p.id = h.project_id`, limit, pq.Array(excluded), pq.Array(skip), pq.Array(excludedProjects))
	if err != nil {
		return nil, fmt.Errorf("select queue heads: %w", err)
	}
	defer rows.Close()
	var cands []candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.id, &c.codeID, &c.adopt, &c.priority, &c.runAt, &c.projectID, &c.maxConc, &c.projectMaxConc); err != nil {
			return nil, fmt.Errorf("select queue heads: %w", err)
		}
		cands = append(cands, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("select queue heads: %w", err)
	}
	sortCandidates(cands)
	return cands, nil
}

func sortCandidates(list []candidate) {
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if a.priority != b.priority {
			return a.priority > b.priority
		}
		if !a.runAt.Equal(b.runAt) {
			return a.runAt.Before(b.runAt)
		}
		return a.id < b.id
	})
}

// roundHeldBack lists the codes and projects whose candidates a round held back (full,
// or busy in another lease).
type roundHeldBack struct{ codes, projects []string }

// capLock is one max_concurrency to enforce: a code's or a project's.
type capLock struct {
	limit   int64
	project bool
	id      string
}

// pickWithinCaps picks up to want candidates, in order, within the room of each capped
// code and project: it locks them (pg_advisory_xact_lock on their keys, in sorted order,
// so that concurrent leases cannot deadlock) and counts their active tasks (a fresh
// snapshot after the lock: every lease committed before counts). A task is picked only
// when both its code and its project have room; Cancel and Adopt candidates always are.
func pickWithinCaps(ctx context.Context, tx *sql.Tx, cands []candidate, want int, more bool) (
	picks []candidate, held roundHeldBack, moreOut bool, err error) {
	toLock := map[string]capLock{}
	for _, c := range cands {
		if !c.capped() {
			continue
		}
		if c.maxConc.Valid {
			toLock[leaseLockKey(c.codeID)] = capLock{limit: c.maxConc.Int64, id: c.codeID}
		}
		if c.projectMaxConc.Valid {
			toLock[projectLeaseLockKey(c.projectID)] = capLock{limit: c.projectMaxConc.Int64, project: true, id: c.projectID}
		}
	}
	keys := make([]string, 0, len(toLock))
	for k := range toLock {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	room := map[string]int64{}
	for _, k := range keys {
		cl := toLock[k]
		what, count := "code", activeCount
		if cl.project {
			what, count = "project", activeProjectCount
		}
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, k); err != nil {
			return nil, held, more, fmt.Errorf("lock %s %s: %w", what, cl.id, err)
		}
		var active int64
		if err := tx.QueryRowContext(ctx, count, cl.id).Scan(&active); err != nil {
			return nil, held, more, fmt.Errorf("count active tasks of %s %s: %w", what, cl.id, err)
		}
		room[k] = cl.limit - active
	}
	heldCodes, heldProjects := map[string]bool{}, map[string]bool{}
	for _, c := range cands {
		if len(picks) == want {
			more = true
			break
		}
		if c.capped() {
			ck, pk := leaseLockKey(c.codeID), projectLeaseLockKey(c.projectID)
			if c.maxConc.Valid && room[ck] <= 0 {
				heldCodes[c.codeID] = true
				continue
			}
			if c.projectMaxConc.Valid && room[pk] <= 0 {
				heldProjects[c.projectID] = true
				continue
			}
			// Counted as taken even if another lease holds the row: the next round
			// (a fresh count) fills what is left.
			if c.maxConc.Valid {
				room[ck]--
			}
			if c.projectMaxConc.Valid {
				room[pk]--
			}
		}
		picks = append(picks, c)
	}
	for id := range heldCodes {
		held.codes = append(held.codes, id)
	}
	for id := range heldProjects {
		held.projects = append(held.projects, id)
	}
	return picks, held, more, nil
}

// takeTasks is the take of a lease: in one statement it locks the picks that are still
// takeable (FOR UPDATE SKIP LOCKED, in id order; a queued task, or a Cancel lease's
// task), leases them and reads them with their code revisions. It returns them in the
// order of picks, and the revisions whose secrets cannot be decrypted (by revision id,
// with the msg their tasks end with).
func (s *Store) takeTasks(ctx context.Context, tx *sql.Tx, picks []candidate, req LeaseRequest) ([]LeasedTask, map[string]string, error) {
	if len(picks) == 0 {
		return nil, nil, nil
	}
	ids, leaseIDs := make([]string, len(picks)), make([]string, len(picks))
	order := make(map[string]int, len(picks))
	for i, c := range picks {
		ids[i], leaseIDs[i] = c.id, newLeaseID()
		order[c.id] = i
	}
	rows, err := s.hotQuery(ctx, tx, takeTasksQuery, pq.Array(ids), pq.Array(leaseIDs), req.Duration.Milliseconds(), req.RunnerID)
	if err != nil {
		return nil, nil, fmt.Errorf("take tasks: %w", err)
	}
	defer rows.Close()
	out := make([]LeasedTask, 0, len(picks))
	revs := map[string]CodeRevision{}
	sealedOff := map[string]string{}
	for rows.Next() {
		var lt LeasedTask
		var config, env []byte
		var status string
		var rev CodeRevision
		t, err := scanTask(scanFunc(func(taskDests ...any) error {
			var err error
			rev, err = s.scanRevision(rows, append([]any{&config, &env, &lt.LeaseID, &lt.ExpiresAt, &lt.BackendRef,
				&lt.Attempt, &status}, taskDests...)...)
			return err
		}))
		if err != nil {
			return nil, nil, fmt.Errorf("take tasks: %w", err)
		}
		if opened, ok := revs[rev.ID]; ok {
			rev = opened
		} else {
			settings := rev.Settings
			if err := s.openSettings(&settings, config, env); err != nil {
				sealedOff[rev.ID] = s.undecryptableMsg(config, env)
				s.log.Warn("code revision secrets cannot be decrypted", "code_revision_id", rev.ID, "error", err.Error())
			} else {
				rev.Settings = settings
			}
			revs[rev.ID] = rev
		}
		lt.Task, lt.Revision = t, rev
		lt.Revision.Name, lt.Revision.Settings.Name = t.CodeName, t.CodeName
		lt.ExpiresAt = lt.ExpiresAt.UTC()
		lt.Adopt, lt.Cancel = lt.BackendRef != "", status == "cancelled"
		out = append(out, lt)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("take tasks: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return order[out[i].Task.ID] < order[out[j].Task.ID] })
	return out, sealedOff, nil
}

// takeTasksQuery: $1 task ids, $2 their new lease ids, $3 lease duration (ms), $4 runner.
// The picks are locked FOR UPDATE SKIP LOCKED before the update (a second write per
// row; updating them directly measured ~3% faster in scripts/bench's drain) because a
// take must never wait: a pick may be held by a long transaction, such as the cancel of
// a deprovisioned project's whole backlog, and every lease would stall behind it.
// Columns: revisionColumnsUnsealed, the sealed secrets, the lease, then taskColumns.
var takeTasksQuery = `WITH l AS (SELECT * FROM unnest($1::text[], $2::text[]) AS l(task_id, lease_id)),
	k AS MATERIALIZED (SELECT id FROM tasks
		WHERE id = ANY($1::text[])
		  AND (status = 'queued' OR (status = 'cancelled' AND lease_id IS NULL AND backend_ref IS NOT NULL AND backend_adoptable))
		ORDER BY id FOR UPDATE SKIP LOCKED),
	u AS (UPDATE tasks t SET
			status = CASE WHEN t.status = 'cancelled' THEN 'cancelled'
			              WHEN t.backend_ref IS NOT NULL AND t.start_time IS NOT NULL THEN 'running'
			              ELSE 'preparing' END,
			lease_id = l.lease_id, lease_expires_at = now() + $3::float8 * interval '1 millisecond', runner_id = $4,
			lease_count = t.lease_count + 1, updated_at = now()
		FROM l JOIN k ON k.id = l.task_id
		WHERE t.id = l.task_id
		RETURNING t.*)
	SELECT ` + revisionColumnsUnsealed + `, r.config_sealed, r.env_vars_sealed,
		t.lease_id, t.lease_expires_at, coalesce(t.backend_ref, ''), t.lease_count, t.status,
		` + taskColumnsNoLogSize + `
	FROM u t JOIN code_revisions r ON r.id = t.code_revision_id`

// taskColumnsNoLogSize is taskColumns with log_size 0: a runner has no use for it, and
// summing each leased task's log chunks cost an index probe per task.
var taskColumnsNoLogSize = func() string {
	const logSize = "coalesce((SELECT sum(length(l.data)) FROM task_log_chunks l WHERE l.task_id = t.id), 0)"
	if !strings.Contains(taskColumns, logSize) {
		panic("store: taskColumns does not end with the log size")
	}
	return strings.Replace(taskColumns, logSize, "0::bigint", 1)
}()

// scanFunc adapts a function to rowScanner, to scan one row into several scanners'
// destinations.
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// revisionColumnsUnsealed is revisionColumns without the sealed secrets (NULL instead):
// takeTasks opens them itself, so that one undecryptable revision does not fail the
// whole lease.
var revisionColumnsUnsealed = func() string {
	const sealed = "r.config_sealed, r.env_vars_sealed"
	if !strings.Contains(revisionColumns, sealed) {
		panic("store: revisionColumns does not list " + sealed)
	}
	return strings.Replace(revisionColumns, sealed, "NULL::bytea, NULL::bytea", 1)
}()

// ExplainLease returns EXPLAIN (ANALYZE, BUFFERS) of the two statements of a lease
// round of up to maxTasks tasks, the scan and the take, run in a transaction that is
// rolled back: nothing stays leased. For benchmarks and operators' diagnosis.
func (s *Store) ExplainLease(ctx context.Context, maxTasks int) (string, error) {
	var b strings.Builder
	err := func() error {
		tx, err := s.hot.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		st := &leaseState{skip: []string{}, excluded: []string{}, excludedProjects: []string{}}
		limit := candidateLimit(maxTasks)
		explain := func(title, query string, args ...any) error {
			rows, err := tx.QueryContext(ctx, `EXPLAIN (ANALYZE, BUFFERS) `+query, args...)
			if err != nil {
				return fmt.Errorf("explain %s: %w", title, err)
			}
			defer rows.Close()
			fmt.Fprintf(&b, "-- %s\n", title)
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					return err
				}
				b.WriteString(line + "\n")
			}
			return rows.Err()
		}
		if err := explain("lease scan (unlocked candidates, blocked codes and projects, Cancel leases)", queueScan,
			pq.Array(st.excluded), pq.Array(st.skip), max(queueScanRows, 2*limit), pq.Array(st.excludedProjects), limit, maxTasks); err != nil {
			return err
		}
		scan, err := s.scanQueue(ctx, tx, limit, maxTasks, st)
		if err != nil {
			return err
		}
		ids, leaseIDs := []string{}, []string{}
		for _, c := range scan.cands[:min(len(scan.cands), maxTasks)] {
			ids, leaseIDs = append(ids, c.id), append(leaseIDs, newLeaseID())
		}
		return explain(fmt.Sprintf("lease take (%d tasks: lock, lease, read with their revisions)", len(ids)), takeTasksQuery,
			pq.Array(ids), pq.Array(leaseIDs), int64(30000), "explain")
	}()
	if err != nil {
		return "", fmt.Errorf("explain lease: %w", err)
	}
	return b.String(), nil
}
