package client

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ReportSender sends batched reports (*RunnerClient).
type ReportSender interface {
	Report(ctx context.Context, items []ReportItem) ([]ReportResult, error)
}

// singleReporter is the single-task calls, for an API without batched reports.
type singleReporter interface {
	Heartbeat(ctx context.Context, taskID string, req HeartbeatRequest) (HeartbeatResponse, error)
	Complete(ctx context.Context, taskID string, req CompleteRequest) (CompleteResponse, error)
	Progress(ctx context.Context, taskID, leaseID string, percent *int, msg *string) (cancel bool, err error)
}

// ReporterOptions tune a Reporter; zero values take the defaults.
type ReporterOptions struct {
	// MaxBatch bounds the reports of one request (default 500, at most MaxReports).
	MaxBatch int
	// MaxInFlight bounds the requests sent at once (default 2).
	MaxInFlight int
	// Linger is how long a request waits for more calls before it goes (default 0:
	// at once). Tasks leased together tend to end together: without it the first of
	// them goes alone, the second alone in the other request, the rest after those.
	Linger time.Duration
	// MaxAttempts bounds how often a report the API did not apply (a 503 result) is
	// sent (default 5); Backoff is the first pause before sending it again (default
	// 200ms), doubled each time up to MaxBackoff (default 5s): the single-task calls'
	// retries.
	MaxAttempts int
	Backoff     time.Duration
	MaxBackoff  time.Duration
}

// Reporter coalesces the heartbeats, completions and progress reports of many tasks
// into batched Report requests, group-commit style: a call made while no request is
// out goes at once; calls made while MaxInFlight requests are out wait and go together
// in the next one (at most MaxBatch). Each call answers what its single-task call
// answers (the same errors: ErrLeaseLost, ErrTaskFinished, ErrNotFound, HTTPError), and
// a request is retried like a single call; a call returns early with its ctx's error.
//
// Per task and lease it keeps the calls' order: a task's reports are never in two
// requests at once. A heartbeat that has not been sent when the task's completion is
// made is not sent at all: the completion stands for it (it extends nothing, but marks
// the task started, since a completion sets start_time from its duration), and the
// heartbeat answers the completion's outcome; so does a heartbeat made while the
// task's completion is pending or being sent.
//
// Against an API without batched reports (404 or 405 to the request), it falls back to
// the single-task calls, when the sender has them (*RunnerClient does), and tries a
// batch again after legacyFor (the API may have been upgraded, or the 404 came from a
// router while the API was away).
// It is safe for concurrent use and needs no closing.
type Reporter struct {
	s      ReportSender
	single singleReporter
	opts   ReporterOptions
	// legacyUntil: single-task calls until then (unix nanoseconds).
	legacyUntil atomic.Int64

	mu         sync.Mutex
	pending    []*pendingReport
	inFlight   int
	busy       map[string]struct{}          // tasks with a report in a request
	heartbeats map[taskLease]*pendingReport // heartbeats queued, not sent yet
	completes  map[taskLease]*pendingReport // completions queued or being sent
}

// legacyFor is how long a Reporter uses the single-task calls after the API answered
// that it has no batched reports.
const legacyFor = 10 * time.Minute

type taskLease struct{ task, lease string }

type pendingReport struct {
	item     ReportItem
	ctx      context.Context
	attempts int
	done     chan reportAnswer
	// dropped: stood for by a completion, or given up; skipped in pending.
	dropped bool
	// riders are heartbeats that this completion answers.
	riders []*pendingReport
}

type reportAnswer struct {
	res ReportResult
	err error
}

// NewReporter makes a Reporter that sends through s.
func NewReporter(s ReportSender, opts ReporterOptions) *Reporter {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 500
	}
	opts.MaxBatch = min(opts.MaxBatch, MaxReports)
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 2
	}
	if c, ok := s.(*RunnerClient); ok {
		if opts.MaxAttempts <= 0 {
			opts.MaxAttempts = c.opts.MaxAttempts
		}
		if opts.Backoff <= 0 {
			opts.Backoff = c.opts.Backoff
		}
		if opts.MaxBackoff <= 0 {
			opts.MaxBackoff = c.opts.MaxBackoff
		}
	}
	defaultRetries(&opts.MaxAttempts, &opts.Backoff, &opts.MaxBackoff)
	r := &Reporter{s: s, opts: opts, busy: map[string]struct{}{},
		heartbeats: map[taskLease]*pendingReport{}, completes: map[taskLease]*pendingReport{}}
	r.single, _ = s.(singleReporter)
	return r
}

