package scheduler_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"github.com/ironcf/ironworker-release/src/store"
)

// Crash safety (issue 9, item 1, scheduler bullet): two real iron-api processes on one
// database; the scheduler leader is SIGKILLed at a random point and restarted, 20
// times, while interval schedules come due every 250 ms (8 schedules of run_every 2 s,
// staggered by 250 ms, in real time). Afterwards every due instant of the covered window
// produced exactly one task: none skipped, none doubled.
var _ = Describe("scheduler leader kill loop (kill -9 at random points, 20 times)", func() {
	It("fires every due instant exactly once across 20 leader kills", func() {
		const (
			kills     = 20
			schedules = 8
			every     = 2 // seconds
		)
		bin, err := gexec.Build("github.com/ironcf/ironworker-release/src/cmd/iron-api")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(gexec.CleanupBuildArtifacts)
		e := newEnv()
		pid := e.newProject()
		dir := GinkgoT().TempDir()

		type proc struct {
			cfg  string
			port int
			s    *gexec.Session
		}
		procs := make([]*proc, 2)
		for i := range procs {
			port := freeTCPPort()
			raw, err := json.Marshal(map[string]any{
				"listen_address": fmt.Sprintf("127.0.0.1:%d", port),
				"database":       map[string]any{"url": e.DB.URL, "max_open_conns": 5},
				"scheduler":      map[string]any{"interval": "50ms", "batch_size": 20},
				"encryption": map[string]any{"active_key": "test",
					"keys": []any{map[string]any{"label": "test", "secret": e.KeyBase64}}},
				"log_level":        "debug",
				"shutdown_timeout": "2s",
			})
			Expect(err).NotTo(HaveOccurred())
			path := filepath.Join(dir, fmt.Sprintf("iron-api-%d.yml", i))
			Expect(os.WriteFile(path, raw, 0o600)).To(Succeed())
			procs[i] = &proc{cfg: path, port: port}
		}
		start := func(p *proc) {
			GinkgoHelper()
			s, err := gexec.Start(exec.Command(bin, "--config", p.cfg), GinkgoWriter, GinkgoWriter)
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(func() { s.Kill().Wait(5 * time.Second) })
			p.s = s
			Eventually(func() int {
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", p.port))
				if err != nil {
					return 0
				}
				resp.Body.Close()
				return resp.StatusCode
			}, 20*time.Second, 20*time.Millisecond).Should(Equal(http.StatusOK))
		}
		became := func(p *proc) int { return bytes.Count(p.s.Out.Contents(), []byte("became scheduler leader")) }
		for _, p := range procs {
			start(p)
		}

		base := time.Now().UTC().Add(time.Second).Truncate(time.Millisecond)
		var batch []store.NewSchedule
		for k := range schedules {
			batch = append(batch, store.NewSchedule{CodeName: "hello", Payload: "{}", RunEvery: every, Timeout: 60,
				StartAt: base.Add(time.Duration(k) * every * time.Second / schedules)})
		}
		ids := e.create(pid, time.Now().UTC(), batch...)

		// The leader is whichever process logged it.
		var leader int
		Eventually(func() int {
			n := 0
			for i, p := range procs {
				if became(p) > 0 {
					leader, n = i, n+1
				}
			}
			return n
		}, 20*time.Second, 20*time.Millisecond).Should(Equal(1))
		Eventually(func() int { return e.count(`SELECT count(*) FROM tasks WHERE project_id = $1`, pid) },
			10*time.Second, 20*time.Millisecond).Should(BeNumerically(">", 0), "firing before the kills")

		for i := range kills {
			time.Sleep(time.Duration(rand.IntN(800)) * time.Millisecond)
			survivor := procs[1-leader]
			before := became(survivor)
			procs[leader].s.Kill() // SIGKILL
			Eventually(procs[leader].s, 10*time.Second).Should(gexec.Exit())
			start(procs[leader]) // back, as a standby (or as the leader if it wins the lock)
			Eventually(func() bool { return became(survivor) > before || became(procs[leader]) > 0 },
				10*time.Second, 20*time.Millisecond).Should(BeTrue(), "kill %d: nobody took over", i+1)
			if became(survivor) > before {
				leader = 1 - leader
			}
		}
		end := time.Now().UTC()

		// Let the instants due up to the end fire (takeover is well within run_every).
		time.Sleep(time.Duration(every)*time.Second + 500*time.Millisecond)
		fired := 0
		for k, id := range ids {
			var want, got []string
			for t := batch[k].StartAt; !t.After(end); t = t.Add(every * time.Second) {
				want = append(want, t.UTC().Format(time.RFC3339Nano))
			}
			for _, t := range e.taskInstants(id) {
				if !t.After(end) {
					got = append(got, t.UTC().Format(time.RFC3339Nano))
				}
			}
			Expect(got).To(Equal(want), "schedule %d: the instants due up to the end, each once", k)
			fired += len(got)
		}
		Expect(e.duplicates()).To(BeZero())
		GinkgoWriter.Printf("leader kill loop: %d kills, %d due instants over %s, each fired once\n",
			kills, fired, end.Sub(base).Round(time.Millisecond))
	})
})

func freeTCPPort() int {
	GinkgoHelper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
