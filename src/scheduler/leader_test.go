package scheduler_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/scheduler"
	"github.com/ironcf/ironworker-release/src/store"
)

var _ = Describe("Leadership and Run", Ordered, func() {
	var (
		e   *env
		ctx = context.Background()
	)
	BeforeAll(func() { e = newEnv() })

	It("lets one session lead at a time, and loses leadership with the connection", func() {
		l1, ok, err := e.Store.AcquireSchedulerLeadership(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeTrue())
		DeferCleanup(l1.Release)
		Expect(l1.Check(ctx)).To(Succeed())

		_, ok, err = e.Store2.AcquireSchedulerLeadership(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeFalse())

		pid := e.leaderPID()
		Expect(pid).NotTo(BeZero())
		e.terminate(pid)
		Eventually(func() error { return l1.Check(ctx) }).Should(HaveOccurred())
		l1.Release()

		var l2 *store.Leadership
		Eventually(func() bool {
			l, ok, err := e.Store2.AcquireSchedulerLeadership(ctx)
			Expect(err).NotTo(HaveOccurred())
			l2 = l
			return ok
		}).Should(BeTrue())
		Expect(l2.Check(ctx)).To(Succeed())
		Expect(e.leaderPID()).NotTo(Equal(pid))

		// Release frees the lock at once (the session is closed, not pooled).
		l2.Release()
		l3, ok, err := e.Store.AcquireSchedulerLeadership(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeTrue())
		l3.Release()
	})

	It("fires due schedules as leader, re-acquires leadership after its connection dies, and stops with ctx", func() {
		pid := e.newProject()
		runCtx, cancel := context.WithCancel(ctx)
		DeferCleanup(cancel)
		done := make(chan error, 1)
		cfg := config.Scheduler{Interval: config.Duration(20 * time.Millisecond), BatchSize: 10}
		go func() { done <- scheduler.Run(runCtx, e.Store, cfg, testLogger()) }()

		now := time.Now().UTC()
		first := e.create(pid, now, store.NewSchedule{CodeName: "hello", StartAt: now.Add(-time.Second), RunEvery: 60, Timeout: 60})[0]
		Eventually(func() int { return len(e.taskInstants(first)) }, 5*time.Second, 20*time.Millisecond).Should(Equal(1))

		leader := e.leaderPID()
		Expect(leader).NotTo(BeZero())
		e.terminate(leader)
		Eventually(func() int { return e.leaderPID() }, 5*time.Second, 20*time.Millisecond).Should(And(Not(BeZero()), Not(Equal(leader))))

		now = time.Now().UTC()
		second := e.create(pid, now, store.NewSchedule{CodeName: "hello", StartAt: now.Add(200 * time.Millisecond), RunEvery: 60, Timeout: 60})[0]
		Eventually(func() int { return len(e.taskInstants(second)) }, 5*time.Second, 20*time.Millisecond).Should(Equal(1))
		Consistently(func() int { return len(e.taskInstants(first)) + len(e.taskInstants(second)) }, 300*time.Millisecond).Should(Equal(2))

		cancel()
		Eventually(done, 5*time.Second).Should(Receive(BeNil()))
		Eventually(func() int { return e.leaderPID() }, 5*time.Second).Should(BeZero())
	})
})
