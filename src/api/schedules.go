package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

// Schedules: create (a batch, all or nothing), list, get, update (PUT, partial) and
// cancel. Decisions beyond IronWorker's documentation:
//   - Neither run_every nor cron: a one-time schedule that fires once at start_at
//     (run_times 1), as IronWorker did; run_every 0 or null counts as "not given".
//   - cron (extension): a standard 5-field expression in UTC, exclusive with run_every.
//   - start_at in the past (or missing, = now) fires at once; end_at before start_at is
//     refused.
//   - The task timeout is resolved when the schedule is created or updated and stored,
//     so the firer needs no configuration.
//   - PUT takes the bare object (as the Ruby client sends) or {"schedules":[object]},
//     changes only the fields given, and answers the updated schedule.

const scheduleNotFound = "Schedule not found"

// scheduleIn is one schedule as clients send it.
type scheduleIn struct {
	CodeName       *flexString  `json:"code_name"`
	Name           *flexString  `json:"name"`
	Payload        *payloadText `json:"payload"`
	StartAt        optTime      `json:"start_at"`
	EndAt          optTime      `json:"end_at"`
	RunEvery       flexInt      `json:"run_every"`
	Cron           *flexString  `json:"cron"`
	RunTimes       flexInt      `json:"run_times"`
	Priority       flexInt      `json:"priority"`
	Timeout        flexInt      `json:"timeout"`
	Delay          flexInt      `json:"delay"`
	TaskDelay      flexInt      `json:"task_delay"`
	Cluster        *flexString  `json:"cluster"`
	Label          *flexString  `json:"label"`
	MaxConcurrency flexInt      `json:"max_concurrency"` // accepted, ignored
}

// payloadText is a payload: a string as documented, or any other JSON value kept as
// its JSON text (null = empty).
type payloadText string

func (p *payloadText) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*p = payloadText(s)
		return nil
	}
	if t := strings.TrimSpace(string(b)); t != "null" {
		*p = payloadText(t)
	}
	return nil
}

// optTime is a time field as sent: absent, null, or a value to parse (with the field
// name in the error) by parseTime.
type optTime struct {
	Present bool
	Null    bool
	Raw     string
}

func (o *optTime) UnmarshalJSON(b []byte) error {
	*o = optTime{Present: true}
	t := strings.TrimSpace(string(b))
	if t == "null" {
		o.Null = true
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		o.Raw = strings.TrimSpace(s)
		o.Null = o.Raw == ""
		return nil
	}
	if _, err := strconv.ParseFloat(t, 64); err == nil {
		o.Raw = t // Unix seconds
		return nil
	}
	return &flexError{msg: fmt.Sprintf("expected an RFC 3339 time, got %s", t)}
}

// timeLayouts are what clients send: RFC 3339 (Go, Ruby iso8601, Python isoformat
// with an offset, any fraction), and zone-less forms taken as UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999 -0700",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
}

// parseTime reads a time field; nil means not given (absent, null, "", or Go's zero
// time, which iron_go3 echoes for unset dates).
func parseTime(field string, o optTime) (*time.Time, *inputError) {
	if !o.Present || o.Null {
		return nil, nil
	}
	if f, err := strconv.ParseFloat(o.Raw, 64); err == nil {
		t := time.Unix(int64(f), 0).UTC()
		return &t, nil
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, o.Raw); err == nil {
			if t.IsZero() || t.Year() <= 1 {
				return nil, nil
			}
			t = t.UTC()
			return &t, nil
		}
	}
	return nil, badRequest("%s must be an RFC 3339 time such as 2030-01-02T15:04:05Z, got %q", field, o.Raw)
}

func strOf(f *flexString) string {
	if f == nil {
		return ""
	}
	return strings.TrimSpace(string(*f))
}

// cadence reads run_every and cron: at most one; run_every 0 or null is "not given".
func cadence(in scheduleIn) (runEvery *int, cronExpr *string, e *inputError) {
	if in.RunEvery.Set && in.RunEvery.Value != 0 {
		if in.RunEvery.Value < 60 {
			return nil, nil, badRequest("run_every must be at least 60 seconds, got %d", in.RunEvery.Value)
		}
		v := in.RunEvery.Value
		runEvery = &v
	}
	if c := strOf(in.Cron); c != "" {
		if _, err := store.ParseCron(c); err != nil {
			return nil, nil, badRequest("invalid cron expression %q: %s", c, err.Error())
		}
		cronExpr = &c
	}
	if runEvery != nil && cronExpr != nil {
		return nil, nil, badRequest("give either run_every or cron, not both")
	}
	return runEvery, cronExpr, nil
}

