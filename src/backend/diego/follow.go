package diego

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	logcache "code.cloudfoundry.org/go-log-cache/v3"
	"code.cloudfoundry.org/go-log-cache/v3/rpc/logcache_v1"
	"code.cloudfoundry.org/go-loggregator/v10/rpc/loggregator_v2"
	"github.com/cloudfoundry/go-cfclient/v3/client"
	"github.com/cloudfoundry/go-cfclient/v3/resource"

	"github.com/ironcf/ironworker-release/src/backend"
)

// CF task states.
const (
	statePending   = "PENDING"
	stateRunning   = "RUNNING"
	stateCanceling = "CANCELING"
	stateSucceeded = "SUCCEEDED"
	stateFailed    = "FAILED"
)

func terminal(state string) bool { return state == stateSucceeded || state == stateFailed }

// pollBatch bounds the guids of one list call (URLs stay under 4 KiB); up to this many followed
// tasks cost one call per poll.
const pollBatch = 100

// goneAfter is how many polls in a row must miss a task before it counts as gone.
const goneAfter = 3

// follow is a CF task this process follows: its state (from the poller), its logs
// (from Log Cache) and how it ended.
type follow struct {
	ref                 backend.Ref
	guid, app, name     string
	sourceType          string
	logStart            time.Time
	timeout             time.Duration
	created             time.Time
	ended, done         chan struct{}
	endOnce             sync.Once
	mu                  sync.Mutex
	sink                backend.LogSink
	state, failure      string
	cancelled, timedOut bool
	gone                bool
	misses              int
	timer               *time.Timer
	result              backend.Result
	lastStderr          string
	cursor              int64
	atCursor            int // envelopes processed at cursor
	skip                int // envelopes at cursor still to skip (resuming at a LogCursor)
	seen                map[string]bool
}

// CursorSink is a LogSink that also wants to know how far the output it received goes,
// so that a runner taking the task over can resume there (AttachAt) instead of
// receiving the lines already stored once more. LogCursor is called after the lines it
// covers were written, from the goroutine that writes them.
type CursorSink interface {
	backend.LogSink
	LogCursor(cursor string)
}

func (f *follow) cursorString() string {
	return strconv.FormatInt(f.cursor, 10) + ":" + strconv.Itoa(f.atCursor)
}

func parseCursor(c string) (int64, int, error) {
	ts, n, ok := strings.Cut(c, ":")
	t, err1 := strconv.ParseInt(ts, 10, 64)
	k, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || k < 0 {
		return 0, 0, fmt.Errorf("diego backend: %q is not a log cursor", c)
	}
	return t, k, nil
}

func (f *follow) end() { f.endOnce.Do(func() { close(f.ended) }) }

// followTask starts following a CF task (or, when it is followed already, swaps the
// sink). timeout, when positive, cancels the task that long after CF created it.
func (b *Backend) followTask(t *resource.Task, sink backend.LogSink, timeout time.Duration) *follow {
	return b.followTaskAt(t, sink, timeout, 0, 0)
}

// followTaskAt is followTask with the log read resuming at a cursor (zero: the task's
// start).
func (b *Backend) followTaskAt(t *resource.Task, sink backend.LogSink, timeout time.Duration, cursor int64, skip int) *follow {
	appGUID := ""
	if t.Relationships.App.Data != nil {
		appGUID = t.Relationships.App.Data.GUID
	}
	b.mu.Lock()
	if f := b.follows[t.GUID]; f != nil {
		b.mu.Unlock()
		if sink != nil {
			f.mu.Lock()
			f.sink = sink
			f.mu.Unlock()
		}
		return f
	}
	created := t.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	f := &follow{
		ref: makeRef(t.GUID, appGUID, t.Name), guid: t.GUID, app: appGUID, name: t.Name,
		sourceType: "APP/TASK/" + t.Name, created: created,
		// CC timestamps have second precision; Log Cache's are the cell's clock.
		logStart: created.Add(-5 * time.Second), timeout: timeout,
		ended: make(chan struct{}), done: make(chan struct{}), sink: sink, state: t.State,
		seen: map[string]bool{},
	}
	if t.Result.FailureReason != nil {
		f.failure = *t.Result.FailureReason
	}
	f.cursor = f.logStart.UnixNano()
	if cursor > f.cursor {
		f.cursor, f.skip = cursor, skip
	}
	b.follows[t.GUID] = f
	b.mu.Unlock()
	if terminal(f.state) {
		f.end()
	} else if timeout > 0 {
		left := time.Until(created.Add(timeout))
		if left < 0 {
			left = 0
		}
		f.mu.Lock()
		f.timer = time.AfterFunc(left, func() { b.timeOut(f) })
		f.mu.Unlock()
	}
	go b.logLoop(f)
	return f
}

