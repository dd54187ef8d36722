package runner_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lib/pq"

	"github.com/ironcf/ironworker-release/src/runner"
)

// These run the real thing: iron-api on PostgreSQL (scripts/test), the runner and the
// local backend running shell scripts as processes.
var _ = Describe("tasks run end to end (API, runner, local backend)", func() {
	var e *env

	BeforeEach(func() {
		e = newEnv(5 * time.Second)
	})

	It("runs a task: its log and complete status are read back through the API", func() {
		e.uploadScript("hello", `echo "hello from $TASK_ID"; echo "payload: $(cat "$PAYLOAD_FILE")"; echo "to stderr" >&2`, nil)
		e.startRunner(newLocal(), nil)
		id := e.queue(map[string]any{"code_name": "hello", "payload": `{"name":"dev"}`})[0]
		Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		t := e.task(id)
		Expect(t.Msg).To(BeEmpty())
		Expect(t.start()).NotTo(BeZero())
		Expect(t.end()).NotTo(BeZero())
		log := e.log(id)
		Expect(log).To(ContainSubstring("hello from " + id))
		Expect(log).To(ContainSubstring(`payload: {"name":"dev"}`))
		Expect(log).To(ContainSubstring("to stderr"))
	})

	It("streams the log while the task runs and keeps the tail", func() {
		e.uploadScript("chatty", `echo first; sleep 3; i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; echo last-line`, nil)
		e.startRunner(newLocal(), nil)
		id := e.queue(map[string]any{"code_name": "chatty"})[0]
		Eventually(func() string { return e.log(id) }, 30*time.Second, 100*time.Millisecond).Should(ContainSubstring("first"))
		Expect(e.task(id).Status).To(Equal("running"))
		Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		log := e.log(id)
		Expect(log).To(HaveSuffix("last-line\n"))
		Expect(strings.Index(log, "line 1999")).To(BeNumerically(">", strings.Index(log, "line 0\n")))
	})

	It("ends a failing worker `error` with its last stderr line as msg", func() {
		e.uploadScript("failing", `echo some output; echo "first problem" >&2; echo "the real reason" >&2; exit 3`, nil)
		e.startRunner(newLocal(), nil)
		id := e.queue(map[string]any{"code_name": "failing"})[0]
		Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("error"))
		Expect(e.task(id).Msg).To(Equal("the real reason"))
		Expect(e.log(id)).To(ContainSubstring("some output"))
	})

	It("ends a task that runs too long `timeout`", func() {
		e.uploadScript("slow", `echo starting; exec sleep 120`, nil)
		e.startRunner(newLocal(), nil)
		id := e.queue(map[string]any{"code_name": "slow", "timeout": 2})[0]
		Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("timeout"))
		t := e.task(id)
		Expect(t.end().Sub(t.start())).To(BeNumerically(">=", 1500*time.Millisecond))
		Expect(t.end().Sub(t.start())).To(BeNumerically("<", 30*time.Second))
	})

	It("stops a task cancelled while it runs: `cancelled`, and the process is gone", func() {
		dir := GinkgoT().TempDir()
		e.uploadScript("cancelme", `echo $$ > "$(cat "$PAYLOAD_FILE")"; exec sleep 120`, nil)
		r := e.startRunner(newLocal(), nil)
		pidFile := filepath.Join(dir, "pid")
		id := e.queue(map[string]any{"code_name": "cancelme", "payload": pidFile})[0]
		var pid int
		Eventually(func() error {
			raw, err := os.ReadFile(pidFile)
			if err != nil {
				return err
			}
			pid, err = strconv.Atoi(strings.TrimSpace(string(raw)))
			return err
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		Eventually(e.status(id), 30*time.Second, 100*time.Millisecond).Should(Equal("running"))
		Expect(alive(pid)).To(BeTrue())
		pgid := pgidOf(pid)
		e.post("/tasks/" + id + "/cancel")
		Expect(e.task(id).Status).To(Equal("cancelled"))
		Eventually(func() bool { return groupAlive(pgid) }, 30*time.Second, 100*time.Millisecond).Should(BeFalse())
		Eventually(r.Busy, 30*time.Second, 100*time.Millisecond).Should(BeZero())
		Expect(e.task(id).Status).To(Equal("cancelled"))
	})

	It("retries a failed task by its code's policy: linked retry tasks, run after the delay", func() {
		e.uploadScript("flaky", `echo "attempt failed" >&2; exit 1`, map[string]any{"retries": 2, "retries_delay": 2})
		e.startRunner(newLocal(), nil)
		first := e.queue(map[string]any{"code_name": "flaky"})[0]
		Eventually(e.status(first), 60*time.Second, 100*time.Millisecond).Should(Equal("error"))
		t1 := e.task(first)
		Expect(t1.RetryTaskID).NotTo(BeEmpty())
		Eventually(e.status(t1.RetryTaskID), 60*time.Second, 100*time.Millisecond).Should(Equal("error"))
		t2 := e.task(t1.RetryTaskID)
		Expect(t2.OriginalTaskID).To(Equal(first))
		Expect(t2.RetryCount).To(Equal(1))
		Expect(t2.start().Sub(t1.end())).To(BeNumerically(">=", 1900*time.Millisecond), "the retry waits retries_delay")
		Expect(t2.RetryTaskID).NotTo(BeEmpty())
		Eventually(e.status(t2.RetryTaskID), 60*time.Second, 100*time.Millisecond).Should(Equal("error"))
		t3 := e.task(t2.RetryTaskID)
		Expect(t3.RetryCount).To(Equal(2))
		Expect(t3.start().Sub(t2.end())).To(BeNumerically(">=", 1900*time.Millisecond))
		Consistently(func() string { return e.task(t3.ID).RetryTaskID }, 2*time.Second, 200*time.Millisecond).Should(BeEmpty(),
			"retries: 2 means two retries, no more")
	})

	It("never runs more than max_concurrency tasks of a code at once", func() {
		e.uploadScript("capped", `sleep 1`, map[string]any{"max_concurrency": 2})
		// Two runners with room for far more than two tasks.
		e.startRunner(newLocal(), func(o *runner.Options) { o.Slots = 4; o.RunnerID = "one" })
		e.startRunner(newLocal(), func(o *runner.Options) { o.Slots = 4; o.RunnerID = "two" })
		var tasks []map[string]any
		for range 12 {
			tasks = append(tasks, map[string]any{"code_name": "capped"})
		}
		ids := e.queue(tasks...)
		// Counted in one statement: task by task (one GET each), a task read as running
		// just before it ended and one leased after it would both count.
		db, err := e.a.DB.SQL()
		Expect(err).NotTo(HaveOccurred())
		defer db.Close()
		var (
			mu      sync.Mutex
			maxSeen int
		)
		Eventually(func() bool {
			var running, done int
			Expect(db.QueryRow(`SELECT count(*) FILTER (WHERE status IN ('preparing', 'running')),
				count(*) FILTER (WHERE status = 'complete') FROM tasks WHERE id = ANY($1)`, pq.Array(ids)).Scan(&running, &done)).To(Succeed())
			mu.Lock()
			maxSeen = max(maxSeen, running)
			mu.Unlock()
			return done == len(ids)
		}, 120*time.Second, 50*time.Millisecond).Should(BeTrue())
		Expect(maxSeen).To(BeNumerically("<=", 2))
		Expect(maxSeen).To(BeNumerically(">=", 1))
		// And from the tasks' own times: never more than two overlap.
		var views []taskView
		for _, id := range ids {
			views = append(views, e.task(id))
		}
		for _, v := range views {
			overlapping := 0
			for _, w := range views {
				if !w.start().After(v.start()) && w.end().After(v.start()) {
					overlapping++
				}
			}
			Expect(overlapping).To(BeNumerically("<=", 2), "tasks running at %s", v.start())
		}
	})

	It("keeps a paused code's tasks queued and runs them after resume", func() {
		codeID := e.uploadScript("pausable", `echo ran`, nil)
		e.post("/codes/" + codeID + "/pause_task_queue")
		e.startRunner(newLocal(), nil)
		id := e.queue(map[string]any{"code_name": "pausable"})[0]
		Consistently(e.status(id), 4*time.Second, 200*time.Millisecond).Should(Equal("queued"))
		e.post("/codes/" + codeID + "/resume_task_queue")
		Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		Expect(e.log(id)).To(ContainSubstring("ran"))
	})

	It("runs priority 2 before priority 0 when both wait", func() {
		e.uploadScript("prio", `sleep 0.2`, nil)
		low := e.queue(map[string]any{"code_name": "prio", "priority": 0})[0]
		high := e.queue(map[string]any{"code_name": "prio", "priority": 2})[0]
		e.startRunner(newLocal(), func(o *runner.Options) { o.Slots = 1 })
		Eventually(e.status(low), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		Expect(e.task(high).Status).To(Equal("complete"))
		Expect(e.task(high).start()).To(BeTemporally("<", e.task(low).start()))
	})

	It("does not start a delayed task early", func() {
		e.uploadScript("later", `echo late`, nil)
		e.startRunner(newLocal(), nil)
		id := e.queue(map[string]any{"code_name": "later", "delay": 3})[0]
		queuedAt := time.Now()
		created, err := time.Parse(time.RFC3339Nano, e.task(id).CreatedAt)
		Expect(err).NotTo(HaveOccurred())
		Consistently(e.status(id), 2*time.Second, 200*time.Millisecond).Should(Equal("queued"))
		Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		Expect(e.task(id).start().Sub(created)).To(BeNumerically(">=", 3*time.Second-100*time.Millisecond))
		Expect(time.Since(queuedAt)).To(BeNumerically(">=", 2900*time.Millisecond))
	})

	It("ends a task whose code the local backend cannot run `error` with the reason", func() {
		body, ct := imageCodeForm("imageonly", "iron/hello")
		r := e.a.DoAs(e.a.Token, "POST", e.a.Project()+"/codes", body, map[string][]string{"Content-Type": {ct}})
		Expect(r.Status).To(Equal(200), string(r.Body))
		e.startRunner(newLocal(), nil)
		id := e.queue(map[string]any{"code_name": "imageonly"})[0]
		Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("error"))
		Expect(e.task(id).Msg).To(ContainSubstring("Docker image"))
	})

	It("drains on stop: a short task finishes, a long one is stopped and ends killed", func() {
		e.uploadScript("drainy", `echo "$(cat "$PAYLOAD_FILE")"; exec sleep "$(cat "$PAYLOAD_FILE")"`, nil)
		be := newLocal()
		cl := e.runnerClient()
		r, err := runner.New(runner.Options{Client: cl, Backend: be, Slots: 2, LeaseWait: time.Second,
			HeartbeatInterval: 300 * time.Millisecond, DrainTimeout: 4 * time.Second, LogFlushInterval: 100 * time.Millisecond,
			Logger: testLogger()})
		Expect(err).NotTo(HaveOccurred())
		ids := e.queue(map[string]any{"code_name": "drainy", "payload": "2"}, map[string]any{"code_name": "drainy", "payload": "100"})
		ctx, cancel := contextWithCancel()
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		for _, id := range ids {
			Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("running"))
		}
		stopped := time.Now()
		cancel()
		Eventually(done, 60*time.Second).Should(Receive(BeNil()))
		Expect(time.Since(stopped)).To(BeNumerically(">=", 3*time.Second))
		Expect(e.task(ids[0]).Status).To(Equal("complete"))
		Expect(e.task(ids[1]).Status).To(Equal("killed"))
		Expect(e.task(ids[1]).Msg).To(ContainSubstring("shut down"))
		Expect(r.Health().Status).To(Equal("draining"))
	})
})
