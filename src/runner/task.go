package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/client"
)

// taskRun is one leased task, from lease to Complete (or hand-over).
type taskRun struct {
	r        *Runner
	lease    client.Lease
	log      *slog.Logger
	fwd      *logForwarder
	leasedAt time.Time
	started  time.Time // when the backend ran it (zero: never)

	mu           sync.Mutex
	ref          backend.Ref
	lostFinished bool // the 409 said the task had already ended
	refReported  bool // a heartbeat carrying ref succeeded
	handedBack   bool // the drain left the task running for another runner
	completing   bool // finish is reporting the end: it, not the heartbeats, tells a lost lease

	hbKick     chan struct{}
	hbStop     chan struct{}
	hbDone     chan struct{}
	hbStopOnce sync.Once
	hbCtx      context.Context // the heartbeats' calls; ends when they are stopped
	hbCancel   context.CancelFunc
	cancelCh   chan struct{} // closed when the user cancelled the task
	cancelOnce sync.Once
	lostCh     chan struct{} // closed when the lease was lost
	lostOnce   sync.Once
}

// completeRetryFor bounds how long a finished task's Complete is retried while the API
// is unreachable.
const completeRetryFor = 5 * time.Minute

// outcome is how a task ended, as the runner reports it.
type outcome struct {
	status   string
	exitCode *int
	msg      string
	// noRetry: retrying cannot help (the backend refused the code).
	noRetry bool
}

func (t *taskRun) run() {
	r, l := t.r, t.lease
	t.leasedAt = time.Now()
	t.log = r.log.With("task_id", l.Task.ID, "lease_id", l.LeaseID, "attempt", l.Attempt, "code_name", l.Task.CodeName)
	ctx := r.reportCtx
	t.fwd = newLogForwarder(ctx, func(ctx context.Context, stream string, data []byte) error {
		return r.cl.AppendLog(ctx, l.Task.ID, l.LeaseID, stream, data)
	}, t.log, r.metrics, r.opts.LogFlushInterval, r.opts.LogBatchBytes, r.opts.LogBufferBytes)
	t.setupLogCursor()
	t.hbKick = make(chan struct{}, 1)
	t.hbStop = make(chan struct{})
	t.hbDone = make(chan struct{})
	t.hbCtx, t.hbCancel = context.WithCancel(ctx)
	t.cancelCh = make(chan struct{})
	t.lostCh = make(chan struct{})
	go t.heartbeats()
	defer t.stopHeartbeats()

	timeout := time.Duration(l.Task.Timeout) * time.Second
	var ref backend.Ref
	if l.Cancel {
		r.metrics.leases.WithLabelValues("cancel").Inc()
		t.stopCancelled(ctx)
		return
	}
	if l.Adopt && l.BackendRef != "" {
		r.metrics.leases.WithLabelValues("adopt").Inc()
		var (
			res    *outcome
			follow bool
		)
		ref, res, follow = t.adopt(ctx)
		if res != nil {
			t.finish(ctx, *res)
			return
		}
		if !follow {
			t.abandon()
			return
		}
		t.started = time.Now()
		if l.Task.StartTime != nil {
			t.started = *l.Task.StartTime
			if timeout > 0 {
				timeout = max(timeout-time.Since(*l.Task.StartTime), time.Millisecond)
			}
		}
	} else {
		r.metrics.leases.WithLabelValues("start").Inc()
		t.log.Debug("starting task")
		spec, ok := t.remoteSpec(ctx, t.spec())
		if !ok {
			t.abandon()
			return
		}
		var err error
		ref, err = r.be.Start(ctx, spec, t.fwd)
		if err != nil {
			if errors.Is(err, backend.ErrUnsupportedCode) || errors.Is(err, backend.ErrBadCode) {
				t.log.Info("the backend refused the code", "error", err.Error())
				t.finish(ctx, outcome{status: client.StatusError, msg: err.Error(), noRetry: true})
				return
			}
			r.metrics.backendErrors.WithLabelValues("start").Inc()
			t.log.Error("backend could not start the task", "error", err.Error())
			t.finish(ctx, outcome{status: client.StatusKilled, msg: "The task could not be started: " + err.Error()})
			return
		}
		t.started = time.Now()
		r.metrics.pickup.Observe(t.started.Sub(t.leasedAt).Seconds())
	}
	t.mu.Lock()
	t.ref = ref
	t.mu.Unlock()
	t.kickHeartbeat()
	t.log.Info("task running", "backend_ref", string(ref), "adopted", l.Adopt)

	res, handedOver := t.follow(ctx, ref, timeout)
	if handedOver {
		t.abandon()
		t.mu.Lock()
		back := t.handedBack
		t.mu.Unlock()
		if back {
			t.releaseLease(ctx, ref)
		}
		return
	}
	t.finish(ctx, res)
}

