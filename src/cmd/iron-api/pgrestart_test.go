package main_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Dependency faults (issue 9, item 2, first part): PostgreSQL restarted under load.
// The API stays up, answers 503 {"msg"} while the database is away, recovers by itself
// within 10 s of its return, and loses nothing it acknowledged. The spec runs its own
// throwaway cluster (scripts/lib/pg.sh) so that stopping it disturbs no other suite.
var _ = Describe("iron-api while PostgreSQL restarts under load", func() {
	It("answers 503 during the outage, recovers within 10s and loses nothing acknowledged", func() {
		pgLib, err := filepath.Abs("../../../scripts/lib/pg.sh")
		Expect(err).NotTo(HaveOccurred())
		dir, err := os.MkdirTemp("/tmp", "iron-pgrestart-")
		Expect(err).NotTo(HaveOccurred())
		Expect(os.Chmod(dir, 0o755)).To(Succeed())
		data := filepath.Join(dir, "data")
		pgPort := freePort()
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
		dbURL := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pgPort)

		port := freePort()
		cfg := writeConfig(strings.Replace(validConfig(port), db.URL, dbURL, 1))
		startServer(cfg, port)
		project := createProject(cfg, "pg restart spec")
		base := fmt.Sprintf("http://127.0.0.1:%d/2/projects/%s", port, project.ProjectID)
		client := &http.Client{Timeout: 30 * time.Second}
		post := func(path, key, body string) (int, []byte, error) {
			req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "OAuth "+project.Token)
			if key != "" {
				req.Header.Set("Idempotency-Key", key)
			}
			resp, err := client.Do(req)
			if err != nil {
				return 0, nil, err
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			return resp.StatusCode, raw, err
		}
		st, raw, err := post("/codes", "", `{"name":"pg","image":"iron/pg"}`)
		Expect(err).NotTo(HaveOccurred())
		Expect(st).To(Equal(http.StatusOK), string(raw))

		var (
			mu         sync.Mutex
			acked      = map[string]string{} // key → task id
			refused    []string              // keys answered 503
			unexpected []string
			lastOK     time.Time
			stop       = make(chan struct{})
			wg         sync.WaitGroup
			taskBody   = func(key string) string { return `{"tasks":[{"code_name":"pg","payload":"` + key + `"}]}` }
		)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer GinkgoRecover()
				defer wg.Done()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					key := fmt.Sprintf("pg-%d-%05d", w, n)
					st, raw, err := post("/tasks", key, taskBody(key))
					mu.Lock()
					switch {
					case err != nil:
						unexpected = append(unexpected, fmt.Sprintf("%s: %v", key, err))
					case st == http.StatusOK:
						var out struct {
							Tasks []struct {
								ID string `json:"id"`
							} `json:"tasks"`
						}
						if json.Unmarshal(raw, &out) != nil || len(out.Tasks) != 1 {
							unexpected = append(unexpected, fmt.Sprintf("%s: 200 %s", key, raw))
						} else {
							acked[key] = out.Tasks[0].ID
							lastOK = time.Now()
						}
					case st == http.StatusServiceUnavailable:
						var m map[string]any
						if json.Unmarshal(raw, &m) != nil || m["msg"] == nil {
							unexpected = append(unexpected, fmt.Sprintf("%s: 503 without msg: %s", key, raw))
						}
						refused = append(refused, key)
					default:
						unexpected = append(unexpected, fmt.Sprintf("%s: %d %s", key, st, raw))
					}
					mu.Unlock()
					if st != http.StatusOK {
						time.Sleep(50 * time.Millisecond) // a client backing off
					}
				}
			}(w)
		}
		time.Sleep(time.Second)
		By("stopping PostgreSQL")
		pg("pg_stop")
		time.Sleep(3 * time.Second)
		mu.Lock()
		refusedDuringOutage := len(refused)
		mu.Unlock()
		By("starting PostgreSQL again")
		pg("pg_start")
		back := time.Now()
		Eventually(func() bool {
			mu.Lock()
			defer mu.Unlock()
			return lastOK.After(back)
		}).WithTimeout(10*time.Second).WithPolling(50*time.Millisecond).Should(BeTrue(), "no request succeeded within 10s of PostgreSQL's return")
		recovered := time.Now()
		time.Sleep(2 * time.Second)
		close(stop)
		wg.Wait()

		GinkgoWriter.Printf("pg restart: %d acknowledged, %d refused with 503, recovered %s after restart\n",
			len(acked), len(refused), recovered.Sub(back).Round(10*time.Millisecond))
		Expect(unexpected).To(BeEmpty())
		Expect(refusedDuringOutage).To(BeNumerically(">", 0), "no 503 while PostgreSQL was down")

		By("every acknowledged task is there; every refused key, retried, is queued exactly once")
		for _, key := range refused {
			st, raw, err := post("/tasks", key, taskBody(key))
			Expect(err).NotTo(HaveOccurred())
			Expect(st).To(Equal(http.StatusOK), string(raw))
		}
		conn, err := sql.Open("postgres", dbURL)
		Expect(err).NotTo(HaveOccurred())
		defer conn.Close()
		for key, id := range acked {
			var payload string
			Expect(conn.QueryRow(`SELECT payload FROM tasks WHERE id = $1`, id).Scan(&payload)).To(Succeed(), "acknowledged task %s lost", id)
			Expect(payload).To(Equal(key))
		}
		var total, distinct int
		Expect(conn.QueryRow(`SELECT count(*), count(DISTINCT payload) FROM tasks WHERE project_id = $1`, project.ProjectID).
			Scan(&total, &distinct)).To(Succeed())
		Expect(total).To(Equal(distinct), "a key was queued twice")
		Expect(total).To(Equal(len(acked) + len(refused)))
	})
})
