package runner_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"

	"github.com/ironcf/ironworker-release/src/backend/local"
	"github.com/ironcf/ironworker-release/src/runner"
)

// Crash safety (issue 9, item 1, runner bullet): a real iron-runner process is started
// and killed with SIGKILL at a random point, at least 20 times, while a second,
// long-lived runner keeps serving the same queue. Afterwards no task is lost, none is
// left queued or running, and every outcome is one the lifecycle in DESIGN.md allows.

const crashLoopKills = 20

// crashLoopRetries is the code's retries policy in the loops: high enough that a chain
// of kills always ends in a retry that completes.
const crashLoopRetries = 10

// killLoop runs crashLoopKills iterations: start the doomed runner from cfgPath, queue a
// few short tasks once it polls, let it work for a random while, SIGKILL it. It returns
// the ids of every task queued and how many kills hit the doomed runner with a task in
// hand (leased and not yet ended).
func killLoop(e *env, cfgPath string, queueOne func() map[string]any) (ids []string, hits int) {
	GinkgoHelper()
	for i := range crashLoopKills {
		session, err := gexec.Start(newCmd(runnerBin(), "--config", cfgPath), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { session.Kill().Wait(10 * time.Second) })
		Eventually(session.Out, 30*time.Second, 10*time.Millisecond).Should(gbytes.Say(`"msg":"runner started"`), "iteration %d", i)
		var batch []map[string]any
		for range 4 {
			batch = append(batch, queueOne())
		}
		ids = append(ids, e.queue(batch...)...)
		// A random point: before, during or after its tasks.
		time.Sleep(time.Duration(rand.IntN(700)) * time.Millisecond)
		session.Kill() // SIGKILL
		Eventually(session, 10*time.Second).Should(gexec.Exit())
		out := string(session.Out.Contents())
		if strings.Count(out, `"msg":"starting task"`) > strings.Count(out, `"msg":"task ended"`) {
			hits++
		}
	}
	return ids, hits
}

// randomSleep is a payload for the workers below: sleep 0-500 ms.
func randomSleep() string { return fmt.Sprintf("0.%03d", rand.IntN(500)) }

// expectChainsComplete follows each original task through its retries: every link but the last must
// be killed and point to its retry, the last must be complete.
func (e *env) expectChainsComplete(ids []string, maxRetries int) (killed int) {
	GinkgoHelper()
	for _, id := range ids {
		t := e.task(id)
		Expect(t.OriginalTaskID).To(BeEmpty())
		chain := []string{t.ID + ":" + t.Status}
		for hop := 0; t.Status == "killed"; hop++ {
			Expect(hop).To(BeNumerically("<", maxRetries), "more retries than the policy allows: %v", chain)
			Expect(t.RetryTaskID).NotTo(BeEmpty(), "a killed task with retries left was not retried: %v", chain)
			next := e.task(t.RetryTaskID)
			Expect(next.OriginalTaskID).NotTo(BeEmpty())
			Expect(next.RetryCount).To(Equal(t.RetryCount+1), "%v", chain)
			t = next
			chain = append(chain, t.ID+":"+t.Status)
			killed++
		}
		Expect(t.Status).To(Equal("complete"), "chain %v", chain)
		Expect(t.RetryTaskID).To(BeEmpty())
	}
	return killed
}

func (e *env) unfinished() int {
	GinkgoHelper()
	db, err := e.a.DB.SQL()
	Expect(err).NotTo(HaveOccurred())
	defer db.Close()
	var n int
	Expect(db.QueryRow(`SELECT count(*) FROM tasks WHERE status IN ('queued', 'preparing', 'running')`).Scan(&n)).To(Succeed())
	return n
}

func (e *env) totalTasks() int {
	GinkgoHelper()
	db, err := e.a.DB.SQL()
	Expect(err).NotTo(HaveOccurred())
	defer db.Close()
	var n int
	Expect(db.QueryRow(`SELECT count(*) FROM tasks`).Scan(&n)).To(Succeed())
	return n
}