// stopCancelled handles a Cancel lease: the user cancelled the task while no runner
// held it; stop what may still run under its ref, then complete it cancelled.
func (t *taskRun) stopCancelled(ctx context.Context) {
	ref := backend.Ref(t.lease.BackendRef)
	switch {
	case ref == "":
	case !t.r.ownsRef(string(ref)):
		t.log.Error("cannot stop a cancelled task of another backend", "backend_ref", string(ref))
	default:
		t.log.Info("stopping a task cancelled while no runner held it", "backend_ref", string(ref))
		t.cancelBackend(ref)
	}
	t.finish(ctx, outcome{status: client.StatusCancelled})
}

// spec builds the backend's Spec from the lease.
func (t *taskRun) spec() backend.Spec {
	lt := t.lease.Task
	s := backend.Spec{
		TaskID: lt.ID, ProjectID: lt.ProjectID, CodeID: lt.CodeID, CodeName: lt.CodeName, CodeRev: lt.CodeRev,
		Image: lt.Image, Command: lt.Command, FileName: lt.FileName,
		EnvVars: lt.EnvVars, Payload: lt.Payload, ScheduleID: lt.ScheduleID,
	}
	if lt.Config != nil {
		s.Config = *lt.Config
	}
	if lt.Timeout > 0 {
		s.Timeout = time.Duration(lt.Timeout)*time.Second + t.r.opts.TimeoutGrace
	}
	if lt.HasArchive {
		cl, id, leaseID := t.r.cl, lt.ID, t.lease.LeaseID
		s.Archive = func(ctx context.Context) (io.ReadCloser, error) {
			a, err := cl.OpenArchive(ctx, id, leaseID)
			if err != nil {
				return nil, fmt.Errorf("download the code package: %w", err)
			}
			return a, nil
		}
	}
	return s
}