// Heartbeat is RunnerClient.Heartbeat, batched.
func (r *Reporter) Heartbeat(ctx context.Context, taskID string, req HeartbeatRequest) (HeartbeatResponse, error) {
	res, err := r.submit(ctx, ReportItem{TaskID: taskID, Heartbeat: &req})
	if err != nil {
		return HeartbeatResponse{}, err
	}
	return HeartbeatResponse{Cancel: res.Cancel, Status: res.Status, ExpiresAt: res.ExpiresAt}, nil
}

// Complete is RunnerClient.Complete, batched.
func (r *Reporter) Complete(ctx context.Context, taskID string, req CompleteRequest) (CompleteResponse, error) {
	res, err := r.submit(ctx, ReportItem{TaskID: taskID, Complete: &req})
	if err != nil {
		return CompleteResponse{}, err
	}
	return CompleteResponse{Status: res.Status, RetryTaskID: res.RetryTaskID}, nil
}

// Progress is RunnerClient.Progress, batched.
func (r *Reporter) Progress(ctx context.Context, taskID, leaseID string, percent *int, msg *string) (cancel bool, err error) {
	res, err := r.submit(ctx, ReportItem{TaskID: taskID, Progress: &ProgressRequest{LeaseID: leaseID, Percent: percent, Msg: msg}})
	return res.Cancel, err
}

func (r *Reporter) submit(ctx context.Context, it ReportItem) (ReportResult, error) {
	if err := ctx.Err(); err != nil {
		return ReportResult{}, err
	}
	if r.single != nil && time.Now().UnixNano() < r.legacyUntil.Load() {
		return r.sendSingle(ctx, it)
	}
	p := &pendingReport{item: it, ctx: ctx, done: make(chan reportAnswer, 1)}
	key := taskLease{it.TaskID, it.leaseID()}
	r.mu.Lock()
	switch {
	case it.Heartbeat != nil:
		if c := r.completes[key]; c != nil {
			// The completion stands for it.
			c.riders = append(c.riders, p)
			r.mu.Unlock()
			return r.wait(p)
		}
		r.heartbeats[key] = p
	case it.Complete != nil:
		if h := r.heartbeats[key]; h != nil {
			h.dropped = true
			delete(r.heartbeats, key)
			p.riders = append(p.riders, h)
		}
		r.completes[key] = p
	}
	r.pending = append(r.pending, p)
	r.startFlusherLocked()
	r.mu.Unlock()
	return r.wait(p)
}

func (r *Reporter) wait(p *pendingReport) (ReportResult, error) {
	select {
	case a := <-p.done:
		return a.res, a.err
	case <-p.ctx.Done():
		return ReportResult{}, p.ctx.Err()
	}
}

// startFlusherLocked starts a flusher when fewer than MaxInFlight run.
func (r *Reporter) startFlusherLocked() {
	if r.inFlight < r.opts.MaxInFlight {
		r.inFlight++
		go r.flush()
	}
}

