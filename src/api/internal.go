package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/store"
)

// The runner protocol under /internal/v1, spoken by iron-runner (src/client is its Go
// client). Every route needs a runner credential from the API's config: HTTP basic
// name:secret, or `Authorization: Bearer <secret>`; app tokens are never accepted.
//
//	POST /internal/v1/lease                  {runner_id, max_tasks, wait_seconds}
//	  → 200 {"leases":[…], "lease_duration_seconds": n}   long-polls up to wait_seconds;
//	  each lease: {lease_id, expires_at, attempt, adopt, backend_ref, cancel, task{…}}
//	POST /internal/v1/tasks/:id/heartbeat    {lease_id, state, backend_ref, adoptable}
//	  → 200 {"cancel": bool, "status", "expires_at"}; 409 lease lost or task finished
//	POST /internal/v1/tasks/:id/log?stream=stdout|stderr&lease_id=…   raw body
//	  → 200; 409 lease lost
//	POST /internal/v1/tasks/:id/progress     {lease_id, percent, msg} → 200 {"cancel": bool}
//	POST /internal/v1/tasks/:id/complete     {lease_id, status, exit_code, msg, duration_ms}
//	  → 200 {"status", "retry_task_id"} (idempotent); 409 lease lost or ended otherwise
//	POST /internal/v1/tasks/:id/release      {lease_id} → 200; back to the queue (drain),
//	  409 when it runs and cannot be adopted, or the lease is lost
//	GET  /internal/v1/tasks/:id/archive?lease_id=…  → 200 application/zip; 404 no archive
//	POST /internal/v1/reports                {"reports": [{task_id, heartbeat|complete|progress: {…}}, …]}
//	  → 200 {"results": [{code, …}, …]}: many heartbeats, completions and progress
//	  reports of held tasks in one request (internal_reports.go)
//
// Errors are IronWorker-style {"msg": "…"}; 503 means retry later.

// RunnerOptions configure the runner protocol.
type RunnerOptions struct {
	Config config.RunnerAPI
	// Waker wakes lease long-polls on queue notifications; nil = re-checks only.
	Waker *store.QueueWaker
	// Recheck is how often a waiting lease looks at the queue even without a wake-up
	// (a missed notification, a cancel that freed max_concurrency). Default 2s.
	Recheck time.Duration
	// Draining, once closed, makes waiting leases answer [] at once (graceful shutdown
	// does not wait for long-polls).
	Draining <-chan struct{}
}

// maxLeaseTasks bounds max_tasks of one lease request.
const maxLeaseTasks = 100

// maxConcurrentLeases bounds the store leases one API process runs at once. Concurrent
// leases scan the same head of the queue and find each other's picks locked, so each
// needs more rounds (a scan and a take each); taking turns, each gets its tasks in one,
// and the waiting is short (a lease is a few milliseconds).
const maxConcurrentLeases = 1

const runnerKey = "runner_name"

type internalAPI struct {
	s       *Server
	cfg     config.RunnerAPI
	waker   *store.QueueWaker
	recheck time.Duration
	drain   <-chan struct{}
	creds   []hashedCredential
	// leasing bounds the store leases run at once (see lease).
	leasing chan struct{}
}

type hashedCredential struct {
	name   string
	nameH  [32]byte
	secret [32]byte
}

// mountInternal registers the runner protocol on r.
func (s *Server) mountInternal(r *gin.Engine, opts RunnerOptions) {
	cfg := opts.Config
	if cfg.LeaseWait <= 0 {
		cfg.LeaseWait = config.Duration(20 * time.Second)
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = config.Duration(30 * time.Second)
	}
	ia := &internalAPI{s: s, cfg: cfg, waker: opts.Waker, recheck: opts.Recheck, drain: opts.Draining,
		leasing: make(chan struct{}, maxConcurrentLeases)}
	if ia.recheck <= 0 {
		ia.recheck = 2 * time.Second
	}
	for _, c := range cfg.Credentials {
		ia.creds = append(ia.creds, hashedCredential{name: c.Name, nameH: sha256.Sum256([]byte(c.Name)), secret: sha256.Sum256([]byte(c.Secret))})
	}
	if len(ia.creds) == 0 {
		s.log.Warn("no runner credentials configured: the runner protocol refuses every request")
	}
	g := r.Group("/internal/v1", ia.authenticate())
	g.POST("/lease", ia.lease)
	g.POST("/tasks/:task_id/heartbeat", singleReport(ia, ia.doHeartbeat))
	g.POST("/tasks/:task_id/log", ia.appendLog)
	g.POST("/tasks/:task_id/progress", singleReport(ia, ia.doProgress))
	g.POST("/tasks/:task_id/complete", singleReport(ia, ia.doComplete))
	g.POST("/tasks/:task_id/release", ia.release)
	g.GET("/tasks/:task_id/archive", ia.archive)
	g.POST("/reports", ia.reports)
}

