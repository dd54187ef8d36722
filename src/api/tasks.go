package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

// The task endpoints: queue (JSON and webhook), list, info, log, cancel, progress, retry.
//
// The store gets c.Request.Context(), never the *gin.Context itself: gin pools and
// reuses Contexts, and database/sql watches the context from its own goroutine, which
// the race detector reports against the next request that reuses the Context.

// maxProgressMsgBytes bounds the msg a worker may set through /progress.
const maxProgressMsgBytes = 64 << 10

// taskJSON is IronWorker's task object. code_rev is a string and every number an
// integer, as iron_go3's TaskInfo needs; msg is omitted when empty because ironcli
// reports any non-empty msg of a finished task as "error running task".
type taskJSON struct {
	ID             string  `json:"id"`
	ProjectID      string  `json:"project_id"`
	CodeID         string  `json:"code_id"`
	CodeHistoryID  string  `json:"code_history_id"`
	CodeName       string  `json:"code_name"`
	CodeRev        string  `json:"code_rev"`
	Status         string  `json:"status"`
	CreatedAt      string  `json:"created_at"`
	UpdatedAt      string  `json:"updated_at"`
	Priority       int     `json:"priority"`
	Timeout        int     `json:"timeout"`
	Delay          int     `json:"delay"`
	Payload        string  `json:"payload"`
	Cluster        string  `json:"cluster"`
	Label          string  `json:"label"`
	Msg            string  `json:"msg,omitempty"`
	Percent        *int    `json:"percent,omitempty"`
	StartTime      *string `json:"start_time,omitempty"`
	EndTime        *string `json:"end_time,omitempty"`
	Duration       *int64  `json:"duration,omitempty"`
	LogSize        int64   `json:"log_size"`
	RetryCount     int     `json:"retry_count"`
	OriginalTaskID string  `json:"original_task_id,omitempty"`
	RetryTaskID    string  `json:"retry_task_id,omitempty"`
	ScheduleID     string  `json:"schedule_id,omitempty"`
}

func taskToJSON(t store.Task) taskJSON {
	j := taskJSON{
		ID: t.ID, ProjectID: t.ProjectID, CodeID: t.CodeID, CodeHistoryID: t.CodeRevisionID, CodeName: t.CodeName,
		CodeRev: strconv.Itoa(t.CodeRev), Status: t.Status, CreatedAt: timeString(t.CreatedAt), UpdatedAt: timeString(t.UpdatedAt),
		Priority: t.Priority, Timeout: t.Timeout, Delay: t.Delay, Payload: t.Payload, Cluster: t.Cluster, Label: t.Label,
		Msg: t.Msg, Percent: t.Percent, StartTime: timeJSON(t.StartTime), EndTime: timeJSON(t.EndTime),
		LogSize: t.LogSize, RetryCount: t.RetryCount, OriginalTaskID: t.OriginalTaskID, RetryTaskID: t.RetryTaskID,
		ScheduleID: t.ScheduleID,
	}
	if d := t.Duration(); d != nil {
		ms := d.Milliseconds()
		j.Duration = &ms
	}
	return j
}

type taskIDJSON struct {
	ID string `json:"id"`
}

// queuedJSON answers queue and retry: one id per task, in request order.
type queuedJSON struct {
	Msg   string       `json:"msg"`
	Tasks []taskIDJSON `json:"tasks"`
}

func queuedResponse(ids []string) queuedJSON {
	out := queuedJSON{Msg: "Queued up", Tasks: make([]taskIDJSON, len(ids))}
	for i, id := range ids {
		out.Tasks[i] = taskIDJSON{ID: id}
	}
	return out
}

// payloadField is a task payload: a JSON string as documented; null or missing is "";
// any other JSON value (an object, say) is kept as its JSON text.
type payloadField string

func (p *payloadField) UnmarshalJSON(b []byte) error {
	if s, ok := jsonString(b); ok {
		*p = payloadField(s)
		return nil
	}
	if strings.TrimSpace(string(b)) == "null" {
		*p = ""
		return nil
	}
	*p = payloadField(b)
	return nil
}

// taskInput is one item of POST /tasks. Unknown keys (name, sync, …) are ignored.
type taskInput struct {
	CodeName flexString   `json:"code_name"`
	Payload  payloadField `json:"payload"`
	Priority flexInt      `json:"priority"`
	Timeout  flexInt      `json:"timeout"`
	Delay    flexInt      `json:"delay"`
	Cluster  flexString   `json:"cluster"`
	Label    flexString   `json:"label"`
}