// flush sends batches until nothing that can be sent is pending.
func (r *Reporter) flush() {
	if r.opts.Linger > 0 {
		time.Sleep(r.opts.Linger)
	}
	for {
		r.mu.Lock()
		batch := r.takeLocked()
		if len(batch) == 0 {
			r.inFlight--
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		r.send(batch)
	}
}

// takeLocked removes the next batch from pending: reports whose task has none in a
// request, in order, at most MaxBatch. Reports whose caller gave up are dropped.
func (r *Reporter) takeLocked() []*pendingReport {
	var batch []*pendingReport
	rest := r.pending[:0:0]
	var inBatch map[string]struct{}
	for i := 0; i < len(r.pending); i++ {
		p := r.pending[i]
		if p.dropped {
			continue
		}
		key := taskLease{p.item.TaskID, p.item.leaseID()}
		if p.ctx.Err() != nil {
			// The caller has gone; riders still wait: send them on their own.
			if r.heartbeats[key] == p {
				delete(r.heartbeats, key)
			}
			if r.completes[key] == p {
				delete(r.completes, key)
			}
			for _, h := range p.riders {
				h.dropped = false
				r.pending = append(r.pending, h)
			}
			p.riders = nil
			continue
		}
		_, busy := r.busy[p.item.TaskID]
		_, mine := inBatch[p.item.TaskID]
		if len(batch) >= r.opts.MaxBatch || (busy && !mine) {
			rest = append(rest, p)
			continue
		}
		if inBatch == nil {
			inBatch = map[string]struct{}{}
		}
		inBatch[p.item.TaskID] = struct{}{}
		r.busy[p.item.TaskID] = struct{}{}
		if r.heartbeats[key] == p {
			delete(r.heartbeats, key)
		}
		batch = append(batch, p)
	}
	r.pending = rest
	return batch
}

func (r *Reporter) send(batch []*pendingReport) {
	items := make([]ReportItem, len(batch))
	for i, p := range batch {
		items[i] = p.item
		p.attempts++
	}
	results, err := r.s.Report(context.Background(), items)
	r.mu.Lock()
	for _, p := range batch {
		delete(r.busy, p.item.TaskID)
	}
	r.mu.Unlock()
	if err != nil {
		var he *HTTPError
		if errors.As(err, &he) && (he.Code == http.StatusNotFound || he.Code == http.StatusMethodNotAllowed) && r.single != nil {
			// The API has no batched reports: single-task calls for a while.
			r.legacyUntil.Store(time.Now().Add(legacyFor).UnixNano())
			for _, p := range batch {
				go r.finishSingle(p)
			}
			return
		}
		for _, p := range batch {
			r.finish(p, ReportResult{}, err)
		}
		return
	}
	for i, p := range batch {
		res := results[i]
		if res.retryable() && p.attempts < r.opts.MaxAttempts && p.ctx.Err() == nil {
			d := r.opts.Backoff << (p.attempts - 1)
			if d > r.opts.MaxBackoff || d <= 0 {
				d = r.opts.MaxBackoff
			}
			time.AfterFunc(d, func() { r.requeue(p) })
			continue
		}
		r.finish(p, res, nil)
	}
}

// requeue queues a report the API did not apply again.
func (r *Reporter) requeue(p *pendingReport) {
	r.mu.Lock()
	r.pending = append(r.pending, p)
	r.startFlusherLocked()
	r.mu.Unlock()
}

// detach forgets p as its task's pending completion and returns its riders (the
// heartbeats it stands for), to be answered with it.
func (r *Reporter) detach(p *pendingReport) []*pendingReport {
	key := taskLease{p.item.TaskID, p.item.leaseID()}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.completes[key] == p {
		delete(r.completes, key)
	}
	riders := p.riders
	p.riders = nil
	return riders
}

// finish answers p and its riders: res (each its own error from it), or err.
func (r *Reporter) finish(p *pendingReport, res ReportResult, err error) {
	riders := r.detach(p)
	answer := func(q *pendingReport, res ReportResult) {
		e := err
		if e == nil {
			e = res.Err(q.item)
		}
		q.done <- reportAnswer{res: res, err: e}
	}
	answer(p, res)
	for _, h := range riders {
		// A heartbeat the completion stood for: the task's state after it.
		answer(h, ReportResult{Code: res.Code, Msg: res.Msg, Status: res.Status})
	}
}

// finishSingle sends p (and its riders) through the single-task calls.
func (r *Reporter) finishSingle(p *pendingReport) {
	res, err := r.sendSingle(p.ctx, p.item)
	r.finish(p, res, err)
}

// sendSingle sends one report through its single-task call.
func (r *Reporter) sendSingle(ctx context.Context, it ReportItem) (ReportResult, error) {
	switch {
	case it.Heartbeat != nil:
		out, err := r.single.Heartbeat(ctx, it.TaskID, *it.Heartbeat)
		return ReportResult{Code: 200, Cancel: out.Cancel, Status: out.Status, ExpiresAt: out.ExpiresAt}, err
	case it.Complete != nil:
		out, err := r.single.Complete(ctx, it.TaskID, *it.Complete)
		return ReportResult{Code: 200, Status: out.Status, RetryTaskID: out.RetryTaskID}, err
	case it.Progress != nil:
		cancel, err := r.single.Progress(ctx, it.TaskID, it.Progress.LeaseID, it.Progress.Percent, it.Progress.Msg)
		return ReportResult{Code: 200, Cancel: cancel}, err
	}
	return ReportResult{}, errors.New("report: no heartbeat, complete or progress")
}