// adopt takes over a task a previous lease holder started. It answers the task's
// outcome when it is already known, follow when the task runs here now, or neither when
// the backend could not be asked (the lease is then left to expire, and the task to be
// adopted again).
func (t *taskRun) adopt(ctx context.Context) (backend.Ref, *outcome, bool) {
	r := t.r
	ref := backend.Ref(t.lease.BackendRef)
	log := t.log.With("backend_ref", string(ref))
	if !r.ownsRef(string(ref)) {
		log.Error("cannot adopt a task of another backend")
		return ref, &outcome{status: client.StatusKilled,
			msg: fmt.Sprintf("The task was started on another backend (%s) than this runner's (%s) and cannot be followed", t.lease.BackendRef, r.be.Name())}, false
	}
	var (
		st  backend.State
		err error
	)
	for attempt := 1; attempt <= 3; attempt++ {
		st, err = r.be.Status(ctx, ref)
		if err == nil {
			break
		}
		r.metrics.backendErrors.WithLabelValues("status").Inc()
		log.Warn("backend status of an adopted task failed", "attempt", attempt, "error", err.Error())
		if attempt < 3 {
			sleep(ctx, time.Duration(attempt)*time.Second)
		}
	}
	if err != nil {
		log.Error("cannot tell whether the adopted task still runs; leaving the lease to expire", "error", err.Error())
		return ref, nil, false
	}
	switch st.Phase {
	case backend.Exited:
		log.Info("adopted task had already ended", "detail", st.Detail)
		o := t.mapResult(st.Result, "")
		return ref, &o, false
	case backend.Gone:
		log.Warn("adopted task is gone", "detail", st.Detail)
		t.cancelBackend(ref) // cleans up what it left behind
		return ref, &outcome{status: client.StatusKilled, msg: "The task was lost with its runner: " + st.Detail}, false
	}
	if err := t.attach(ctx, ref); err != nil {
		switch {
		case errors.Is(err, backend.ErrGone):
			t.cancelBackend(ref)
			return ref, &outcome{status: client.StatusKilled, msg: "The task was lost with its runner: " + err.Error()}, false
		case errors.Is(err, backend.ErrNotAdoptable):
			log.Warn("adopted task runs but cannot be followed; stopping it", "error", err.Error())
			t.cancelBackend(ref)
			return ref, &outcome{status: client.StatusKilled, msg: "The task's runner was lost and the task could not be taken over: " + err.Error()}, false
		}
		r.metrics.backendErrors.WithLabelValues("attach").Inc()
		log.Error("attaching to the adopted task failed; leaving the lease to expire", "error", err.Error())
		return ref, nil, false
	}
	log.Info("adopted a running task", "detail", st.Detail)
	return ref, nil, true
}

type waitResult struct {
	res backend.Result
	err error
}

// follow waits for the task to end, enforcing its timeout and honouring cancels, lease
// loss and the drain's hand-back. handedOver means the task is no longer this
// runner's to report.
func (t *taskRun) follow(ctx context.Context, ref backend.Ref, timeout time.Duration) (o outcome, handedOver bool) {
	r := t.r
	waitCtx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	resCh := make(chan waitResult, 1)
	go func() {
		res, err := r.be.Wait(waitCtx, ref)
		resCh <- waitResult{res, err}
	}()
	var timer <-chan time.Time
	if timeout > 0 {
		tm := time.NewTimer(timeout)
		defer tm.Stop()
		timer = tm.C
	}
	why := ""
	cancelCh, lostCh, handBack := t.cancelCh, t.lostCh, r.handBack
	for {
		select {
		case wr := <-resCh:
			if why == "lost" {
				return outcome{}, true
			}
			if wr.err != nil {
				return t.waitFailed(ctx, ref, wr.err, why), false
			}
			return t.mapResult(wr.res, why), false
		case <-timer:
			timer = nil
			if why == "" {
				why = "timeout"
				t.log.Info("task timed out; stopping it", "timeout", time.Duration(t.lease.Task.Timeout)*time.Second)
				go t.cancelBackend(ref)
			}
		case <-cancelCh:
			cancelCh = nil
			if why != "lost" {
				why = "cancel"
				t.log.Info("task cancelled by the user; stopping it")
				go t.cancelBackend(ref)
			}
		case <-lostCh:
			lostCh, cancelCh = nil, nil
			t.mu.Lock()
			finished := t.lostFinished
			t.mu.Unlock()
			if r.adoptable && !finished {
				t.log.Warn("lease lost; another runner may adopt the task, so it keeps running")
				return outcome{}, true
			}
			t.log.Warn("lease lost; stopping the task, which is no longer this runner's", "task_finished", finished)
			why = "lost"
			go t.cancelBackend(ref)
		case <-handBack:
			handBack = nil
			if r.adoptable {
				t.log.Info("drain: leaving the task running for another runner to adopt")
				t.mu.Lock()
				t.handedBack = true
				t.mu.Unlock()
				return outcome{}, true
			}
			if why == "" {
				why = "drain"
				t.log.Warn("drain: stopping the task")
				go t.cancelBackend(ref)
			}
		}
	}
}