// newTask validates one queued task and resolves its defaults.
func (s *Server) newTask(in taskInput) (store.NewTask, *inputError) {
	name := string(in.CodeName)
	if strings.TrimSpace(name) == "" {
		return store.NewTask{}, badRequest("code_name is required")
	}
	if e := s.checkPayload(string(in.Payload)); e != nil {
		return store.NewTask{}, e
	}
	timeout, e := s.taskTimeout(in.Timeout)
	if e != nil {
		return store.NewTask{}, e
	}
	delay, e := s.taskDelay(in.Delay)
	if e != nil {
		return store.NewTask{}, e
	}
	return store.NewTask{
		CodeName: name,
		Payload:  string(in.Payload),
		Priority: priorityOf(in.Priority),
		Timeout:  timeout,
		Delay:    delay,
		Cluster:  strings.TrimSpace(string(in.Cluster)),
		Label:    string(in.Label),
	}, nil
}

// codeNotFound answers 404 when a task names a code the project does not have.
func codeNotFound(c *gin.Context, err error) bool {
	var cnf *store.ErrCodeNotFound
	if errors.As(err, &cnf) {
		abortMsg(c, http.StatusNotFound, "Code not found: "+cnf.Name)
		return true
	}
	return false
}

// queueTasksBody is the body of POST /tasks.
type queueTasksBody struct {
	Tasks []taskInput `json:"tasks"`
}

// checkTaskCount refuses an empty or oversized batch (before the store is asked).
func (s *Server) checkTaskCount(n int) *inputError {
	if n == 0 {
		return badRequest(`No tasks given: send {"tasks":[{"code_name":"…","payload":"…"}]}`)
	}
	if n > s.limits.MaxTasksPerRequest {
		return badRequest("Too many tasks: at most %d per request", s.limits.MaxTasksPerRequest)
	}
	return nil
}

// taskBatch validates every task of a batch against the limits and the project's quotas.
// Pure: no store, no request (fuzzed in fuzz_test.go).
func (s *Server) taskBatch(in []taskInput, quotas store.Quotas) ([]store.NewTask, *inputError) {
	batch := make([]store.NewTask, len(in))
	for i, t := range in {
		nt, e := s.newTask(t)
		if e == nil {
			e = taskQuotas(quotas, t, &nt)
		}
		if e != nil {
			return nil, &inputError{status: e.status, msg: fmt.Sprintf("tasks[%d]: %s", i, e.msg)}
		}
		batch[i] = nt
	}
	return batch, nil
}

// maxQuotaRetries bounds how often queueTasks checks a batch again because the
// project's quotas changed under it.
const maxQuotaRetries = 3

// queueTasks is POST /tasks: all tasks are queued or none.
func (s *Server) queueTasks(c *gin.Context) {
	var body queueTasksBody
	raw, ok := s.decodeJSONRaw(c, &body)
	if !ok {
		return
	}
	idem, ok := idempotencyKey(c, "tasks", raw)
	if !ok {
		return
	}
	if e := s.checkTaskCount(len(body.Tasks)); e != nil {
		abortInput(c, e)
		return
	}
	// The batch is checked against the project's quotas as last read (cached briefly);
	// the store queues it only if they are still the project's (else ErrQuotasChanged:
	// read them, check again). A refusal by a cached copy is checked again with fresh
	// quotas before it is answered.
	var ids []string
	var replay bool
	var err error
	fresh, allowed := false, false
	for attempt := 0; ; attempt++ {
		quotas, wasFresh, ok := s.queueQuotas(c, fresh)
		if !ok {
			return
		}
		batch, e := s.taskBatch(body.Tasks, quotas)
		if e != nil && !wasFresh {
			fresh = true
			continue
		}
		if e != nil {
			abortInput(c, e)
			return
		}
		if !allowed {
			if !s.allowTasks(c, len(batch)) {
				return
			}
			allowed = true
		}
		ids, replay, err = s.store.QueueTasksChecked(c.Request.Context(), projectID(c), idem, batch, &quotas)
		if errors.Is(err, store.ErrQuotasChanged) && attempt < maxQuotaRetries {
			fresh = true
			continue
		}
		break
	}
	if codeNotFound(c, err) || quotaExceeded(c, err) || projectGone(c, err) || idempotencyMismatch(c, err) {
		return
	}
	markReplay(c, replay)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, queuedResponse(ids))
}

// queryInt reads an optional numeric query parameter the way flexInt reads JSON.
func queryInt(c *gin.Context, name string) (flexInt, bool) {
	var v flexInt
	raw := c.Query(name)
	if raw == "" {
		return v, true
	}
	if err := v.UnmarshalJSON([]byte(strconv.Quote(raw))); err != nil {
		abortMsg(c, http.StatusBadRequest, name+" must be a number")
		return v, false
	}
	return v, true
}