func (b *Backend) lookup(guid string) *follow {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.follows[guid]
}

func (b *Backend) forget(f *follow) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.follows[f.guid] == f {
		delete(b.follows, f.guid)
	}
}

// timeOut enforces Spec.Timeout: CF tasks have none of their own.
func (b *Backend) timeOut(f *follow) {
	f.mu.Lock()
	if terminal(f.state) || f.gone {
		f.mu.Unlock()
		return
	}
	f.timedOut = true
	f.mu.Unlock()
	b.log.Info("task timed out; cancelling its CF task", "cf_task", f.guid, "name", f.name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := b.cancelCF(ctx, f.guid); err != nil {
		b.log.Warn("cancelling timed-out CF task failed", "cf_task", f.guid, "err", err)
	}
}

// pollLoop reads the state of every followed task, one list call per poll (per
// pollBatch tasks).
func (b *Backend) pollLoop() {
	defer close(b.loopDone)
	t := time.NewTicker(b.poll)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		case <-b.wake:
		}
		b.pollOnce()
	}
}

func (b *Backend) pollOnce() {
	b.mu.Lock()
	var active []*follow
	for _, f := range b.follows {
		select {
		case <-f.ended:
		default:
			active = append(active, f)
		}
	}
	b.mu.Unlock()
	for len(active) > 0 {
		n := min(len(active), pollBatch)
		batch := active[:n]
		active = active[n:]
		guids := make([]string, len(batch))
		for i, f := range batch {
			guids[i] = f.guid
		}
		opts := client.NewTaskListOptions()
		opts.GUIDs.EqualTo(guids...)
		opts.PerPage = 5000
		ctx, cancel := context.WithTimeout(context.Background(), b.requestTimeout)
		list, _, err := b.cf.Tasks.List(ctx, opts)
		cancel()
		if err != nil {
			// CC unavailable or throttling: the tasks keep running; try again next poll.
			b.log.Warn("polling CF task states failed", "tasks", len(batch), "err", err)
			continue
		}
		byGUID := make(map[string]*resource.Task, len(list))
		for _, t := range list {
			byGUID[t.GUID] = t
		}
		for _, f := range batch {
			t := byGUID[f.guid]
			f.mu.Lock()
			if t == nil {
				f.misses++
				if f.misses >= goneAfter {
					f.gone = true
				}
			} else {
				f.misses = 0
				f.state = t.State
				if t.Result.FailureReason != nil {
					f.failure = *t.Result.FailureReason
				}
			}
			ended := terminal(f.state) || f.gone
			if ended && f.timer != nil {
				f.timer.Stop()
			}
			f.mu.Unlock()
			if ended {
				f.end()
			}
		}
	}
}

// logLoop copies the task's lines from Log Cache to its sink while it runs, and once
// more after it ended (after LogGrace), then finishes it.
func (b *Backend) logLoop(f *follow) {
	t := time.NewTicker(b.poll)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.readLogs(f)
		case <-f.ended:
			g := time.NewTimer(b.opts.LogGrace)
			select {
			case <-b.stop:
				g.Stop()
				return
			case <-g.C:
			}
			// The last read matters most: retry it a little when Log Cache fails.
			for i := 0; i < 3 && b.readLogs(f) != nil; i++ {
				select {
				case <-b.stop:
					return
				case <-time.After(b.poll):
				}
			}
			b.finish(f)
			return
		}
	}
}

const logPage = 1000

// readLogs reads the task's new envelopes. Log Cache's start_time is inclusive, so
// every read starts at the newest timestamp seen and skips the envelopes already
// delivered at that timestamp: nothing is delivered twice, nothing skipped.
func (b *Backend) readLogs(f *follow) error {
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), b.requestTimeout)
		envs, err := b.lcRead(ctx, f.app, time.Unix(0, f.cursor),
			logcache.WithEnvelopeTypes(logcache_v1.EnvelopeType_LOG), logcache.WithLimit(logPage))
		cancel()
		if err != nil {
			b.log.Debug("reading Log Cache failed", "app", f.app, "task", f.name, "err", err)
			return err
		}
		before, beforeN := f.cursor, f.atCursor
		for _, e := range envs {
			b.deliver(f, e)
		}
		if f.cursor != before || f.atCursor != beforeN {
			f.mu.Lock()
			cs, ok := f.sink.(CursorSink)
			f.mu.Unlock()
			if ok {
				cs.LogCursor(f.cursorString())
			}
		}
		if len(envs) < logPage || f.cursor == before {
			return nil
		}
	}
	return nil
}

