package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

// Batched reports (runner credential): many heartbeats, completions and progress reports
// of held tasks in one request, so that a busy runner does not pay an HTTP round trip
// (and the API a request) per task and call.
//
//	POST /internal/v1/reports
//	  {"reports": [
//	     {"task_id": "…", "heartbeat": {lease_id, state, backend_ref, adoptable}},
//	     {"task_id": "…", "complete":  {lease_id, status, exit_code, msg, duration_ms, no_retry}},
//	     {"task_id": "…", "progress":  {lease_id, percent, msg}}, …]}
//	  → 200 {"results": [{"code": 200, …}, …]}
//
// Each report is a task id and exactly one body, the one its single-task call
// (POST /tasks/:id/heartbeat, /complete, /progress) takes. Its result, at the same index,
// is what that call answers: "code" is its HTTP status and the other fields are its body
// (heartbeat: cancel, status, expires_at; complete: status, retry_task_id; progress:
// cancel; any error: msg, and status on a 409 for a finished task). So a report answers
// 409 when another lease holds the task or it has finished, 404 for an unknown task,
// 400 for a bad body, and 503 when the database is unavailable (resend that report
// later); the others in the request are not affected. The reports of one task are
// applied in their order; those of different tasks together, the heartbeats of a
// request sharing statements, and so do its completions (see applyReports).
//
// The request itself answers 400 (not JSON, no reports or more than maxReports), 401
// and 413 like every runner call; 200 otherwise, whatever the reports' results.

// maxReports bounds the reports of one request.
const maxReports = 1000

// reportItem is one report of POST /reports.
type reportItem struct {
	TaskID    string         `json:"task_id"`
	Heartbeat *heartbeatBody `json:"heartbeat"`
	Complete  *completeBody  `json:"complete"`
	Progress  *progressInput `json:"progress"`
}

// reportResult is a runner call's answer: Code is the HTTP status, the rest the body.
type reportResult struct {
	Code        int     `json:"code"`
	Msg         string  `json:"msg,omitempty"`
	Cancel      *bool   `json:"cancel,omitempty"`
	Status      string  `json:"status,omitempty"`
	ExpiresAt   string  `json:"expires_at,omitempty"`
	RetryTaskID *string `json:"retry_task_id,omitempty"`
}

var yes, no = true, false

// singleBody is reportResult without the code: the body of a single-task call.
type singleBody struct {
	Msg         string  `json:"msg,omitempty"`
	Cancel      *bool   `json:"cancel,omitempty"`
	Status      string  `json:"status,omitempty"`
	ExpiresAt   string  `json:"expires_at,omitempty"`
	RetryTaskID *string `json:"retry_task_id,omitempty"`
}

func (r reportResult) body() singleBody {
	return singleBody{Msg: r.Msg, Cancel: r.Cancel, Status: r.Status, ExpiresAt: r.ExpiresAt, RetryTaskID: r.RetryTaskID}
}

// abort answers r as a single-task call's response.
func (r reportResult) abort(c *gin.Context) {
	c.AbortWithStatusJSON(r.Code, r.body())
}

// answer writes a single-task call's response: r, or the unexpected error err.
func (ia *internalAPI) answer(c *gin.Context, r reportResult, err error) {
	if err != nil {
		ia.s.fail(c, err)
		return
	}
	if r.Code >= 300 {
		r.abort(c)
		return
	}
	c.JSON(r.Code, r.body())
}

// missingLease answers a body without a lease id.
func missingLease(leaseID string) (reportResult, bool) {
	if strings.TrimSpace(leaseID) == "" {
		return reportResult{Code: http.StatusBadRequest, Msg: "lease_id is required"}, true
	}
	return reportResult{}, false
}

// reports is POST /internal/v1/reports.
func (ia *internalAPI) reports(c *gin.Context) {
	var body struct {
		Reports []reportItem `json:"reports"`
	}
	if !ia.s.decodeJSON(c, &body) {
		return
	}
	items := body.Reports
	switch {
	case len(items) == 0:
		abortMsg(c, http.StatusBadRequest, "reports must list at least one report")
		return
	case len(items) > maxReports:
		abortMsg(c, http.StatusBadRequest, fmt.Sprintf("at most %d reports per request", maxReports))
		return
	}
	ctx := c.Request.Context()
	results := make([]reportResult, len(items))
	ia.applyReports(ctx, items, results)
	if ctx.Err() != nil {
		c.Abort() // the runner is gone: nobody reads the answer
		return
	}
	c.JSON(http.StatusOK, gin.H{"results": results})
}