// waitFailed decides how a task ended when the backend could not say.
func (t *taskRun) waitFailed(ctx context.Context, ref backend.Ref, err error, why string) outcome {
	r := t.r
	switch {
	case errors.Is(err, backend.ErrGone):
		return outcome{status: client.StatusKilled, msg: "The task was lost: " + err.Error()}
	case errors.Is(err, backend.ErrNotAdoptable):
		t.cancelBackend(ref)
		return outcome{status: client.StatusKilled, msg: "The task could not be followed: " + err.Error()}
	}
	r.metrics.backendErrors.WithLabelValues("wait").Inc()
	t.log.Error("waiting for the task failed", "error", err.Error())
	if st, serr := r.be.Status(ctx, ref); serr == nil && st.Phase == backend.Exited {
		return t.mapResult(st.Result, why)
	}
	t.cancelBackend(ref)
	return outcome{status: client.StatusKilled, msg: "The backend lost track of the task: " + err.Error()}
}

// mapResult turns a backend result into the reported status; why is the runner's own
// reason for stopping the task, if it did.
func (t *taskRun) mapResult(res backend.Result, why string) outcome {
	code := res.ExitCode
	o := outcome{exitCode: &code}
	switch {
	case why == "cancel":
		o.status = client.StatusCancelled
	case why == "timeout" || res.TimedOut:
		o.status = client.StatusTimeout
		o.msg = fmt.Sprintf("Task timed out after %d seconds", t.lease.Task.Timeout)
	case why == "drain":
		o.status = client.StatusKilled
		o.msg = "The runner shut down before the task finished"
	case res.Success():
		o.status = client.StatusComplete
	case res.OOM:
		o.status = client.StatusError
		o.msg = res.Msg
	case res.Cancelled:
		o.status = client.StatusKilled
		o.msg = "The task was stopped by its backend"
	default:
		o.status = client.StatusError
		o.msg = res.LastStderrLine
		if o.msg == "" {
			o.msg = res.Msg
		}
	}
	return o
}

func (t *taskRun) cancelBackend(ref backend.Ref) {
	ctx, cancel := context.WithTimeout(t.r.reportCtx, 2*time.Minute)
	defer cancel()
	if err := t.r.be.Cancel(ctx, ref); err != nil {
		t.r.metrics.backendErrors.WithLabelValues("cancel").Inc()
		t.log.Error("backend could not stop the task", "backend_ref", string(ref), "error", err.Error())
	}
}

// finish sends the rest of the output, then completes the task.
func (t *taskRun) finish(ctx context.Context, o outcome) {
	r, l := t.r, t.lease
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	t.fwd.Close(fctx)
	cancel()
	var dur time.Duration
	if !t.started.IsZero() {
		dur = time.Since(t.started)
	}
	// Complete is idempotent: keep trying (and heartbeating, so that the reaper does not
	// take the task meanwhile) while the API is unreachable, for a while.
	// A running heartbeat not sent yet goes no more (the reporter lets the completion
	// stand for it: it sets start_time from the duration).
	req := client.CompleteRequest{LeaseID: l.LeaseID, Status: o.status, ExitCode: o.exitCode, Msg: o.msg, Duration: dur, NoRetry: o.noRetry}
	t.mu.Lock()
	t.completing = true
	t.mu.Unlock()
	var (
		resp client.CompleteResponse
		err  error
	)
	deadline := time.Now().Add(completeRetryFor)
	for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
		resp, err = r.rep.Complete(ctx, l.Task.ID, req)
		if err == nil || errors.Is(err, client.ErrLeaseLost) || ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			break
		}
		var he *client.HTTPError
		if errors.As(err, &he) && he.Code < 500 {
			break
		}
		r.metrics.apiErrors.WithLabelValues("complete").Inc()
		t.log.Warn("completing the task failed; retrying", "status", o.status, "error", err.Error(), "retry_in", backoff.String())
		sleep(ctx, backoff)
	}
	t.stopHeartbeats()
	r.metrics.taskDuration.Observe(time.Since(t.leasedAt).Seconds())
	var he *client.HTTPError
	switch {
	case err == nil:
		r.metrics.outcomes.WithLabelValues(resp.Status).Inc()
		attrs := []any{"status", resp.Status, "duration", dur.String()}
		if o.msg != "" {
			attrs = append(attrs, "msg", o.msg)
		}
		if resp.RetryTaskID != "" {
			attrs = append(attrs, "retry_task_id", resp.RetryTaskID)
		}
		t.log.Info("task ended", attrs...)
	case errors.Is(err, client.ErrTaskFinished) && errors.As(err, &he):
		r.metrics.outcomes.WithLabelValues(he.Status).Inc()
		t.log.Info("task had already ended otherwise", "status", he.Status, "reported", o.status)
	case errors.Is(err, client.ErrLeaseLost):
		r.metrics.leasesLost.Inc()
		t.log.Warn("lease lost before the task could be completed", "reported", o.status)
	default:
		r.metrics.apiErrors.WithLabelValues("complete").Inc()
		t.log.Error("could not complete the task; the API's reaper will end it when the lease expires",
			"status", o.status, "error", err.Error())
	}
}

