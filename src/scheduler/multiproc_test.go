package scheduler_test

import (
	"bytes"
	"context"
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

	"github.com/ironcf/ironworker-release/src/store"
)

// Two real iron-api processes on one database, both running the scheduler.
var _ = Describe("Two iron-api processes", Ordered, func() {
	var (
		e        *env
		pid      string
		sessions []*gexec.Session
		ctx      = context.Background()
	)

	freePort := func() int {
		GinkgoHelper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}

	BeforeAll(func() {
		bin, err := gexec.Build("github.com/ironcf/ironworker-release/src/cmd/iron-api")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(gexec.CleanupBuildArtifacts)

		e = newEnv()
		pid = e.newProject()
		dir := GinkgoT().TempDir()
		for i := 0; i < 2; i++ {
			port := freePort()
			cfg := map[string]any{
				"listen_address": fmt.Sprintf("127.0.0.1:%d", port),
				"database":       map[string]any{"url": e.DB.URL, "max_open_conns": 5},
				"scheduler":      map[string]any{"interval": "50ms", "batch_size": 20},
				"encryption": map[string]any{"active_key": "test",
					"keys": []any{map[string]any{"label": "test", "secret": e.KeyBase64}}},
				"log_level":        "debug",
				"shutdown_timeout": "2s",
			}
			raw, err := json.Marshal(cfg) // JSON is YAML
			Expect(err).NotTo(HaveOccurred())
			path := filepath.Join(dir, fmt.Sprintf("iron-api-%d.yml", i))
			Expect(os.WriteFile(path, raw, 0o600)).To(Succeed())

			s, err := gexec.Start(exec.Command(bin, "--config", path), GinkgoWriter, GinkgoWriter)
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(func() { s.Terminate().Wait(10 * time.Second); s.Kill().Wait(5 * time.Second) })
			sessions = append(sessions, s)
			Eventually(func() int {
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
				if err != nil {
					return 0
				}
				resp.Body.Close()
				return resp.StatusCode
			}, 20*time.Second, 50*time.Millisecond).Should(Equal(http.StatusOK))
		}
	})

	leaders := func() []int {
		var out []int
		for i, s := range sessions {
			if bytes.Contains(s.Out.Contents(), []byte("became scheduler leader")) {
				out = append(out, i)
			}
		}
		return out
	}

	createDue := func(n int) []string {
		GinkgoHelper()
		now := time.Now().UTC()
		batch := make([]store.NewSchedule, n)
		for i := range batch {
			batch[i] = store.NewSchedule{CodeName: "hello", Payload: "{}", StartAt: now.Add(time.Second), RunEvery: 60, Timeout: 60}
		}
		ids, err := e.Store.CreateSchedules(ctx, pid, batch, now)
		Expect(err).NotTo(HaveOccurred())
		return ids
	}

	firedAll := func(ids []string) func() int {
		return func() int {
			return e.count(`SELECT count(*) FROM schedules WHERE id = ANY($1) AND run_count >= 1`, pqArray(ids))
		}
	}

	It("fires each due schedule exactly once, with one leader", func() {
		ids := createDue(50)
		Eventually(firedAll(ids), 20*time.Second, 50*time.Millisecond).Should(Equal(50))
		Consistently(func() int { return e.count(`SELECT count(*) FROM tasks WHERE project_id = $1`, pid) },
			time.Second, 100*time.Millisecond).Should(Equal(50))
		Expect(e.duplicates()).To(Equal(0))
		Expect(e.count(`SELECT count(*) FROM schedules WHERE id = ANY($1) AND run_count = 1`, pqArray(ids))).To(Equal(50))
		Expect(leaders()).To(HaveLen(1))
	})

	It("fails over to the other process when the leader dies", func() {
		l := leaders()
		Expect(l).To(HaveLen(1))
		dead, survivor := sessions[l[0]], sessions[1-l[0]]
		dead.Kill().Wait(5 * time.Second)

		ids := createDue(20)
		Eventually(firedAll(ids), 20*time.Second, 50*time.Millisecond).Should(Equal(20))
		Expect(survivor.Out.Contents()).To(ContainSubstring("became scheduler leader"))
		Consistently(func() int { return e.count(`SELECT count(*) FROM tasks WHERE project_id = $1`, pid) },
			500*time.Millisecond, 100*time.Millisecond).Should(Equal(70))
		Expect(e.duplicates()).To(Equal(0))
	})
})

// pqArray renders ids as a PostgreSQL text array literal.
func pqArray(ids []string) string {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(id)
	}
	b.WriteByte('}')
	return b.String()
}