// authenticate accepts a configured runner credential, compared in constant time
// against every configured one (no early exit, hashes of equal length).
func (ia *internalAPI) authenticate() gin.HandlerFunc {
	return func(c *gin.Context) {
		var name, secret string
		bearer := false
		h := strings.TrimSpace(c.Request.Header.Get("Authorization"))
		if user, pass, ok := c.Request.BasicAuth(); ok {
			name, secret = user, pass
		} else if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			secret, bearer = strings.TrimSpace(tok), true
		}
		matched := ""
		if secret != "" {
			nameH, secretH := sha256.Sum256([]byte(name)), sha256.Sum256([]byte(secret))
			for _, cred := range ia.creds {
				nameOK := 1
				if !bearer {
					nameOK = subtle.ConstantTimeCompare(nameH[:], cred.nameH[:])
				}
				if nameOK&subtle.ConstantTimeCompare(secretH[:], cred.secret[:]) == 1 && matched == "" {
					matched = cred.name
				}
			}
		}
		if matched == "" {
			c.Header("WWW-Authenticate", `Basic realm="iron-runner"`)
			abortMsg(c, http.StatusUnauthorized, "Runner credential required")
			return
		}
		c.Set(runnerKey, matched)
		c.Next()
	}
}

// leaseJSON is one leased task and everything needed to run it.
type leaseJSON struct {
	LeaseID   string `json:"lease_id"`
	ExpiresAt string `json:"expires_at"`
	// Attempt counts the leases of the task, this one included.
	Attempt int `json:"attempt"`
	// Adopt: the task may still be running on its backend under BackendRef (a previous
	// holder's lease expired); adopt it rather than start it again.
	Adopt      bool   `json:"adopt"`
	BackendRef string `json:"backend_ref,omitempty"`
	// Cancel: the task was cancelled while nobody held it and may still run under
	// BackendRef; adopt it only to stop it, then complete it.
	Cancel bool           `json:"cancel"`
	Task   leasedTaskJSON `json:"task"`
}

type leasedTaskJSON struct {
	ID             string            `json:"id"`
	ProjectID      string            `json:"project_id"`
	CodeID         string            `json:"code_id"`
	CodeName       string            `json:"code_name"`
	CodeRev        int               `json:"code_rev"`
	CodeRevisionID string            `json:"code_revision_id"`
	Status         string            `json:"status"`
	Image          string            `json:"image,omitempty"`
	Command        string            `json:"command,omitempty"`
	Runtime        string            `json:"runtime,omitempty"`
	Stack          string            `json:"stack,omitempty"`
	FileName       string            `json:"file_name,omitempty"`
	HasArchive     bool              `json:"has_archive"`
	ArchiveSize    int64             `json:"archive_size,omitempty"`
	ArchiveMD5     string            `json:"archive_md5,omitempty"`
	ArchivePath    string            `json:"archive_path,omitempty"`
	EnvVars        map[string]string `json:"env_vars"`
	Config         *string           `json:"config"`
	Payload        string            `json:"payload"`
	Timeout        int               `json:"timeout"`
	Priority       int               `json:"priority"`
	Cluster        string            `json:"cluster"`
	Label          string            `json:"label"`
	ScheduleID     string            `json:"schedule_id,omitempty"`
	RetryCount     int               `json:"retry_count"`
	Retries        int               `json:"retries"`
	RetriesDelay   int               `json:"retries_delay"`
	OriginalTaskID string            `json:"original_task_id,omitempty"`
	CreatedAt      string            `json:"created_at"`
	StartTime      *string           `json:"start_time,omitempty"`
}