func (b *Backend) deliver(f *follow, e *loggregator_v2.Envelope) {
	ts := e.GetTimestamp()
	if ts < f.cursor {
		return
	}
	lg := e.GetLog()
	key := e.GetInstanceId() + "\x00" + e.GetTags()["source_type"] + "\x00" + lg.GetType().String() + "\x00" + string(lg.GetPayload())
	if ts == f.cursor && f.seen[key] {
		return
	}
	if ts > f.cursor {
		f.cursor = ts
		f.atCursor = 0
		f.skip = 0
		clear(f.seen)
	}
	f.seen[key] = true
	f.atCursor++
	if f.skip > 0 { // delivered by an earlier runner
		f.skip--
		return
	}
	if e.GetTags()["source_type"] != f.sourceType || lg == nil {
		return
	}
	stream := backend.Stdout
	if lg.GetType() == loggregator_v2.Log_ERR {
		stream = backend.Stderr
		if line := strings.TrimSpace(string(lg.GetPayload())); line != "" {
			f.lastStderr = line
		}
	}
	f.mu.Lock()
	sink := f.sink
	f.mu.Unlock()
	if sink != nil {
		p := make([]byte, 0, len(lg.GetPayload())+1)
		p = append(append(p, lg.GetPayload()...), '\n')
		sink.WriteLog(stream, p)
	}
}

func (b *Backend) finish(f *follow) {
	f.mu.Lock()
	if !f.gone {
		f.result = mapResult(f.state, f.failure, f.cancelled, f.timedOut, f.timeout)
		f.result.LastStderrLine = f.lastStderr
	}
	f.mu.Unlock()
	close(f.done)
}

var exitStatus = regexp.MustCompile(`[Ee]xited with status (\d+)`)

// mapResult turns a terminal CF task into a Result: SUCCEEDED is success, FAILED an
// error with CF's failure_reason as Msg, or cancelled/timed out when we cancelled it.
func mapResult(state, failure string, cancelled, timedOut bool, timeout time.Duration) backend.Result {
	if state == stateSucceeded {
		return backend.Result{}
	}
	r := backend.Result{ExitCode: 1, Msg: failure}
	if m := exitStatus.FindStringSubmatch(failure); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			r.ExitCode = n
		}
	}
	lower := strings.ToLower(failure)
	if strings.Contains(lower, "out of memory") || strings.Contains(lower, "oom") {
		r.OOM = true
	}
	switch {
	case timedOut:
		r.TimedOut = true
		r.Msg = fmt.Sprintf("timed out after %s; the CF task was cancelled", timeout)
	case cancelled || strings.Contains(lower, "task was cancelled"):
		r.Cancelled = true
	}
	if r.Msg == "" {
		r.Msg = "the CF task failed without a reason"
	}
	return r
}

// Wait implements backend.Backend.
func (b *Backend) Wait(ctx context.Context, ref backend.Ref) (backend.Result, error) {
	guid, _, _, err := parseRef(ref)
	if err != nil {
		return backend.Result{}, err
	}
	f := b.lookup(guid)
	if f == nil {
		if err := b.Attach(ctx, ref, nil); err != nil {
			return backend.Result{}, err
		}
		if f = b.lookup(guid); f == nil {
			return backend.Result{}, backend.ErrGone
		}
	}
	select {
	case <-ctx.Done():
		return backend.Result{}, ctx.Err()
	case <-f.done:
	}
	b.forget(f)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		return backend.Result{}, fmt.Errorf("%w: CF task %s no longer exists", backend.ErrGone, f.guid)
	}
	return f.result, nil
}

func (b *Backend) getTask(ctx context.Context, guid string) (*resource.Task, error) {
	var t *resource.Task
	err := b.call(ctx, func(ctx context.Context) (err error) {
		t, err = b.cf.Tasks.Get(ctx, guid)
		if resource.IsResourceNotFoundError(err) {
			return nil
		}
		return err
	})
	return t, err
}

// Status implements backend.Backend.
func (b *Backend) Status(ctx context.Context, ref backend.Ref) (backend.State, error) {
	guid, _, _, err := parseRef(ref)
	if err != nil {
		return backend.State{}, err
	}
	if f := b.lookup(guid); f != nil {
		select {
		case <-f.done:
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.gone {
				return backend.State{Phase: backend.Gone, Detail: "CF task " + guid + " no longer exists"}, nil
			}
			return backend.State{Phase: backend.Exited, Result: f.result, Detail: "CF task " + f.state}, nil
		default:
		}
	}
	t, err := b.getTask(ctx, guid)
	if err != nil {
		return backend.State{}, fmt.Errorf("diego backend: read CF task %s: %w", guid, err)
	}
	if t == nil {
		return backend.State{Phase: backend.Gone, Detail: "CF task " + guid + " no longer exists"}, nil
	}
	if terminal(t.State) {
		reason := ""
		if t.Result.FailureReason != nil {
			reason = *t.Result.FailureReason
		}
		return backend.State{Phase: backend.Exited, Result: mapResult(t.State, reason, false, false, 0), Detail: "CF task " + t.State}, nil
	}
	return backend.State{Phase: backend.Running, Detail: "CF task " + t.State}, nil
}

