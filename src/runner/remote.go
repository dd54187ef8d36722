package runner

import (
	"context"
	"errors"
	"time"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/client"
)

// What the runner does for backends whose tasks run away from it (diego): task input
// credentials, first-lease hints, per-project spaces, and handing tasks back on drain.

// inputTokener is the runner protocol call for task input credentials.
type inputTokener interface {
	InputToken(ctx context.Context, taskID, leaseID string) (client.InputToken, error)
}

// releaser hands a held task back to the queue at once.
type releaser interface {
	Release(ctx context.Context, taskID, leaseID string) error
}

func (r *Runner) wantsTaskInput() bool {
	if r.opts.TaskInput != nil {
		return *r.opts.TaskInput
	}
	return r.be.Name() == "diego"
}

// remoteSpec completes a Spec for a backend whose tasks fetch their own input: the
// input credential, FirstLease and the project's space. ok is false when the task
// cannot be started now (the lease is lost, or the API did not give a credential): the
// caller abandons it and the lease expires (the task has not started, so the reaper
// queues it again).
func (t *taskRun) remoteSpec(ctx context.Context, s backend.Spec) (backend.Spec, bool) {
	r, l := t.r, t.lease
	// Nobody can have started the task before: no earlier lease, no recorded ref.
	s.FirstLease = l.Attempt == 1 && l.BackendRef == ""
	if !r.wantsTaskInput() {
		if r.opts.SpaceFor != nil {
			s.Space = r.opts.SpaceFor(l.Task.ProjectID, false)
		}
		return s, true
	}
	it, ok := r.cl.(inputTokener)
	if !ok {
		// A client without the call (test doubles): the backend inlines what fits in
		// its command and refuses the rest.
		if r.opts.SpaceFor != nil {
			s.Space = r.opts.SpaceFor(l.Task.ProjectID, false)
		}
		return s, true
	}
	var (
		tok client.InputToken
		err error
	)
	for attempt := 1; attempt <= 3; attempt++ {
		tok, err = it.InputToken(ctx, l.Task.ID, l.LeaseID)
		if err == nil || errors.Is(err, client.ErrLeaseLost) || ctx.Err() != nil {
			break
		}
		r.metrics.apiErrors.WithLabelValues("input_token").Inc()
		t.log.Warn("asking for the task's input credential failed", "attempt", attempt, "error", err.Error())
		sleep(ctx, time.Duration(attempt)*time.Second)
	}
	if err != nil {
		if errors.Is(err, client.ErrLeaseLost) {
			t.log.Warn("lease lost (or task cancelled) before the task started", "error", err.Error())
		} else {
			t.log.Error("no input credential for the task; leaving the lease to expire", "error", err.Error())
		}
		return s, false
	}
	s.InputURL, s.InputToken = tok.URL, tok.Token
	if r.opts.SpaceFor != nil {
		s.Space = r.opts.SpaceFor(l.Task.ProjectID, tok.BrokerInstance)
	}
	return s, true
}

// releaseLease hands a task the drain left running back to the queue at once, for
// adoption by another runner, instead of letting its lease expire. The API queues it for
// adoption only once it knows the task's backend ref, so that is reported first when no
// heartbeat carried it yet; without it the lease is left to expire (the reaper then
// queues the task, and its next runner looks the backend task up by name).
func (t *taskRun) releaseLease(ctx context.Context, ref backend.Ref) {
	r, l := t.r, t.lease
	rl, ok := r.cl.(releaser)
	if !ok {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t.mu.Lock()
	reported := t.refReported
	t.mu.Unlock()
	if !reported {
		adoptable := true
		_, err := r.rep.Heartbeat(rctx, l.Task.ID, client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StateRunning,
			BackendRef: string(ref), Adoptable: &adoptable})
		if err != nil {
			t.log.Warn("drain: could not report the task's backend ref; leaving its lease to expire", "error", err.Error())
			return
		}
	}
	if err := rl.Release(rctx, l.Task.ID, l.LeaseID); err != nil {
		t.log.Warn("drain: could not hand the task back; it is adopted once its lease expires", "error", err.Error())
		return
	}
	t.log.Info("drain: task handed back for adoption", "backend_ref", string(ref))
}

// logCursorClient records and reads backend log cursors through the API.
type logCursorClient interface {
	SetLogCursor(ctx context.Context, taskID, leaseID, cursor string) error
	LogCursor(ctx context.Context, taskID, leaseID string) (string, error)
}

// cursorAttacher is a backend that can resume a task's log at a cursor (diego).
type cursorAttacher interface {
	AttachAt(ctx context.Context, ref backend.Ref, sink backend.LogSink, cursor string) error
}

// setupLogCursor lets the task's log forwarder record the backend's log cursors, for
// backends that report them and can resume at one.
func (t *taskRun) setupLogCursor() {
	cc, ok := t.r.cl.(logCursorClient)
	if _, resumes := t.r.be.(cursorAttacher); !ok || !resumes {
		return
	}
	id, leaseID := t.lease.Task.ID, t.lease.LeaseID
	t.fwd.sendCursor = func(ctx context.Context, cursor string) error { return cc.SetLogCursor(ctx, id, leaseID, cursor) }
}

// attach follows an adopted task, resuming its log where the previous holder's copy
// ended when the backend and the API know where that is.
func (t *taskRun) attach(ctx context.Context, ref backend.Ref) error {
	r, l := t.r, t.lease
	ca, resumes := r.be.(cursorAttacher)
	cc, ok := r.cl.(logCursorClient)
	if resumes && ok {
		cursor, err := cc.LogCursor(ctx, l.Task.ID, l.LeaseID)
		switch {
		case err != nil:
			t.log.Warn("could not read the task's log cursor; its output may be appended again from the start", "error", err.Error())
		case cursor != "":
			err := ca.AttachAt(ctx, ref, t.fwd, cursor)
			if err == nil {
				t.log.Debug("resuming the task's output", "cursor", cursor)
				return nil
			}
			if errors.Is(err, backend.ErrGone) || errors.Is(err, backend.ErrNotAdoptable) {
				return err
			}
			t.log.Warn("could not resume the task's output at its cursor; attaching from the start", "error", err.Error())
		}
	}
	return r.be.Attach(ctx, ref, t.fwd)
}
