package runner_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ironcf/ironworker-release/src/backend"
)

// cluster is a fake place where tasks run away from runners, like CF tasks on Diego:
// several backend instances (one per runner) see the same tasks, which outlive them.
type cluster struct {
	mu     sync.Mutex
	tasks  map[backend.Ref]*fakeTask
	starts int
}

type fakeTask struct {
	ref    backend.Ref
	sink   backend.LogSink
	done   chan struct{}
	result backend.Result
	ended  bool
}

func newCluster() *cluster { return &cluster{tasks: map[backend.Ref]*fakeTask{}} }

// fakeBackend runs a task for as many seconds as its payload says, printing "tick N"
// each 100ms to whoever follows it, then exits 0.
type fakeBackend struct{ c *cluster }

func (c *cluster) backend() *fakeBackend { return &fakeBackend{c: c} }

func (b *fakeBackend) Name() string { return "fake" }

func (b *fakeBackend) Start(_ context.Context, spec backend.Spec, sink backend.LogSink) (backend.Ref, error) {
	var secs float64
	fmt.Sscan(spec.Payload, &secs)
	b.c.mu.Lock()
	b.c.starts++
	ref := backend.Ref(fmt.Sprintf("fake:%s:%d", spec.TaskID, b.c.starts))
	t := &fakeTask{ref: ref, sink: sink, done: make(chan struct{})}
	b.c.tasks[ref] = t
	b.c.mu.Unlock()
	go func() {
		end := time.Now().Add(time.Duration(secs * float64(time.Second)))
		for i := 0; time.Now().Before(end); i++ {
			b.c.mu.Lock()
			if t.ended {
				b.c.mu.Unlock()
				return
			}
			if t.sink != nil {
				t.sink.WriteLog(backend.Stdout, fmt.Appendf(nil, "tick %d\n", i))
			}
			b.c.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
		b.c.end(t, backend.Result{})
	}()
	return ref, nil
}

func (c *cluster) end(t *fakeTask, res backend.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.ended {
		return
	}
	t.ended, t.result = true, res
	close(t.done)
}

func (c *cluster) get(ref backend.Ref) (*fakeTask, error) {
	if !strings.HasPrefix(string(ref), "fake:") {
		return nil, fmt.Errorf("not a fake ref: %q", ref)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.tasks[ref]
	if !ok {
		return nil, backend.ErrGone
	}
	return t, nil
}

func (b *fakeBackend) Wait(ctx context.Context, ref backend.Ref) (backend.Result, error) {
	t, err := b.c.get(ref)
	if err != nil {
		return backend.Result{}, err
	}
	select {
	case <-t.done:
		return t.result, nil
	case <-ctx.Done():
		return backend.Result{}, ctx.Err()
	}
}

func (b *fakeBackend) Status(_ context.Context, ref backend.Ref) (backend.State, error) {
	t, err := b.c.get(ref)
	if err == backend.ErrGone {
		return backend.State{Phase: backend.Gone, Detail: "unknown"}, nil
	}
	if err != nil {
		return backend.State{}, err
	}
	select {
	case <-t.done:
		return backend.State{Phase: backend.Exited, Result: t.result}, nil
	default:
		return backend.State{Phase: backend.Running, Detail: "still running"}, nil
	}
}

func (b *fakeBackend) Attach(_ context.Context, ref backend.Ref, sink backend.LogSink) error {
	t, err := b.c.get(ref)
	if err != nil {
		return err
	}
	b.c.mu.Lock()
	t.sink = sink
	b.c.mu.Unlock()
	return nil
}

func (b *fakeBackend) Cancel(_ context.Context, ref backend.Ref) error {
	t, err := b.c.get(ref)
	if err == backend.ErrGone {
		return nil
	}
	if err != nil {
		return err
	}
	b.c.end(t, backend.Result{ExitCode: 137, Signal: "SIGKILL", Cancelled: true})
	return nil
}

func (c *cluster) startCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.starts
}