// delayOf reads task_delay or (as Go clients send it) delay.
func (s *Server) delayOf(in scheduleIn) (int, bool, *inputError) {
	v := in.TaskDelay
	if !v.Set {
		v = in.Delay
	}
	d, e := s.taskDelay(v)
	return d, v.Set, e
}

// newSchedule validates one schedule of a create request.
func (s *Server) newSchedule(in scheduleIn, now time.Time) (store.NewSchedule, *inputError) {
	ns := store.NewSchedule{CodeName: strOf(in.CodeName), Name: string(ptrOr(in.Name)), Cluster: strOf(in.Cluster),
		Label: string(ptrOr(in.Label)), Priority: priorityOf(in.Priority)}
	if ns.CodeName == "" {
		return ns, badRequest("code_name is required")
	}
	if in.Payload != nil {
		ns.Payload = string(*in.Payload)
	}
	if e := s.checkPayload(ns.Payload); e != nil {
		return ns, e
	}
	start, e := parseTime("start_at", in.StartAt)
	if e != nil {
		return ns, e
	}
	ns.StartAt = now
	if start != nil {
		ns.StartAt = *start
	}
	if ns.EndAt, e = parseTime("end_at", in.EndAt); e != nil {
		return ns, e
	}
	if ns.EndAt != nil && ns.EndAt.Before(ns.StartAt) {
		return ns, badRequest("end_at must not be before start_at")
	}
	every, cronExpr, e := cadence(in)
	if e != nil {
		return ns, e
	}
	if every != nil {
		ns.RunEvery = *every
	}
	if cronExpr != nil {
		ns.Cron = *cronExpr
	}
	if in.RunTimes.Set {
		if in.RunTimes.Value < 0 {
			return ns, badRequest("run_times must not be negative")
		}
		ns.RunTimes = in.RunTimes.Value
	}
	if every == nil && cronExpr == nil {
		if ns.RunTimes > 1 {
			return ns, badRequest("run_times %d needs run_every or cron; without them a schedule runs once", ns.RunTimes)
		}
		ns.RunTimes = 1
	}
	if ns.Timeout, e = s.taskTimeout(in.Timeout); e != nil {
		return ns, e
	}
	if ns.TaskDelay, _, e = s.delayOf(in); e != nil {
		return ns, e
	}
	return ns, nil
}

func ptrOr(f *flexString) flexString {
	if f == nil {
		return ""
	}
	return *f
}

// withIndex prefixes a batch item's error with its position.
func withIndex(e *inputError, i, n int) *inputError {
	if n == 1 {
		return e
	}
	return &inputError{status: e.status, msg: fmt.Sprintf("schedules[%d]: %s", i, e.msg)}
}

func (s *Server) createSchedules(c *gin.Context) {
	var req struct {
		Schedules []scheduleIn `json:"schedules"`
	}
	raw, ok := s.decodeJSONRaw(c, &req)
	if !ok {
		return
	}
	idem, ok := idempotencyKey(c, "schedules", raw)
	if !ok {
		return
	}
	if len(req.Schedules) == 0 {
		abortMsg(c, http.StatusBadRequest, `Body must be {"schedules":[...]} with at least one schedule`)
		return
	}
	if most := s.limits.MaxTasksPerRequest; most > 0 && len(req.Schedules) > most {
		abortMsg(c, http.StatusBadRequest, fmt.Sprintf("At most %d schedules per request", most))
		return
	}
	quotas, ok := s.projectQuotas(c)
	if !ok {
		return
	}
	now := s.now().UTC()
	batch := make([]store.NewSchedule, 0, len(req.Schedules))
	for i, in := range req.Schedules {
		ns, e := s.newSchedule(in, now)
		if e == nil {
			e = scheduleQuotas(quotas, in, &ns)
		}
		if e != nil {
			abortInput(c, withIndex(e, i, len(req.Schedules)))
			return
		}
		batch = append(batch, ns)
	}
	ids, replay, err := s.store.CreateSchedulesOnce(c.Request.Context(), projectID(c), idem, batch, now)
	if quotaExceeded(c, err) || projectGone(c, err) || idempotencyMismatch(c, err) {
		return
	}
	markReplay(c, replay)
	var missing *store.ErrCodeNotFound
	if errors.As(err, &missing) {
		abortMsg(c, http.StatusNotFound, codeMissingMsg(missing.Name))
		return
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]gin.H, len(ids))
	for i, id := range ids {
		out[i] = gin.H{"id": id}
	}
	c.JSON(http.StatusOK, gin.H{"msg": "Scheduled", "schedules": out})
}