func leaseToJSON(l store.LeasedTask) leaseJSON {
	t, r := l.Task, l.Revision
	env := r.Settings.EnvVars
	if env == nil {
		env = map[string]string{}
	}
	j := leaseJSON{
		LeaseID: l.LeaseID, ExpiresAt: timeString(l.ExpiresAt), Attempt: l.Attempt, Adopt: l.Adopt, BackendRef: l.BackendRef,
		Cancel: l.Cancel,
		Task: leasedTaskJSON{
			ID: t.ID, ProjectID: t.ProjectID, CodeID: t.CodeID, CodeName: t.CodeName, CodeRev: t.CodeRev,
			CodeRevisionID: t.CodeRevisionID, Status: t.Status,
			Image: r.Settings.Image, Command: r.Settings.Command, Runtime: r.Settings.Runtime, Stack: r.Settings.Stack,
			FileName: r.Settings.FileName, EnvVars: env, Config: r.Settings.Config,
			Payload: t.Payload, Timeout: t.Timeout, Priority: t.Priority, Cluster: t.Cluster, Label: t.Label,
			ScheduleID: t.ScheduleID, RetryCount: t.RetryCount, Retries: r.Settings.Retries, RetriesDelay: r.Settings.RetriesDelay,
			OriginalTaskID: t.OriginalTaskID, CreatedAt: timeString(t.CreatedAt), StartTime: timeJSON(t.StartTime),
		},
	}
	if r.ArchiveSize != nil {
		j.Task.HasArchive, j.Task.ArchiveSize, j.Task.ArchiveMD5 = true, *r.ArchiveSize, r.Checksum
		j.Task.ArchivePath = "/internal/v1/tasks/" + t.ID + "/archive?lease_id=" + url.QueryEscape(l.LeaseID)
	}
	return j
}

// lease is POST /internal/v1/lease: up to max_tasks (default 1) tasks, waiting up to
// wait_seconds (default and cap: runner.lease_wait) for the first; [] after the wait.
func (ia *internalAPI) lease(c *gin.Context) {
	var body struct {
		RunnerID    flexString `json:"runner_id"`
		MaxTasks    flexInt    `json:"max_tasks"`
		WaitSeconds *float64   `json:"wait_seconds"`
	}
	if !ia.s.decodeJSON(c, &body) {
		return
	}
	maxTasks := 1
	if body.MaxTasks.Set {
		if body.MaxTasks.Value < 1 {
			abortMsg(c, http.StatusBadRequest, "max_tasks must be at least 1")
			return
		}
		maxTasks = min(body.MaxTasks.Value, maxLeaseTasks)
	}
	wait := ia.cfg.LeaseWait.Std()
	if body.WaitSeconds != nil {
		if *body.WaitSeconds < 0 {
			abortMsg(c, http.StatusBadRequest, "wait_seconds must not be negative")
			return
		}
		wait = min(wait, time.Duration(*body.WaitSeconds*float64(time.Second)))
	}
	runnerID := string(body.RunnerID)
	if runnerID == "" {
		runnerID = c.GetString(runnerKey)
	}
	ctx := c.Request.Context()
	deadline := time.Now().Add(wait)
	for {
		wake := ia.waker.Wait() // before looking, so that a notification in between counts
		select {
		case ia.leasing <- struct{}{}:
		case <-ctx.Done():
			c.Abort()
			return
		}
		leases, err := ia.s.store.LeaseTasks(ctx, store.LeaseRequest{RunnerID: runnerID, MaxTasks: maxTasks, Duration: ia.cfg.LeaseDuration.Std()})
		<-ia.leasing
		if err != nil {
			ia.s.fail(c, err)
			return
		}
		if len(leases) > 0 && ctx.Err() != nil {
			// The runner is gone: nobody would read the answer, so hand the tasks back
			// now rather than when their leases expire.
			ia.releaseAll(leases)
			c.Abort()
			return
		}
		remaining := time.Until(deadline)
		if ia.draining() {
			remaining = 0
		}
		if len(leases) > 0 || remaining <= 0 {
			out := make([]leaseJSON, len(leases))
			for i, l := range leases {
				out[i] = leaseToJSON(l)
				ia.s.log.Debug("task leased", "task_id", l.Task.ID, "runner_id", runnerID, "adopt", l.Adopt, "attempt", l.Attempt)
			}
			c.JSON(http.StatusOK, gin.H{"leases": out, "lease_duration_seconds": ia.cfg.LeaseDuration.Std().Seconds()})
			return
		}
		timer := time.NewTimer(min(remaining, ia.recheck))
		select {
		case <-wake:
		case <-timer.C:
		case <-ia.drain:
		case <-ctx.Done():
			timer.Stop()
			c.Abort()
			return
		}
		timer.Stop()
	}
}

