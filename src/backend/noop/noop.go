// Package noop is a backend whose tasks complete the moment they start, without running
// anything: for benchmarking the queue, leases and the runner protocol without process
// or Cloud Foundry costs.
package noop

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ironcf/ironworker-release/src/backend"
)

// Backend completes every task successfully and instantly.
type Backend struct {
	seq  atomic.Uint64
	mu   sync.Mutex
	done map[backend.Ref]backend.Result
}

var _ backend.Backend = (*Backend)(nil)

func New() *Backend { return &Backend{done: map[backend.Ref]backend.Result{}} }

func (b *Backend) Name() string { return "noop" }

// Start records a successful result; the code is not even fetched.
func (b *Backend) Start(_ context.Context, spec backend.Spec, _ backend.LogSink) (backend.Ref, error) {
	ref := backend.Ref(fmt.Sprintf("noop:%s:%d", spec.TaskID, b.seq.Add(1)))
	b.mu.Lock()
	b.done[ref] = backend.Result{}
	b.mu.Unlock()
	return ref, nil
}

func (b *Backend) Wait(_ context.Context, ref backend.Ref) (backend.Result, error) {
	if err := check(ref); err != nil {
		return backend.Result{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	res, ok := b.done[ref]
	if !ok {
		return backend.Result{}, backend.ErrGone
	}
	delete(b.done, ref)
	return res, nil
}

func (b *Backend) Status(_ context.Context, ref backend.Ref) (backend.State, error) {
	if err := check(ref); err != nil {
		return backend.State{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if res, ok := b.done[ref]; ok {
		return backend.State{Phase: backend.Exited, Result: res, Detail: "completed"}, nil
	}
	return backend.State{Phase: backend.Gone, Detail: "unknown to this process"}, nil
}

func (b *Backend) Attach(_ context.Context, ref backend.Ref, _ backend.LogSink) error {
	if err := check(ref); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.done[ref]; !ok {
		return backend.ErrGone
	}
	return nil
}

// Cancel has nothing to stop: every task has already completed.
func (b *Backend) Cancel(_ context.Context, ref backend.Ref) error { return check(ref) }

func check(ref backend.Ref) error {
	if !strings.HasPrefix(string(ref), "noop:") {
		return fmt.Errorf("noop backend: %q is not a noop task reference", ref)
	}
	return nil
}