func codeMissingMsg(name string) string {
	return fmt.Sprintf("Code package %q not found in this project; upload it before scheduling it", name)
}

// scheduleOut is the Schedule object. Times are RFC 3339 in UTC or omitted, never "";
// counts are integers.
type scheduleOut struct {
	ID          string  `json:"id"`
	ProjectID   string  `json:"project_id"`
	CodeName    string  `json:"code_name"`
	Name        string  `json:"name"`
	Payload     string  `json:"payload"`
	Status      string  `json:"status"`
	Msg         string  `json:"msg,omitempty"`
	StartAt     string  `json:"start_at"`
	EndAt       *string `json:"end_at,omitempty"`
	RunEvery    *int    `json:"run_every,omitempty"`
	Cron        string  `json:"cron,omitempty"`
	RunTimes    int     `json:"run_times"`
	RunCount    int     `json:"run_count"`
	ErrorCount  int     `json:"error_count"`
	Priority    *int    `json:"priority,omitempty"`
	Timeout     int     `json:"timeout"`
	TaskDelay   int     `json:"task_delay"`
	Label       string  `json:"label"`
	Cluster     string  `json:"cluster"`
	NextStart   *string `json:"next_start,omitempty"`
	LastRunTime *string `json:"last_run_time,omitempty"`
	CreatedAt   string  `json:"created_at"`
	UpdatedAt   string  `json:"updated_at"`
}

func (s *Server) scheduleJSON(sc store.Schedule) scheduleOut {
	out := scheduleOut{ID: sc.ID, ProjectID: sc.ProjectID, CodeName: sc.CodeName, Name: sc.Name, Payload: sc.Payload,
		Status: sc.Status, Msg: sc.Msg, StartAt: timeString(sc.StartAt), EndAt: timeJSON(sc.EndAt), Cron: sc.Cron,
		RunTimes: sc.RunTimes, RunCount: sc.RunCount, ErrorCount: sc.ErrorCount, Priority: sc.Priority,
		TaskDelay: sc.TaskDelay, Label: sc.Label, Cluster: sc.Cluster, NextStart: timeJSON(sc.NextStart),
		LastRunTime: timeJSON(sc.LastRunTime), CreatedAt: timeString(sc.CreatedAt), UpdatedAt: timeString(sc.UpdatedAt)}
	if sc.RunEvery > 0 && sc.Cron == "" {
		every := sc.RunEvery
		out.RunEvery = &every
	}
	out.Timeout = store.FallbackScheduleTimeout
	if sc.Timeout != nil && *sc.Timeout > 0 {
		out.Timeout = *sc.Timeout
	}
	return out
}

func (s *Server) listSchedules(c *gin.Context) {
	offset, limit, ok := paging(c)
	if !ok {
		return
	}
	list, err := s.store.ListSchedules(c.Request.Context(), projectID(c), offset, limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]scheduleOut, len(list))
	for i, sc := range list {
		out[i] = s.scheduleJSON(sc)
	}
	c.JSON(http.StatusOK, gin.H{"schedules": out})
}

// scheduleID reads the path id; a malformed one cannot exist.
func scheduleID(c *gin.Context) (string, bool) {
	id := c.Param("schedule_id")
	if !store.ValidID(id) {
		abortMsg(c, http.StatusNotFound, scheduleNotFound)
		return "", false
	}
	return id, true
}

func (s *Server) getSchedule(c *gin.Context) {
	id, ok := scheduleID(c)
	if !ok {
		return
	}
	sc, err := s.store.GetSchedule(c.Request.Context(), projectID(c), id)
	if errors.Is(err, store.ErrNotFound) {
		abortMsg(c, http.StatusNotFound, scheduleNotFound)
		return
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, s.scheduleJSON(sc))
}

func (s *Server) cancelSchedule(c *gin.Context) {
	id, ok := scheduleID(c)
	if !ok {
		return
	}
	// The body (empty, {} or anything) is not used.
	err := s.store.CancelSchedule(c.Request.Context(), projectID(c), id)
	if errors.Is(err, store.ErrNotFound) {
		abortMsg(c, http.StatusNotFound, scheduleNotFound)
		return
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, msgBody{Msg: "Cancelled"})
}