func (ia *internalAPI) releaseAll(leases []store.LeasedTask) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, l := range leases {
		if err := ia.s.store.ReleaseTask(ctx, l.Task.ID, l.LeaseID); err != nil {
			ia.s.log.Warn("could not hand back an undelivered lease; the reaper will", "task_id", l.Task.ID, "error", err.Error())
		}
	}
}

func (ia *internalAPI) draining() bool {
	select {
	case <-ia.drain:
		return true
	default:
		return false
	}
}

// leasedTaskID reads :task_id; a malformed id is simply not found.
func leasedTaskID(c *gin.Context) (string, bool) {
	id := c.Param("task_id")
	if !store.ValidID(id) {
		abortMsg(c, http.StatusNotFound, "Task not found")
		return "", false
	}
	return id, true
}

// requireLease answers missingLease's 400 for a call without a lease id.
func requireLease(c *gin.Context, leaseID string) bool {
	if r, missing := missingLease(leaseID); missing {
		abortMsg(c, r.Code, r.Msg)
		return false
	}
	return true
}

// conflictBody is a 409's body: why the runner must stop reporting on the task.
type conflictBody struct {
	Msg    string `json:"msg"`
	Status string `json:"status,omitempty"`
}

// leaseError answers the store's lease errors (true), or nothing for nil (false).
// ErrTaskCancelled is not handled here: the callers answer it with cancel: true.
func (ia *internalAPI) leaseError(c *gin.Context, err error) bool {
	if err == nil {
		return false
	}
	if r, ok := leaseResult(err); ok {
		r.abort(c)
		return true
	}
	ia.s.fail(c, err)
	return true
}

// leaseResult is the answer to the store's lease errors: 404 not found, 409 lease lost
// or task finished (with its status); ok is false for any other error.
func leaseResult(err error) (r reportResult, ok bool) {
	var stateErr *store.TaskStateError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return reportResult{Code: http.StatusNotFound, Msg: "Task not found"}, true
	case errors.Is(err, store.ErrLeaseLost):
		return reportResult{Code: http.StatusConflict, Msg: "Lease lost: the task is not held by this lease"}, true
	case errors.As(err, &stateErr):
		return reportResult{Code: http.StatusConflict, Msg: "Task has already finished with status " + stateErr.Status, Status: stateErr.Status}, true
	}
	return reportResult{}, false
}

// heartbeatBody is the body of POST /tasks/:id/heartbeat (and a report's "heartbeat").
type heartbeatBody struct {
	LeaseID    string `json:"lease_id"`
	State      string `json:"state"`
	BackendRef string `json:"backend_ref"`
	Adoptable  *bool  `json:"adoptable"`
}

// singleReport serves one of the single-task runner calls (heartbeat, progress,
// complete): the task id from the path, the body, then do, which applies the same call
// as a report of POST /reports.
func singleReport[B any](ia *internalAPI, do func(ctx context.Context, id string, body *B) (reportResult, error)) gin.HandlerFunc {
	return func(c *gin.Context) {
		id, ok := leasedTaskID(c)
		if !ok {
			return
		}
		var body B
		if !ia.s.decodeJSON(c, &body) {
			return
		}
		r, err := do(c.Request.Context(), id, &body)
		ia.answer(c, r, err)
	}
}

// doHeartbeat applies POST /tasks/:id/heartbeat (or a heartbeat report): state
// "running" (or a backend_ref without a state) marks the task started; "preparing" or
// none only extends the lease. err is an unexpected failure (the answer is then empty).
func (ia *internalAPI) doHeartbeat(ctx context.Context, id string, body *heartbeatBody) (reportResult, error) {
	hb, bad := heartbeatInput(body)
	if bad != nil {
		return *bad, nil
	}
	res, err := ia.s.store.HeartbeatTask(ctx, id, body.LeaseID, hb, ia.cfg.LeaseDuration.Std())
	return heartbeatAnswer(res, err)
}

