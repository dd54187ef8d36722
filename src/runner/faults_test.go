package runner_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
	"github.com/ironcf/ironworker-release/src/runner"
)

// Dependency faults (issue 9, item 2) as a runner sees them.

// tryQueue queues tasks, or says why not (the API answers 503 while PostgreSQL is away).
func (e *env) tryQueue(tasks ...map[string]any) ([]string, error) {
	resp := e.a.Do(http.MethodPost, e.a.Project()+"/tasks", map[string]any{"tasks": tasks})
	if resp.Status != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.Status, resp.Body)
	}
	var out struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		return nil, err
	}
	ids := make([]string, len(out.Tasks))
	for i, t := range out.Tasks {
		ids[i] = t.ID
	}
	return ids, nil
}

var _ = Describe("dependency faults", func() {
	It("PostgreSQL restarted while an iron-runner serves: the runner recovers by itself within 10s, queued tasks complete", func() {
		// A cluster of its own (scripts/lib/pg.sh), so that stopping it disturbs no other suite.
		pgLib, err := filepath.Abs("../../scripts/lib/pg.sh")
		Expect(err).NotTo(HaveOccurred())
		dir, err := os.MkdirTemp("/tmp", "iron-runner-pgrestart-")
		Expect(err).NotTo(HaveOccurred())
		Expect(os.Chmod(dir, 0o755)).To(Succeed())
		data := filepath.Join(dir, "data")
		pgPort := freeTCPPort()
		pg := func(fn string) {
			cmd := exec.Command("bash", "-c", fmt.Sprintf(`source %q && PG_FSYNC=off %s %q %d`, pgLib, fn, data, pgPort))
			cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
			ExpectWithOffset(1, cmd.Run()).To(Succeed(), fn)
		}
		pg("pg_start")
		DeferCleanup(func() {
			pg("pg_stop")
			os.RemoveAll(dir)
		})
		GinkgoT().Setenv(testsupport.EnvDatabaseURL, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pgPort))
		// A lease outlives the outage: heartbeats that fail for a few seconds lose nothing.
		e := newEnv(10 * time.Second)
		e.uploadScript("pgw", `echo "start $TASK_ID"; sleep "$(cat "$PAYLOAD_FILE")"; echo "done $TASK_ID"`,
			map[string]any{"retries": 3, "retries_delay": 0})
		wdir := GinkgoT().TempDir()
		cfgPath := filepath.Join(wdir, "iron-runner.yml")
		Expect(os.WriteFile(cfgPath, []byte(runnerConfig(e, "pg-runner", wdir, "")), 0o600)).To(Succeed())
		session, err := gexec.Start(newCmd(runnerBin(), "--config", cfgPath), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { session.Kill().Wait(10 * time.Second) })

		first := e.queue(map[string]any{"code_name": "pgw", "payload": "0.1"})
		Eventually(e.status(first[0]), 30*time.Second, 100*time.Millisecond).Should(Equal("complete"))

		// Two tasks run across the outage (the runner has two slots); two wait queued.
		running := e.queue(map[string]any{"code_name": "pgw", "payload": "4"}, map[string]any{"code_name": "pgw", "payload": "4"})
		for _, id := range running {
			Eventually(e.status(id), 30*time.Second, 100*time.Millisecond).Should(Equal("running"))
		}
		waiting := e.queue(map[string]any{"code_name": "pgw", "payload": "0.2"}, map[string]any{"code_name": "pgw", "payload": "0.2"})

		By("stopping PostgreSQL for 3s")
		pg("pg_stop")
		time.Sleep(3 * time.Second)
		_, err = e.tryQueue(map[string]any{"code_name": "pgw", "payload": "0.1"})
		Expect(err).To(MatchError(ContainSubstring("HTTP 503")), "the API while PostgreSQL is down")
		pg("pg_start")
		back := time.Now()

		By("the runner serves again within 10s, without a restart")
		var after []string
		Eventually(func() error {
			after, err = e.tryQueue(map[string]any{"code_name": "pgw", "payload": "0.1"})
			return err
		}, 10*time.Second, 100*time.Millisecond).Should(Succeed(), "the API did not take tasks within 10s")
		Eventually(func() string {
			t, err := e.tryTask(after[0])
			if err != nil {
				return err.Error()
			}
			return t.Status
		}).WithTimeout(10*time.Second-time.Since(back)).WithPolling(50*time.Millisecond).Should(Equal("complete"),
			"a task queued after PostgreSQL's return did not complete within 10s")
		recovered := time.Since(back)
		Expect(session.ExitCode()).To(Equal(-1), "the runner kept running")

		all := append(append(append(first, running...), waiting...), after...)
		Eventually(e.unfinished, 30*time.Second, 200*time.Millisecond).Should(BeZero())
		killed := e.expectChainsComplete(all, 3)
		AddReportEntry("pg restart under a runner", fmt.Sprintf("served again %s after PostgreSQL's return; %d tasks, %d killed and retried",
			recovered.Round(10*time.Millisecond), len(all), killed))
	})

	It("Cloud Controller down for a minute while diego tasks run: they complete after it returns, none failed", func() {
		d := newDiegoEnv(10 * time.Second)
		d.uploadZip("zipworker", "")
		d.startRunner(d.newBackend(), func(o *runner.Options) { o.Slots = 4 })
		warm := d.queue(map[string]any{"code_name": "zipworker", "payload": "warm"})[0]
		Eventually(d.status(warm), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))

		// Two run into the outage and end during it; two more are queued during it.
		running := d.queue(map[string]any{"code_name": "zipworker", "payload": "sleep 5"}, map[string]any{"code_name": "zipworker", "payload": "sleep 5"})
		for _, id := range running {
			Eventually(func() []fakecf.TaskInfo { return d.cfTasks(id) }, 30*time.Second, 100*time.Millisecond).Should(
				ConsistOf(HaveField("State", "RUNNING")))
		}
		By("Cloud Controller down for 60s")
		down := time.Now()
		d.fake.Down(60 * time.Second)
		time.Sleep(2 * time.Second)
		during := d.queue(map[string]any{"code_name": "zipworker", "payload": "sleep 1"}, map[string]any{"code_name": "zipworker", "payload": "sleep 1"})
		Consistently(func() []string {
			var st []string
			for _, id := range append(append([]string{}, running...), during...) {
				st = append(st, d.task(id).Status)
			}
			return st
		}, 55*time.Second-time.Since(down), time.Second).ShouldNot(ContainElement(BeElementOf("complete", "error", "killed", "timeout", "cancelled")),
			"nothing can be learnt or decided while Cloud Controller is down")
		all := append(append([]string{}, running...), during...)
		for _, id := range all {
			Eventually(d.status(id), 60*time.Second, 200*time.Millisecond).Should(Equal("complete"), "task %s: %s", id, d.task(id).Msg)
			Expect(d.cfTasks(id)).To(ConsistOf(HaveField("State", "SUCCEEDED")), "exactly one CF task for %s", id)
		}
		Expect(d.totalTasks()).To(Equal(1+len(all)), "no retries: none failed")
		refused := 0
		for _, r := range d.fake.Requests() {
			if r.Status == http.StatusBadGateway {
				refused++
			}
		}
		Expect(refused).To(BeNumerically(">", 10), "the runner kept asking Cloud Controller during the outage")
		AddReportEntry("CC down 60s", fmt.Sprintf("all %d tasks complete %s after the outage began; %d requests answered 502",
			len(all), time.Since(down).Round(time.Second), refused))
	})
})

// tryTask reads a task, or says why not.
func (e *env) tryTask(id string) (taskView, error) {
	var t taskView
	resp := e.a.Do(http.MethodGet, e.a.Project()+"/tasks/"+id, nil)
	if resp.Status != http.StatusOK {
		return t, fmt.Errorf("HTTP %d: %s", resp.Status, resp.Body)
	}
	return t, json.Unmarshal(resp.Body, &t)
}

func freeTCPPort() int {
	GinkgoHelper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