// abandon stops reporting without completing: the task is handed over (or left to the
// reaper).
func (t *taskRun) abandon() {
	t.fwd.Abandon()
	t.stopHeartbeats()
}

func (t *taskRun) kickHeartbeat() {
	select {
	case t.hbKick <- struct{}{}:
	default:
	}
}

func (t *taskRun) stopHeartbeats() {
	t.hbStopOnce.Do(func() {
		close(t.hbStop)
		t.hbCancel()
	})
	<-t.hbDone
}

// heartbeats extends the lease until stopped, reporting the backend ref once known, and
// signals cancels and lease loss.
func (t *taskRun) heartbeats() {
	defer close(t.hbDone)
	r, l := t.r, t.lease
	timer := time.NewTimer(t.hbInterval(l.ExpiresAt))
	defer timer.Stop()
	for {
		select {
		case <-t.hbStop:
			return
		case <-t.hbKick:
		case <-timer.C:
		}
		t.mu.Lock()
		ref := t.ref
		t.mu.Unlock()
		req := client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StatePreparing}
		if ref != "" {
			// Always adoptable: for a backend whose tasks die with their runner, the
			// adopting runner finds the task Gone, cleans up what it left behind
			// (Cancel) and ends it killed.
			adoptable := true
			req.State, req.BackendRef, req.Adoptable = client.StateRunning, string(ref), &adoptable
		}
		resp, err := r.rep.Heartbeat(t.hbCtx, l.Task.ID, req)
		next := t.hbInterval(resp.ExpiresAt)
		switch {
		case err == nil:
			if ref != "" {
				t.mu.Lock()
				t.refReported = true
				t.mu.Unlock()
			}
			if resp.Cancel {
				t.cancelOnce.Do(func() { close(t.cancelCh) })
			}
		case errors.Is(err, client.ErrLeaseLost):
			t.mu.Lock()
			t.lostFinished = errors.Is(err, client.ErrTaskFinished)
			completing := t.completing
			t.mu.Unlock()
			if !completing {
				// (Once the end is being reported, finish tells what the API answered.)
				r.metrics.leasesLost.Inc()
			}
			t.lostOnce.Do(func() { close(t.lostCh) })
			return
		default:
			select {
			case <-t.hbStop:
				return
			default:
			}
			r.metrics.apiErrors.WithLabelValues("heartbeat").Inc()
			t.log.Warn("heartbeat failed", "error", err.Error())
			next = min(next, time.Second)
		}
		timer.Reset(next)
	}
}

// hbInterval is the configured interval, or a third of the lease's remaining time when
// that is sooner.
func (t *taskRun) hbInterval(expires time.Time) time.Duration {
	d := t.r.opts.HeartbeatInterval
	if ld := t.lease.LeaseDuration; ld > 0 && ld/3 < d {
		d = ld / 3
	}
	if !expires.IsZero() {
		if rem := time.Until(expires) / 3; rem < d {
			d = rem
		}
	}
	return max(d, 50*time.Millisecond)
}
