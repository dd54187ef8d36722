package runner_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"github.com/ironcf/ironworker-release/src/backend/local"
)

// The crash test: a real iron-runner process (built with gexec) is killed with SIGKILL
// while it runs a task on the local backend.
var _ = Describe("a runner killed mid-task (kill -9)", func() {
	It("ends its task killed, retries it per policy, and a second runner keeps serving; nothing stays running", func() {
		e := newEnv(2 * time.Second)
		bin := runnerBin()

		dir := GinkgoT().TempDir()
		cfgPath := filepath.Join(dir, "iron-runner.yml")
		Expect(os.WriteFile(cfgPath, []byte(runnerConfig(e, "doomed", dir, "")), 0o600)).To(Succeed())

		// First run: record the pid, then sleep. A retry finds the marker and succeeds.
		e.uploadScript("crashy", `m="$(cat "$PAYLOAD_FILE")"
if [ -e "$m" ]; then echo "retry ran"; exit 0; fi
echo $$ > "$m"
echo "first run"
exec sleep 120`, map[string]any{"retries": 1, "retries_delay": 0})

		session, err := gexec.Start(newCmd(bin, "--config", cfgPath), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { session.Kill().Wait(10 * time.Second) })

		marker := filepath.Join(dir, "marker")
		id := e.queue(map[string]any{"code_name": "crashy", "payload": marker})[0]
		Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("running"))
		var pid int
		Eventually(func() error {
			raw, err := os.ReadFile(marker)
			if err != nil {
				return err
			}
			pid, err = strconv.Atoi(strings.TrimSpace(string(raw)))
			return err
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
		pgid := pgidOf(pid)
		DeferCleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
		Eventually(func() string { return e.log(id) }, 30*time.Second, 100*time.Millisecond).Should(ContainSubstring("first run"))

		// A second runner, in-process, serves the queue from now on. It runs on the same
		// machine as the first and, as runners of one job do, shares its work root.
		second, err := local.New(local.Config{WorkRoot: filepath.Join(dir, "work"), KillGrace: time.Second, MemoryLimiter: "none"})
		Expect(err).NotTo(HaveOccurred())
		e.startRunner(second, nil)

		session.Kill() // SIGKILL
		Eventually(session, 10*time.Second).Should(gexec.Exit())
		Eventually(e.status(id), 30*time.Second, 100*time.Millisecond).Should(Equal("killed"))
		Eventually(func() bool { return alive(pgid) }, 30*time.Second, 100*time.Millisecond).Should(BeFalse(),
			"the task's main process dies with its runner")
		// Only the main process gets Pdeathsig; what it spawned (here the worker script's
		// sleep, whose pid is in the marker) outlives the SIGKILLed runner until the
		// runner that takes the task over finds it Gone and Cancels the ref, which stops
		// every process carrying the task's TASK_DIR marker.
		Eventually(func() bool { return alive(pid) }, 30*time.Second, 100*time.Millisecond).Should(BeFalse(),
			"the worker's child (sleep) is stopped by the adopting runner's Cancel")
		Eventually(func() bool { return groupAlive(pgid) }, 30*time.Second, 100*time.Millisecond).Should(BeFalse(),
			"no process of the task's process group survives")
		Eventually(func() []int { return markedProcesses(filepath.Join(dir, "work")) }, 30*time.Second, 100*time.Millisecond).Should(BeEmpty(),
			"no process with the task's TASK_DIR marker survives")

		Eventually(e.status(id), 30*time.Second, 100*time.Millisecond).Should(Equal("killed"))
		t := e.task(id)
		Expect(t.RetryTaskID).NotTo(BeEmpty())
		Eventually(e.status(t.RetryTaskID), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		Expect(e.log(t.RetryTaskID)).To(ContainSubstring("retry ran"))

		// The second runner keeps serving new work.
		more := e.queue(map[string]any{"code_name": "crashy", "payload": marker}, map[string]any{"code_name": "crashy", "payload": marker})
		for _, m := range more {
			Eventually(e.status(m), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		}
		// None stays running.
		for _, tid := range append([]string{id, t.RetryTaskID}, more...) {
			Expect(e.task(tid).Status).NotTo(BeElementOf("running", "preparing", "queued"))
		}
		db, err := e.a.DB.SQL()
		Expect(err).NotTo(HaveOccurred())
		defer db.Close()
		var unfinished int
		Expect(db.QueryRow(`SELECT count(*) FROM tasks WHERE status IN ('queued', 'preparing', 'running')`).Scan(&unfinished)).To(Succeed())
		Expect(unfinished).To(BeZero())
	})
})

var (
	runnerBinOnce sync.Once
	runnerBinPath string
)

// runnerBin builds iron-runner once per suite.
func runnerBin() string {
	runnerBinOnce.Do(func() {
		var err error
		runnerBinPath, err = gexec.Build("github.com/ironcf/ironworker-release/src/cmd/iron-runner")
		Expect(err).NotTo(HaveOccurred())
	})
	return runnerBinPath
}

func runnerConfig(e *env, id, dir, extra string) string {
	return fmt.Sprintf(`
api_url: %s
credential: {name: %s, secret: %s}
runner_id: %s
slots: 2
lease_wait: 1s
heartbeat_interval: 300ms
listen_address: 127.0.0.1:0
backend:
  type: local
  local: {work_dir: %s, memory_limiter: none, kill_grace: 1s}
log_level: debug
`, e.a.Server.URL, e.a.RunnerName, e.a.RunnerSecret, id, filepath.Join(dir, "work")) + extra
}

var _ = Describe("the iron-runner binary", func() {
	It("drains on SIGTERM: stops leasing, lets a short task finish, ends a long one killed, exits 0", func() {
		e := newEnv(5 * time.Second)
		dir := GinkgoT().TempDir()
		cfgPath := filepath.Join(dir, "iron-runner.yml")
		Expect(os.WriteFile(cfgPath, []byte(runnerConfig(e, "draining", dir, "drain_timeout: 3s\n")), 0o600)).To(Succeed())
		e.uploadScript("sleeper", `echo "sleeping $(cat "$PAYLOAD_FILE")"; exec sleep "$(cat "$PAYLOAD_FILE")"`, nil)
		session, err := gexec.Start(newCmd(runnerBin(), "--config", cfgPath), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { session.Kill().Wait(10 * time.Second) })
		ids := e.queue(map[string]any{"code_name": "sleeper", "payload": "1"}, map[string]any{"code_name": "sleeper", "payload": "100"})
		for _, id := range ids {
			Eventually(e.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("running"))
		}
		session.Terminate()
		late := e.queue(map[string]any{"code_name": "sleeper", "payload": "1"})[0]
		Eventually(session, 60*time.Second).Should(gexec.Exit(0))
		Expect(e.task(ids[0]).Status).To(Equal("complete"))
		Expect(e.task(ids[1]).Status).To(Equal("killed"))
		Expect(e.task(ids[1]).Msg).To(Equal("The runner shut down before the task finished"))
		Expect(e.task(late).Status).To(Equal("queued"), "a draining runner leases nothing")
		Expect(string(session.Out.Contents())).To(ContainSubstring(`"msg":"drain timeout: handing tasks back"`))
	})

	It("refuses a bad config, naming the property", func() {
		dir := GinkgoT().TempDir()
		cfgPath := filepath.Join(dir, "iron-runner.yml")
		Expect(os.WriteFile(cfgPath, []byte("api_url: http://127.0.0.1:1\ncredential: {secret: short}\nbackend: {type: local}\n"), 0o600)).To(Succeed())
		session, err := gexec.Start(newCmd(runnerBin(), "--config", cfgPath), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		Eventually(session, 30*time.Second).Should(gexec.Exit(1))
		Expect(string(session.Err.Contents())).To(And(ContainSubstring("credential.secret"), ContainSubstring("backend.local.work_dir")))
	})
})

// markedProcesses lists live processes whose environment has a TASK_DIR under workRoot.
func markedProcesses(workRoot string) []int {
	prefix := []byte("\x00TASK_DIR=" + workRoot + "/")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + ent.Name() + "/environ")
		if err != nil || !bytes.Contains(append([]byte{0}, env...), prefix) || !alive(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}