// readUpdate reads a PUT body: the bare schedule object, or {"schedules":[object]}.
func (s *Server) readUpdate(c *gin.Context) (scheduleIn, bool) {
	var in scheduleIn
	var raw json.RawMessage
	if !s.decodeJSON(c, &raw) {
		return in, false
	}
	if len(raw) == 0 {
		return in, true
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		abortMsg(c, http.StatusBadRequest, "Body must be a schedule object")
		return in, false
	}
	if wrapped, ok := obj["schedules"]; ok {
		var list []json.RawMessage
		if err := json.Unmarshal(wrapped, &list); err != nil || len(list) != 1 {
			abortMsg(c, http.StatusBadRequest, `"schedules" must be an array of exactly one schedule`)
			return in, false
		}
		raw = list[0]
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		abortMsg(c, http.StatusBadRequest, "Invalid JSON: "+jsonErrorText(err))
		return in, false
	}
	return in, true
}

// scheduleUpdate validates the fields a PUT gives.
func (s *Server) scheduleUpdate(in scheduleIn) (store.ScheduleUpdate, *inputError) {
	var u store.ScheduleUpdate
	if in.CodeName != nil {
		name := strOf(in.CodeName)
		if name == "" {
			return u, badRequest("code_name must not be empty")
		}
		u.CodeName = &name
	}
	if in.Name != nil {
		v := string(*in.Name)
		u.Name = &v
	}
	if in.Payload != nil {
		v := string(*in.Payload)
		if e := s.checkPayload(v); e != nil {
			return u, e
		}
		u.Payload = &v
	}
	if in.Label != nil {
		v := string(*in.Label)
		u.Label = &v
	}
	if in.Cluster != nil {
		v := strOf(in.Cluster)
		u.Cluster = &v
	}
	var e *inputError
	if in.StartAt.Present {
		if u.StartAt, e = parseTime("start_at", in.StartAt); e != nil {
			return u, e
		}
	}
	if in.EndAt.Present {
		if u.EndAt, e = parseTime("end_at", in.EndAt); e != nil {
			return u, e
		}
		u.ClearEndAt = u.EndAt == nil
	}
	if u.RunEvery, u.Cron, e = cadence(in); e != nil {
		return u, e
	}
	if in.RunTimes.Set {
		if in.RunTimes.Value < 0 {
			return u, badRequest("run_times must not be negative")
		}
		v := in.RunTimes.Value
		u.RunTimes = &v
	}
	if in.Priority.Set {
		u.Priority = priorityOf(in.Priority)
		u.ClearPriority = u.Priority == nil
	}
	if in.Timeout.Set {
		t, e := s.taskTimeout(in.Timeout)
		if e != nil {
			return u, e
		}
		u.Timeout = &t
	}
	d, set, e := s.delayOf(in)
	if e != nil {
		return u, e
	}
	if set {
		u.TaskDelay = &d
	}
	return u, nil
}

func (s *Server) updateSchedule(c *gin.Context) {
	id, ok := scheduleID(c)
	if !ok {
		return
	}
	in, ok := s.readUpdate(c)
	if !ok {
		return
	}
	u, e := s.scheduleUpdate(in)
	if e == nil {
		quotas, ok := s.projectQuotas(c)
		if !ok {
			return
		}
		e = scheduleUpdateQuotas(quotas, in, &u)
	}
	if e != nil {
		abortInput(c, e)
		return
	}
	// Checks on the schedule as it would be once updated.
	validate := func(sc store.Schedule) error {
		if sc.EndAt != nil && sc.EndAt.Before(sc.StartAt) {
			return badRequest("end_at must not be before start_at")
		}
		if sc.OneTime() && u.RunTimes != nil && *u.RunTimes > 1 {
			return badRequest("run_times %d needs run_every or cron; without them a schedule runs once", *u.RunTimes)
		}
		return nil
	}
	sc, err := s.store.UpdateSchedule(c.Request.Context(), projectID(c), id, u, s.now().UTC(), validate)
	var missing *store.ErrCodeNotFound
	var inErr *inputError
	switch {
	case errors.Is(err, store.ErrNotFound):
		abortMsg(c, http.StatusNotFound, scheduleNotFound)
	case errors.Is(err, store.ErrScheduleCancelled):
		abortMsg(c, http.StatusBadRequest, "Schedule is cancelled; a cancelled schedule cannot be updated")
	case errors.As(err, &missing):
		abortMsg(c, http.StatusNotFound, codeMissingMsg(missing.Name))
	case errors.As(err, &inErr):
		abortInput(c, inErr)
	case err != nil:
		s.fail(c, err)
	default:
		c.JSON(http.StatusOK, s.scheduleJSON(sc))
	}
}