// Attach implements backend.Backend: any process can follow a CF task.
func (b *Backend) Attach(ctx context.Context, ref backend.Ref, sink backend.LogSink) error {
	guid, _, _, err := parseRef(ref)
	if err != nil {
		return err
	}
	if f := b.lookup(guid); f != nil {
		if sink != nil {
			f.mu.Lock()
			f.sink = sink
			f.mu.Unlock()
		}
		return nil
	}
	t, err := b.getTask(ctx, guid)
	if err != nil {
		return fmt.Errorf("diego backend: read CF task %s: %w", guid, err)
	}
	if t == nil {
		return fmt.Errorf("%w: CF task %s no longer exists", backend.ErrGone, guid)
	}
	b.followTask(t, sink, 0)
	return nil
}

// AttachAt is Attach for a runner that already stored the task's output up to cursor
// (the last value its CursorSink got): lines up to there are not delivered again. It
// must come before anything else follows the task in this process; on a task this
// process already follows it only swaps the sink.
func (b *Backend) AttachAt(ctx context.Context, ref backend.Ref, sink backend.LogSink, cursor string) error {
	ts, n, err := parseCursor(cursor)
	if err != nil {
		return err
	}
	guid, _, _, err := parseRef(ref)
	if err != nil {
		return err
	}
	if f := b.lookup(guid); f != nil {
		return b.Attach(ctx, ref, sink)
	}
	t, err := b.getTask(ctx, guid)
	if err != nil {
		return fmt.Errorf("diego backend: read CF task %s: %w", guid, err)
	}
	if t == nil {
		return fmt.Errorf("%w: CF task %s no longer exists", backend.ErrGone, guid)
	}
	b.followTaskAt(t, sink, 0, ts, n)
	return nil
}

// cancelCF asks CC to cancel a task; a task that already ended or no longer exists is
// not an error.
func (b *Backend) cancelCF(ctx context.Context, guid string) error {
	return b.call(ctx, func(ctx context.Context) error {
		_, err := b.cf.Tasks.Cancel(ctx, guid)
		if err == nil || resource.IsResourceNotFoundError(err) {
			return nil
		}
		var cf resource.CloudFoundryError
		if errors.As(err, &cf) && cf.Code == 10008 { // already SUCCEEDED or FAILED
			return nil
		}
		return err
	})
}

// Cancel implements backend.Backend: CF cancels the task (Diego stops its container,
// SIGTERM first, SIGKILL after its grace) and it ends FAILED.
func (b *Backend) Cancel(ctx context.Context, ref backend.Ref) error {
	guid, _, _, err := parseRef(ref)
	if err != nil {
		return err
	}
	f := b.lookup(guid)
	if f != nil {
		f.mu.Lock()
		if !terminal(f.state) && !f.timedOut {
			f.cancelled = true
		}
		f.mu.Unlock()
	}
	if err := b.cancelCF(ctx, guid); err != nil {
		return fmt.Errorf("diego backend: cancel CF task %s: %w", guid, err)
	}
	if f != nil {
		select {
		case b.wake <- struct{}{}:
		default:
		}
		select {
		case <-f.ended:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		t, err := b.getTask(ctx, guid)
		if err != nil {
			return fmt.Errorf("diego backend: read CF task %s: %w", guid, err)
		}
		if t == nil || terminal(t.State) {
			return nil
		}
		tm := time.NewTimer(b.poll)
		select {
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		case <-tm.C:
		}
	}
}

// lcRead is Log Cache's Read. go-log-cache discovers its API path lazily on the first
// Read and caches it in an unguarded field, so Reads are serialised until one has
// succeeded (the path is known from then on) and concurrent after that.
func (b *Backend) lcRead(ctx context.Context, sourceID string, start time.Time, opts ...logcache.ReadOption) ([]*loggregator_v2.Envelope, error) {
	if !b.lcReady.Load() {
		b.lcInit.Lock()
		defer b.lcInit.Unlock()
		envs, err := b.lc.Read(ctx, sourceID, start, opts...)
		if err == nil {
			b.lcReady.Store(true)
		}
		return envs, err
	}
	return b.lc.Read(ctx, sourceID, start, opts...)
}