// heartbeatInput checks a heartbeat's body: the store's Heartbeat, or the answer to a
// bad one.
func heartbeatInput(body *heartbeatBody) (store.Heartbeat, *reportResult) {
	if r, bad := missingLease(body.LeaseID); bad {
		return store.Heartbeat{}, &r
	}
	hb := store.Heartbeat{BackendRef: body.BackendRef, Adoptable: body.Adoptable == nil || *body.Adoptable}
	switch body.State {
	case "running":
		hb.Running = true
	case "":
		hb.Running = body.BackendRef != ""
	case "preparing":
	default:
		return hb, &reportResult{Code: http.StatusBadRequest, Msg: `state must be "preparing" or "running"`}
	}
	return hb, nil
}

// heartbeatAnswer turns the store's answer to a heartbeat into the runner's; err is an
// unexpected failure.
func heartbeatAnswer(res store.HeartbeatResult, err error) (reportResult, error) {
	if errors.Is(err, store.ErrTaskCancelled) {
		out := reportResult{Code: http.StatusOK, Cancel: &yes, Status: "cancelled"}
		if !res.ExpiresAt.IsZero() {
			out.ExpiresAt = timeString(res.ExpiresAt)
		}
		return out, nil
	}
	if r, ok := leaseResult(err); ok {
		return r, nil
	}
	if err != nil {
		return reportResult{}, err
	}
	return reportResult{Code: http.StatusOK, Cancel: &no, Status: res.Status, ExpiresAt: timeString(res.ExpiresAt)}, nil
}

// appendLog is POST /tasks/:id/log?stream=stdout|stderr&lease_id=…, the raw body.
func (ia *internalAPI) appendLog(c *gin.Context) {
	id, ok := leasedTaskID(c)
	if !ok {
		return
	}
	leaseID := c.Query("lease_id")
	if !requireLease(c, leaseID) {
		return
	}
	stream := store.LogStdout
	switch c.Query("stream") {
	case "", "stdout":
	case "stderr":
		stream = store.LogStderr
	default:
		abortMsg(c, http.StatusBadRequest, `stream must be "stdout" or "stderr"`)
		return
	}
	data, err := readBody(c, ia.s.limits.MaxRequestBytes)
	if errors.Is(err, errTooLarge) {
		abortMsg(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("Log chunk is larger than %d bytes", ia.s.limits.MaxRequestBytes))
		return
	}
	if err != nil {
		abortMsg(c, http.StatusBadRequest, "Could not read the request body")
		return
	}
	if ia.leaseError(c, ia.s.store.AppendLeasedTaskLog(c.Request.Context(), id, leaseID, stream, data)) {
		return
	}
	c.JSON(http.StatusOK, msgBody{Msg: "Appended " + strconv.Itoa(len(data)) + " bytes"})
}

// doProgress applies POST /tasks/:id/progress {lease_id, percent, msg} (or a progress
// report).
func (ia *internalAPI) doProgress(ctx context.Context, id string, body *progressInput) (reportResult, error) {
	if r, bad := missingLease(body.LeaseID); bad {
		return r, nil
	}
	percent, msg, e := body.validate()
	if e != nil {
		return reportResult{Code: e.status, Msg: e.msg}, nil
	}
	return cancelResult(ia.s.store.SetLeasedTaskProgress(ctx, id, body.LeaseID, percent, msg))
}

// answerCancel answers a report from the lease holder: {"cancel": true} when the user
// cancelled the task (the holder keeps reporting until it has stopped it), the lease
// error otherwise, else {"cancel": false}.
func (ia *internalAPI) answerCancel(c *gin.Context, err error) {
	r, err := cancelResult(err)
	ia.answer(c, r, err)
}

// cancelResult is answerCancel's answer; err is an unexpected failure.
func cancelResult(err error) (reportResult, error) {
	if errors.Is(err, store.ErrTaskCancelled) {
		return reportResult{Code: http.StatusOK, Cancel: &yes}, nil
	}
	if r, ok := leaseResult(err); ok {
		return r, nil
	}
	if err != nil {
		return reportResult{}, err
	}
	return reportResult{Code: http.StatusOK, Cancel: &no}, nil
}

// completeBody is the body of POST /tasks/:id/complete (and a report's "complete").
type completeBody struct {
	LeaseID    string   `json:"lease_id"`
	Status     string   `json:"status"`
	ExitCode   *int     `json:"exit_code"`
	Msg        string   `json:"msg"`
	DurationMS *float64 `json:"duration_ms"`
	NoRetry    bool     `json:"no_retry"`
}