var _ = Describe("runner kill loop (kill -9 at random points, 20 times)", func() {
	It("local backend: every task ends complete, directly or through killed-and-retried links; none lost or stuck", func() {
		e := newEnv(2 * time.Second)
		dir := GinkgoT().TempDir()
		cfgPath := filepath.Join(dir, "iron-runner.yml")
		Expect(os.WriteFile(cfgPath, []byte(runnerConfig(e, "doomed-loop", dir, "")), 0o600)).To(Succeed())
		e.uploadScript("shorty", `echo "start $TASK_ID"; sleep "$(cat "$PAYLOAD_FILE")"; echo "done $TASK_ID"`,
			map[string]any{"retries": crashLoopRetries, "retries_delay": 0})

		second, err := local.New(local.Config{WorkRoot: filepath.Join(dir, "work"), KillGrace: time.Second, MemoryLimiter: "none"})
		Expect(err).NotTo(HaveOccurred())
		e.startRunner(second, func(o *runner.Options) { o.Slots = 1 })
		warm := e.queue(map[string]any{"code_name": "shorty", "payload": "0"})[0]
		Eventually(e.status(warm), 30*time.Second, 100*time.Millisecond).Should(Equal("complete"))

		start := time.Now()
		ids, hits := killLoop(e, cfgPath, func() map[string]any {
			return map[string]any{"code_name": "shorty", "payload": randomSleep()}
		})
		Expect(hits).To(BeNumerically(">=", crashLoopKills/4), "too few kills hit a runner holding tasks")
		Eventually(e.unfinished, 60*time.Second, 200*time.Millisecond).Should(BeZero(), "tasks left queued or running")
		killed := e.expectChainsComplete(ids, crashLoopRetries)
		// Nothing but the warm-up, the originals and their retries exists.
		Expect(e.totalTasks()).To(Equal(1 + len(ids) + killed))
		Eventually(func() []int { return markedProcesses(filepath.Join(dir, "work")) }, 30*time.Second, 100*time.Millisecond).Should(BeEmpty(),
			"no task process outlives the loop")
		AddReportEntry("local kill loop", fmt.Sprintf("%d kills (%d with tasks in hand), %d tasks, %d killed and retried, %s",
			crashLoopKills, hits, len(ids), killed, time.Since(start).Round(time.Millisecond)))
	})

	It("diego backend: every task completes, with exactly one CF task each", func() {
		d := newDiegoEnv(2 * time.Second)
		d.uploadZip("zipworker", "")
		dir := GinkgoT().TempDir()
		cfgPath := filepath.Join(dir, "iron-runner.yml")
		Expect(os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
api_url: %s
credential: {name: %s, secret: %s}
runner_id: doomed-diego-loop
slots: 2
lease_wait: 1s
heartbeat_interval: 300ms
backend:
  type: diego
  diego:
    api_url: %s
    client_id: %s
    client_secret: %s
    org: ironworker
    space: tasks
    buildpacks: [binary_buildpack]
    poll_interval: 100ms
    request_timeout: 5s
log_level: debug
`, d.a.Server.URL, d.a.RunnerName, d.a.RunnerSecret, d.fake.URL, d.fake.ClientID(), d.fake.ClientSecret())), 0o600)).To(Succeed())

		d.startRunner(d.newBackend(), func(o *runner.Options) { o.Slots = 1 })
		// Staged once before the loop, so the kills hit tasks, not staging.
		warm := d.queue(map[string]any{"code_name": "zipworker", "payload": "warm"})[0]
		Eventually(d.status(warm), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))

		start := time.Now()
		ids, hits := killLoop(d.env, cfgPath, func() map[string]any {
			return map[string]any{"code_name": "zipworker", "payload": "sleep " + randomSleep()}
		})
		Expect(hits).To(BeNumerically(">=", crashLoopKills/4), "too few kills hit a runner holding tasks")
		Eventually(d.unfinished, 60*time.Second, 200*time.Millisecond).Should(BeZero(), "tasks left queued or running")
		for _, id := range ids {
			t := d.task(id)
			Expect(t.Status).To(Equal("complete"), "task %s: %s", id, t.Msg)
			Expect(t.RetryTaskID).To(BeEmpty())
			Expect(d.cfTasks(id)).To(ConsistOf(HaveField("State", "SUCCEEDED")), "exactly one CF task for %s", id)
		}
		Expect(d.totalTasks()).To(Equal(1+len(ids)), "no retries: nothing was killed")
		Expect(d.fake.Tasks()).To(HaveLen(1+len(ids)), "no CF task beyond one per IronWorker task")
		AddReportEntry("diego kill loop", fmt.Sprintf("%d kills (%d with tasks in hand), %d tasks, %s",
			crashLoopKills, hits, len(ids), time.Since(start).Round(time.Millisecond)))
	})
})
