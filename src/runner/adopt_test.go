package runner_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/runner"
)

// A backend whose tasks outlive their runner (like diego), faked: a draining runner
// leaves the task running, the lease expires, and another runner adopts it.
var _ = Describe("adoption with a backend whose tasks outlive the runner", func() {
	It("hands a running task over on drain; the next runner adopts it and completes it without starting it again", func() {
		e := newEnv(2 * time.Second)
		e.uploadScript("longrun", `true`, nil)
		cl := newCluster()

		a, err := runner.New(runner.Options{Client: e.runnerClient(), Backend: cl.backend(), RunnerID: "first",
			LeaseWait: time.Second, HeartbeatInterval: 300 * time.Millisecond, DrainTimeout: -1,
			LogFlushInterval: 100 * time.Millisecond, Logger: testLogger()})
		Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()

		id := e.queue(map[string]any{"code_name": "longrun", "payload": "6"})[0]
		Eventually(e.status(id), 30*time.Second, 100*time.Millisecond).Should(Equal("running"))
		Eventually(func() string { return e.log(id) }, 30*time.Second, 100*time.Millisecond).Should(ContainSubstring("tick 1\n"))
		startedAt := e.task(id).start()

		cancel() // drain with no time to wait: hand the task over
		Eventually(done, 30*time.Second).Should(Receive(BeNil()))
		Expect(e.task(id).Status).To(BeElementOf("running", "queued"), "the task is not ended by a hand-over")

		e.startRunner(cl.backend(), func(o *runner.Options) { o.RunnerID = "second" })
		Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		Expect(cl.startCount()).To(Equal(1), "adopted, not started again")
		t := e.task(id)
		Expect(t.start()).To(BeTemporally("~", startedAt, time.Second), "start_time is kept")
		Expect(t.end().Sub(t.start())).To(BeNumerically(">=", 5*time.Second))
		Expect(e.log(id)).To(MatchRegexp(`tick [3-5]\d\n`), "output after the adoption reaches the log")
	})
})