// doComplete applies POST /tasks/:id/complete (or a completion report).
func (ia *internalAPI) doComplete(ctx context.Context, id string, body *completeBody) (reportResult, error) {
	comp, bad := completeInput(body)
	if bad != nil {
		return *bad, nil
	}
	res, err := ia.s.store.CompleteTask(ctx, id, body.LeaseID, comp)
	return ia.completeAnswer(id, res, err)
}

// completeInput checks a completion's body: the store's Completion, or the answer to a
// bad one.
func completeInput(body *completeBody) (store.Completion, *reportResult) {
	if r, bad := missingLease(body.LeaseID); bad {
		return store.Completion{}, &r
	}
	if !store.IsFinalStatus(body.Status) {
		return store.Completion{}, &reportResult{Code: http.StatusBadRequest, Msg: "status must be one of " + strings.Join(store.FinalStatuses, ", ")}
	}
	msg := body.Msg
	if len(msg) > maxProgressMsgBytes {
		msg = msg[:maxProgressMsgBytes]
	}
	comp := store.Completion{Status: body.Status, ExitCode: body.ExitCode, Msg: msg, NoRetry: body.NoRetry}
	if body.DurationMS != nil && *body.DurationMS > 0 {
		comp.Duration = time.Duration(*body.DurationMS * float64(time.Millisecond))
	}
	return comp, nil
}

// completeAnswer turns the store's answer to a completion into the runner's; err is an
// unexpected failure.
func (ia *internalAPI) completeAnswer(id string, res store.CompleteResult, err error) (reportResult, error) {
	if r, ok := leaseResult(err); ok {
		return r, nil
	}
	if err != nil {
		return reportResult{}, err
	}
	ia.s.log.Debug("task completed", "task_id", id, "status", res.Status, "retry_task_id", res.RetryTaskID)
	return reportResult{Code: http.StatusOK, Status: res.Status, RetryTaskID: &res.RetryTaskID}, nil
}

// release is POST /tasks/:id/release {lease_id}: the task goes back to the queue at
// once (for adoption when it runs under an adoptable backend ref).
func (ia *internalAPI) release(c *gin.Context) {
	id, ok := leasedTaskID(c)
	if !ok {
		return
	}
	var body struct {
		LeaseID string `json:"lease_id"`
	}
	if !ia.s.decodeJSON(c, &body) || !requireLease(c, body.LeaseID) {
		return
	}
	err := ia.s.store.ReleaseTask(c.Request.Context(), id, body.LeaseID)
	switch {
	case errors.Is(err, store.ErrTaskCancelled):
		c.AbortWithStatusJSON(http.StatusConflict, conflictBody{Msg: "Task was cancelled: complete it instead", Status: "cancelled"})
		return
	case errors.Is(err, store.ErrNotAdoptable):
		c.AbortWithStatusJSON(http.StatusConflict, conflictBody{Msg: "Task is running and cannot be adopted: complete it instead"})
		return
	}
	if ia.leaseError(c, err) {
		return
	}
	c.JSON(http.StatusOK, msgBody{Msg: "Released"})
}

// archive is GET /tasks/:id/archive?lease_id=…: the zip of the task's code revision.
func (ia *internalAPI) archive(c *gin.Context) {
	id, ok := leasedTaskID(c)
	if !ok {
		return
	}
	leaseID := c.Query("lease_id")
	if !requireLease(c, leaseID) {
		return
	}
	revID, size, sum, err := ia.s.store.LeasedTaskArchive(c.Request.Context(), id, leaseID)
	if errors.Is(err, store.ErrNotFound) {
		abortMsg(c, http.StatusNotFound, "Task or code archive not found")
		return
	}
	if ia.leaseError(c, err) {
		return
	}
	c.Header("Content-Type", "application/zip")
	c.Header("Content-Length", strconv.FormatInt(size, 10))
	if sum != "" {
		c.Header("X-Archive-MD5", sum)
	}
	c.Status(http.StatusOK)
	n, err := ia.s.store.WriteArchive(c.Request.Context(), revID, c.Writer)
	if err != nil || n != size {
		// Headers are out: break the connection so the runner sees a short body.
		ia.s.log.Warn("archive download cut short", "task_id", id, "written", n, "size", size)
		panic(http.ErrAbortHandler)
	}
}
