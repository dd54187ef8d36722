package client

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// ProgressRequest sets a held task's percent and/or msg (nil leaves one as it is).
type ProgressRequest struct {
	LeaseID string  `json:"lease_id"`
	Percent *int    `json:"percent,omitempty"`
	Msg     *string `json:"msg,omitempty"`
}

// ReportItem is one report of a Report call: a task and exactly one of the bodies its
// single-task calls take.
type ReportItem struct {
	TaskID    string            `json:"task_id"`
	Heartbeat *HeartbeatRequest `json:"heartbeat,omitempty"`
	Complete  *CompleteRequest  `json:"complete,omitempty"`
	Progress  *ProgressRequest  `json:"progress,omitempty"`
}

// kind names the report's single-task call.
func (it ReportItem) kind() string {
	switch {
	case it.Heartbeat != nil:
		return "heartbeat"
	case it.Complete != nil:
		return "complete"
	case it.Progress != nil:
		return "progress"
	}
	return "report"
}

// leaseID is the lease the report is made under.
func (it ReportItem) leaseID() string {
	switch {
	case it.Heartbeat != nil:
		return it.Heartbeat.LeaseID
	case it.Complete != nil:
		return it.Complete.LeaseID
	case it.Progress != nil:
		return it.Progress.LeaseID
	}
	return ""
}

// ReportResult is what the report's single-task call would have answered: Code is its
// HTTP status, the other fields its body (those of HeartbeatResponse, CompleteResponse,
// the progress call's cancel, and an error's msg and status).
type ReportResult struct {
	Code        int       `json:"code"`
	Msg         string    `json:"msg,omitempty"`
	Cancel      bool      `json:"cancel,omitempty"`
	Status      string    `json:"status,omitempty"`
	ExpiresAt   time.Time `json:"expires_at"`
	RetryTaskID string    `json:"retry_task_id,omitempty"`
}

// Err is the error the single-task call would have returned for r (nil for a 2xx): an
// *HTTPError, so that ErrLeaseLost, ErrTaskFinished and ErrNotFound match as they do
// there.
func (r ReportResult) Err(it ReportItem) error {
	if r.Code >= 200 && r.Code < 300 {
		return nil
	}
	return &HTTPError{Method: http.MethodPost, Path: taskPath(it.TaskID, it.kind()), Code: r.Code, Msg: r.Msg, Status: r.Status}
}

// retryable tells whether the report's failure is worth sending again (the API did not
// apply it: database unavailable).
func (r ReportResult) retryable() bool {
	return r.Code == http.StatusServiceUnavailable || r.Code == http.StatusBadGateway || r.Code == http.StatusGatewayTimeout
}

// MaxReports is how many reports one Report call may carry.
const MaxReports = 1000

// Report sends many reports in one request (POST /internal/v1/reports) and answers one
// result per item, in order. The request is retried on connection errors and 5xx (every
// report is idempotent for its lease holder); an error means no result is known. A
// result's own failure is in its Code (see ReportResult.Err): a 503 there means that
// report was not applied and may be sent again. An API without batched reports answers
// ErrNotFound (404): use the single-task calls.
func (c *RunnerClient) Report(ctx context.Context, items []ReportItem) ([]ReportResult, error) {
	if len(items) == 0 {
		return nil, nil
	}
	if len(items) > MaxReports {
		return nil, fmt.Errorf("report: %d reports, at most %d per request", len(items), MaxReports)
	}
	var out struct {
		Results []ReportResult `json:"results"`
	}
	err := c.call(ctx, call{method: http.MethodPost, path: "/internal/v1/reports", body: map[string]any{"reports": items},
		out: &out, retry: retryAlways})
	if err != nil {
		return nil, err
	}
	if len(out.Results) != len(items) {
		return nil, fmt.Errorf("POST /internal/v1/reports: %d results for %d reports", len(out.Results), len(items))
	}
	return out.Results, nil
}