// applyReports applies many reports in rounds: the first report of each task, then the
// second, and so on, so that a task's reports apply in order. In a round the heartbeats
// go to the store together, and so do the completions (HeartbeatTasks, CompleteTasks:
// they share statements), both at once; progress reports go one by one (they are rare).
func (ia *internalAPI) applyReports(ctx context.Context, items []reportItem, results []reportResult) {
	seen := make(map[string]int, len(items))
	var rounds [][]int
	for i := range items {
		k := seen[items[i].TaskID]
		seen[items[i].TaskID] = k + 1
		if k == len(rounds) {
			rounds = append(rounds, nil)
		}
		rounds[k] = append(rounds[k], i)
	}
	for _, round := range rounds {
		var hbIdx, cIdx []int
		var hbs []store.HeartbeatCall
		var comps []store.CompleteCall
		for _, i := range round {
			it := &items[i]
			if r, done := checkReport(it); done {
				results[i] = r
				continue
			}
			switch {
			case it.Heartbeat != nil:
				hb, bad := heartbeatInput(it.Heartbeat)
				if bad != nil {
					results[i] = *bad
					continue
				}
				hbIdx, hbs = append(hbIdx, i), append(hbs, store.HeartbeatCall{TaskID: it.TaskID, LeaseID: it.Heartbeat.LeaseID, Heartbeat: hb})
			case it.Complete != nil:
				comp, bad := completeInput(it.Complete)
				if bad != nil {
					results[i] = *bad
					continue
				}
				cIdx, comps = append(cIdx, i), append(comps, store.CompleteCall{TaskID: it.TaskID, LeaseID: it.Complete.LeaseID, Completion: comp})
			default:
				r, err := ia.doProgress(ctx, it.TaskID, it.Progress)
				results[i] = ia.result("progress", it.TaskID, r, err)
			}
		}
		var wg sync.WaitGroup
		if len(hbs) > 0 {
			wg.Go(func() {
				res, errs := ia.s.store.HeartbeatTasks(ctx, hbs, ia.cfg.LeaseDuration.Std())
				for j, i := range hbIdx {
					r, err := heartbeatAnswer(res[j], errs[j])
					results[i] = ia.result("heartbeat", items[i].TaskID, r, err)
				}
			})
		}
		if len(comps) > 0 {
			wg.Go(func() {
				res, errs := ia.s.store.CompleteTasks(ctx, comps)
				for j, i := range cIdx {
					r, err := ia.completeAnswer(items[i].TaskID, res[j], errs[j])
					results[i] = ia.result("complete", items[i].TaskID, r, err)
				}
			})
		}
		wg.Wait()
	}
}

// result is a report's result: r, or the result of an unexpected failure err.
func (ia *internalAPI) result(kind, taskID string, r reportResult, err error) reportResult {
	if err != nil {
		return ia.failResult(kind, taskID, err)
	}
	return r
}

// checkReport answers a report that names no valid task or not exactly one call.
func checkReport(it *reportItem) (reportResult, bool) {
	if !store.ValidID(it.TaskID) {
		return reportResult{Code: http.StatusNotFound, Msg: "Task not found"}, true
	}
	n := 0
	for _, set := range []bool{it.Heartbeat != nil, it.Complete != nil, it.Progress != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return reportResult{Code: http.StatusBadRequest, Msg: "a report carries exactly one of heartbeat, complete and progress"}, true
	}
	return reportResult{}, false
}

// failResult is Server.fail for one report: 503 when the database is unavailable (or
// the request was given up), 500 otherwise; the cause is logged, never sent.
func (ia *internalAPI) failResult(kind, taskID string, err error) reportResult {
	switch {
	case store.IsUnavailable(err) || errors.Is(err, context.DeadlineExceeded):
		ia.s.log.Warn("database unavailable", "route", "/internal/v1/reports", "report", kind, "error", err.Error())
		return reportResult{Code: http.StatusServiceUnavailable, Msg: "Service temporarily unavailable, retry later"}
	case errors.Is(err, context.Canceled):
		return reportResult{Code: http.StatusServiceUnavailable, Msg: "Request cancelled, retry later"}
	}
	ia.s.log.Error("report failed", "route", "/internal/v1/reports", "report", kind, "task_id", taskID, "error", err.Error())
	return reportResult{Code: http.StatusInternalServerError, Msg: "Internal error"}
}
