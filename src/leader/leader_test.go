package leader_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/leader"
)

func TestLeader(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Leader suite")
}

// fakeLock is a leadership that is lost when lost is set.
type fakeLock struct {
	lost     atomic.Bool
	released atomic.Bool
}

func (l *fakeLock) Check(context.Context) error {
	if l.lost.Load() {
		return errors.New("connection gone")
	}
	return nil
}

func (l *fakeLock) Release() { l.released.Store(true) }

var _ = Describe("Run", func() {
	It("works only while leading, leads again after losing leadership, and releases it when ctx ends", func() {
		var (
			mu       sync.Mutex
			locks    []*fakeLock
			refuse   atomic.Bool // another instance leads
			failOnce atomic.Bool // the database cannot be reached once
			works    atomic.Int32
		)
		refuse.Store(true)
		failOnce.Store(true)
		acquire := func(context.Context) (*fakeLock, bool, error) {
			if failOnce.CompareAndSwap(true, false) {
				return nil, false, errors.New("no database")
			}
			if refuse.Load() {
				return nil, false, nil
			}
			mu.Lock()
			defer mu.Unlock()
			l := &fakeLock{}
			locks = append(locks, l)
			return l, true, nil
		}
		current := func() *fakeLock {
			mu.Lock()
			defer mu.Unlock()
			if len(locks) == 0 {
				return nil
			}
			return locks[len(locks)-1]
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- leader.Run(ctx, leader.Config{Name: "test", Interval: 5 * time.Millisecond, WorkFailed: "work failed",
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, acquire,
				func(context.Context) error { works.Add(1); return errors.New("work fails, the loop goes on") })
		}()

		Consistently(works.Load, 50*time.Millisecond).Should(BeZero(), "not the leader")
		refuse.Store(false)
		Eventually(works.Load).Should(BeNumerically(">", 2))
		first := current()

		first.lost.Store(true)
		Eventually(func() bool { return current() != first }).Should(BeTrue(), "leads again on a new lock")
		Expect(first.released.Load()).To(BeTrue(), "the lost lock is released")
		before := works.Load()
		Eventually(works.Load).Should(BeNumerically(">", before))

		cancel()
		Eventually(done).Should(Receive(BeNil()))
		Expect(current().released.Load()).To(BeTrue())
	})
})
