package api

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

// Plan quotas of broker-made projects (see package broker and store.Quotas). Projects
// made with `iron-api admin create-project` have none, and only the platform-wide
// limits apply to them. What is checked where:
//   - payload above max_payload_bytes: 413, here;
//   - timeout above max_timeout_seconds: 400, here (an unset timeout becomes the
//     smaller of the default and the plan's maximum);
//   - queueing beyond max_queued_tasks and creating schedules beyond max_schedules: 403,
//     counted in the store inside the queueing/creating transaction;
//   - a priority the plan does not allow: the task runs at priority 0 (store);
//   - max_concurrency: tasks beyond it wait queued (the lease query).

// projectQuotas reads the authenticated project's quotas; false once it has answered.
func (s *Server) projectQuotas(c *gin.Context) (store.Quotas, bool) {
	q, err := s.store.ProjectQuotas(c.Request.Context(), projectID(c))
	if errors.Is(err, store.ErrNotFound) {
		abortMsg(c, http.StatusNotFound, "Project not found")
		return q, false
	}
	if err != nil {
		s.fail(c, err)
		return q, false
	}
	return q, true
}

// quotaCacheTTL is how long queueTasks checks batches against the quotas it read last
// for a project instead of reading them again. A stale copy costs nothing but a retry:
// the store queues only if the project still has the limits the batch was checked
// against (store.QueueTasksChecked), and a batch that a cached copy refuses is checked
// again against fresh quotas before the answer.
const quotaCacheTTL = 2 * time.Second

// quotaCache remembers project id → quotas for quotaCacheTTL.
type quotaCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]quotaEntry
}

type quotaEntry struct {
	quotas  store.Quotas
	expires time.Time
}

// maxCachedQuotas bounds the cache; when full, it starts over.
const maxCachedQuotas = 10000

func newQuotaCache(ttl time.Duration, now func() time.Time) *quotaCache {
	return &quotaCache{ttl: ttl, now: now, entries: map[string]quotaEntry{}}
}

func (qc *quotaCache) get(projectID string) (store.Quotas, bool) {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	e, ok := qc.entries[projectID]
	if ok && !qc.now().Before(e.expires) {
		delete(qc.entries, projectID)
		ok = false
	}
	return e.quotas, ok
}

func (qc *quotaCache) put(projectID string, q store.Quotas) {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	if len(qc.entries) >= maxCachedQuotas {
		clear(qc.entries)
	}
	qc.entries[projectID] = quotaEntry{quotas: q, expires: qc.now().Add(qc.ttl)}
}

// queueQuotas is projectQuotas through the quota cache, for paths that queue with
// store.QueueTasksChecked (fresh false: from the cache). False once it has answered.
func (s *Server) queueQuotas(c *gin.Context, fresh bool) (store.Quotas, bool, bool) {
	pid := projectID(c)
	if !fresh {
		if q, ok := s.quotas.get(pid); ok {
			return q, false, true
		}
	}
	q, ok := s.projectQuotas(c)
	if ok {
		s.quotas.put(pid, q)
	}
	return q, true, ok
}

// quotaPayload refuses a payload above the plan's max_payload_bytes (413).
func quotaPayload(q store.Quotas, payload string) *inputError {
	if q.MaxPayloadBytes != nil && len(payload) > *q.MaxPayloadBytes {
		return &inputError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("payload is %d bytes; the plan's limit is %d bytes (max_payload_bytes)", len(payload), *q.MaxPayloadBytes)}
	}
	return nil
}

// quotaTimeout checks a resolved timeout against the plan's max_timeout_seconds: one the
// client asked for above it is refused (400), the default is lowered to it.
func quotaTimeout(q store.Quotas, asked flexInt, timeout *int) *inputError {
	if q.MaxTimeoutSeconds == nil || *timeout <= *q.MaxTimeoutSeconds {
		return nil
	}
	if asked.Set && asked.Value != 0 {
		return badRequest("timeout must be at most %d seconds on this plan (max_timeout_seconds)", *q.MaxTimeoutSeconds)
	}
	*timeout = *q.MaxTimeoutSeconds
	return nil
}

// taskQuotas applies the plan's payload and timeout limits to a task to queue.
func taskQuotas(q store.Quotas, in taskInput, nt *store.NewTask) *inputError {
	if e := quotaPayload(q, nt.Payload); e != nil {
		return e
	}
	return quotaTimeout(q, in.Timeout, &nt.Timeout)
}

// scheduleQuotas applies the plan's payload and timeout limits to a new schedule.
func scheduleQuotas(q store.Quotas, in scheduleIn, ns *store.NewSchedule) *inputError {
	if e := quotaPayload(q, ns.Payload); e != nil {
		return e
	}
	return quotaTimeout(q, in.Timeout, &ns.Timeout)
}

// scheduleUpdateQuotas applies them to the fields an update sets.
func scheduleUpdateQuotas(q store.Quotas, in scheduleIn, u *store.ScheduleUpdate) *inputError {
	if u.Payload != nil {
		if e := quotaPayload(q, *u.Payload); e != nil {
			return e
		}
	}
	if u.Timeout != nil {
		return quotaTimeout(q, in.Timeout, u.Timeout)
	}
	return nil
}

// quotaExceeded answers 403 for a *store.QuotaError (true then).
func quotaExceeded(c *gin.Context, err error) bool {
	var qe *store.QuotaError
	if !errors.As(err, &qe) {
		return false
	}
	var msg string
	switch qe.Limit {
	case "max_queued_tasks":
		msg = fmt.Sprintf("Plan limit reached: at most %d queued tasks (max_queued_tasks); %d are queued and this request adds %d",
			qe.Max, qe.Current, qe.Adding)
	case "max_schedules":
		msg = fmt.Sprintf("Plan limit reached: at most %d schedules (max_schedules); %d are active and this request adds %d",
			qe.Max, qe.Current, qe.Adding)
	default:
		msg = fmt.Sprintf("Plan limit reached: %s is %d", qe.Limit, qe.Max)
	}
	abortMsg(c, http.StatusForbidden, msg)
	return true
}

// projectGone answers 404 when the project was deprovisioned while the request ran (its
// tokens are revoked; later requests get 401). True then.
func projectGone(c *gin.Context, err error) bool {
	if errors.Is(err, store.ErrNotFound) {
		abortMsg(c, http.StatusNotFound, "Project not found")
		return true
	}
	return false
}