// webhook is POST /tasks/webhook?code_name=…: the raw body is the payload.
func (s *Server) webhook(c *gin.Context) {
	in := taskInput{
		CodeName: flexString(c.Query("code_name")),
		Cluster:  flexString(c.Query("cluster")),
		Label:    flexString(c.Query("label")),
	}
	var ok bool
	if in.Priority, ok = queryInt(c, "priority"); !ok {
		return
	}
	if in.Timeout, ok = queryInt(c, "timeout"); !ok {
		return
	}
	if in.Delay, ok = queryInt(c, "delay"); !ok {
		return
	}
	if strings.TrimSpace(string(in.CodeName)) == "" {
		abortMsg(c, http.StatusBadRequest, "code_name is required in the query string")
		return
	}
	body, err := readBody(c, int64(s.limits.MaxPayloadBytes))
	if errors.Is(err, errTooLarge) {
		abortMsg(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("payload is larger than %d bytes", s.limits.MaxPayloadBytes))
		return
	}
	if err != nil {
		abortMsg(c, http.StatusBadRequest, "Could not read the request body")
		return
	}
	in.Payload = payloadField(body)
	nt, e := s.newTask(in)
	if e == nil {
		quotas, ok := s.projectQuotas(c)
		if !ok {
			return
		}
		e = taskQuotas(quotas, in, &nt)
	}
	if e != nil {
		abortInput(c, e)
		return
	}
	if !s.allowTasks(c, 1) {
		return
	}
	ids, err := s.store.QueueTasks(c.Request.Context(), projectID(c), []store.NewTask{nt})
	if codeNotFound(c, err) || quotaExceeded(c, err) || projectGone(c, err) {
		return
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, struct {
		ID  string `json:"id"`
		Msg string `json:"msg"`
	}{ID: ids[0], Msg: "Queued up."})
}

// statusFlag reads a status flag such as complete=1. Besides the parsed query it looks
// at the raw query, where a value that is not valid percent-encoding (a hand-typed
// `complete=%!d(bool=true)`) makes net/url drop the pair.
func statusFlag(c *gin.Context, name string) bool {
	if v, ok := c.GetQuery(name); ok {
		return truthy(v)
	}
	for _, pair := range strings.Split(c.Request.URL.RawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if k != name {
			continue
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			v = uv
		}
		return truthy(v)
	}
	return false
}

// listTasks is GET /tasks, newest first.
func (s *Server) listTasks(c *gin.Context) {
	offset, limit, ok := paging(c)
	if !ok {
		return
	}
	from, ok := epochQuery(c, "from_time")
	if !ok {
		return
	}
	to, ok := epochQuery(c, "to_time")
	if !ok {
		return
	}
	f := store.TaskFilter{
		CodeName:    c.Query("code_name"),
		Label:       c.Query("label"),
		Cluster:     c.Query("cluster"),
		CreatedFrom: from,
		Offset:      offset,
		Limit:       limit,
	}
	if to != nil {
		// Epoch seconds name a whole second: to_time includes the tasks created during it.
		before := to.Add(time.Second)
		f.CreatedBefore = &before
	}
	for _, st := range store.TaskStatuses {
		if statusFlag(c, st) {
			f.Statuses = append(f.Statuses, st)
		}
	}
	tasks, err := s.store.ListTasks(c.Request.Context(), projectID(c), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]taskJSON, len(tasks))
	for i, t := range tasks {
		out[i] = taskToJSON(t)
	}
	c.JSON(http.StatusOK, gin.H{"tasks": out})
}

// taskID reads :task_id; a malformed id is simply not found.
func taskID(c *gin.Context) (string, bool) {
	id := c.Param("task_id")
	if !store.ValidID(id) {
		abortMsg(c, http.StatusNotFound, "Task not found")
		return "", false
	}
	return id, true
}

// taskError answers the errors the task store functions share (always true then);
// false when err is nil.
func (s *Server) taskError(c *gin.Context, err error) bool {
	if err == nil {
		return false
	}
	if codeNotFound(c, err) {
		return true
	}
	var stateErr *store.TaskStateError
	switch {
	case errors.Is(err, store.ErrNotFound):
		abortMsg(c, http.StatusNotFound, "Task not found")
	case errors.Is(err, store.ErrLogNotFound):
		abortMsg(c, http.StatusNotFound, "Log not found")
	case !errors.As(err, &stateErr):
		s.fail(c, err)
	case errors.Is(err, store.ErrTaskFinished):
		abortMsg(c, http.StatusBadRequest, "Task has already finished with status "+stateErr.Status)
	case errors.Is(err, store.ErrTaskNotFinished):
		abortMsg(c, http.StatusBadRequest, "Task is "+stateErr.Status+"; only a finished task can be retried")
	case errors.Is(err, store.ErrTaskRetried):
		abortMsg(c, http.StatusBadRequest, "Task has already been retried as "+stateErr.RetryTaskID)
	default:
		s.fail(c, err)
	}
	return true
}

// getTask is GET /tasks/:task_id.
func (s *Server) getTask(c *gin.Context) {
	id, ok := taskID(c)
	if !ok {
		return
	}
	t, err := s.store.GetTask(c.Request.Context(), projectID(c), id)
	if s.taskError(c, err) {
		return
	}
	c.JSON(http.StatusOK, taskToJSON(t))
}

// textWriter sends 200 text/plain when the first byte is written, so that a log that
// turns out not to exist can still be answered with a JSON 404.
type textWriter struct {
	c       *gin.Context
	started bool
}

func (w *textWriter) start() {
	if !w.started {
		w.started = true
		w.c.Header("Content-Type", "text/plain; charset=utf-8")
		w.c.Status(http.StatusOK)
	}
}

func (w *textWriter) Write(p []byte) (int, error) {
	w.start()
	return w.c.Writer.Write(p)
}

func (s *Server) writeLog(c *gin.Context, stdoutOnly bool) {
	id, ok := taskID(c)
	if !ok {
		return
	}
	w := &textWriter{c: c}
	err := s.store.TaskLog(c.Request.Context(), projectID(c), id, stdoutOnly, w)
	if err != nil && w.started {
		// Part of the log is out with a 200: break the connection so that the client
		// sees a truncated response rather than a complete-looking short log.
		s.log.Warn("task log cut short", "task_id", id, "error", err.Error())
		panic(http.ErrAbortHandler)
	}
	if s.taskError(c, err) {
		return
	}
	w.start() // a finished task without output: an empty 200
	c.Writer.WriteHeaderNow()
}

// taskLog is GET /tasks/:task_id/log: stdout and stderr as they came.
func (s *Server) taskLog(c *gin.Context) { s.writeLog(c, false) }

// taskOutlog is GET /tasks/:task_id/outlog: stdout only.
func (s *Server) taskOutlog(c *gin.Context) { s.writeLog(c, true) }

// cancelTask is POST /tasks/:task_id/cancel; the body, if any, is ignored.
func (s *Server) cancelTask(c *gin.Context) {
	id, ok := taskID(c)
	if !ok {
		return
	}
	if s.taskError(c, s.store.CancelTask(c.Request.Context(), projectID(c), id)) {
		return
	}
	c.JSON(http.StatusOK, msgBody{Msg: "Cancelled"})
}

// setProgress is POST /tasks/:task_id/progress {"percent","msg"}; either may be left
// out (an empty body changes nothing).
func (s *Server) setProgress(c *gin.Context) {
	id, ok := taskID(c)
	if !ok {
		return
	}
	var body progressInput
	if !s.decodeJSON(c, &body) {
		return
	}
	percent, msg, e := body.validate()
	if e != nil {
		abortInput(c, e)
		return
	}
	if s.taskError(c, s.store.SetTaskProgress(c.Request.Context(), projectID(c), id, percent, msg)) {
		return
	}
	c.JSON(http.StatusOK, msgBody{Msg: "Progress set"})
}

// progressInput is a progress report, from the app API or from a runner.
type progressInput struct {
	LeaseID string      `json:"lease_id"` // runner protocol only
	Percent flexInt     `json:"percent"`
	Msg     *flexString `json:"msg"`
}

// validate checks percent is 0-100 and msg at most 64 KiB; nil means "leave unchanged".
func (p progressInput) validate() (*int, *string, *inputError) {
	var percent *int
	if p.Percent.Set {
		if p.Percent.Value < 0 || p.Percent.Value > 100 {
			return nil, nil, badRequest("percent must be from 0 to 100")
		}
		percent = &p.Percent.Value
	}
	var msg *string
	if p.Msg != nil {
		m := string(*p.Msg)
		if len(m) > maxProgressMsgBytes {
			return nil, nil, badRequest("msg must be at most %d bytes", maxProgressMsgBytes)
		}
		msg = &m
	}
	return percent, msg, nil
}

// retryTask is POST /tasks/:task_id/retry with an optional {"delay": n}.
func (s *Server) retryTask(c *gin.Context) {
	id, ok := taskID(c)
	if !ok {
		return
	}
	var body struct {
		Delay flexInt `json:"delay"`
	}
	if !s.decodeJSON(c, &body) {
		return
	}
	delay, e := s.taskDelay(body.Delay)
	if e != nil {
		abortInput(c, e)
		return
	}
	if err := s.store.CheckQueuedQuota(c.Request.Context(), projectID(c), 1); quotaExceeded(c, err) {
		return
	} else if err != nil {
		s.fail(c, err)
		return
	}
	if !s.allowTasks(c, 1) {
		return
	}
	newID, err := s.store.RetryTask(c.Request.Context(), projectID(c), id, delay)
	if s.taskError(c, err) {
		return
	}
	c.JSON(http.StatusOK, queuedResponse([]string{newID}))
}
