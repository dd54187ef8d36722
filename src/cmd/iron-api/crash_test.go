package main_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
)

// Crash safety of POST /tasks (issue 9, item 1): a client sends batches of 100 tasks,
// each under its own Idempotency-Key, while the API is killed with SIGKILL at random
// moments. After each restart every batch is fully present or fully absent, and
// retrying every key yields exactly one copy of each batch.
var _ = Describe("iron-api killed with SIGKILL during batch POST /tasks", func() {
	const (
		iterations = 20
		batchSize  = 100
	)

	It("keeps every batch whole and, with idempotency keys, never doubles one", func() {
		port := freePort()
		cfg := writeConfig(validConfig(port))
		project := createProject(cfg, "crash spec")
		base := fmt.Sprintf("http://127.0.0.1:%d/2/projects/%s", port, project.ProjectID)
		client := &http.Client{Timeout: 30 * time.Second}

		conn, err := sql.Open("postgres", db.URL)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)

		post := func(path, key, body string) (int, []byte, error) {
			req, err := http.NewRequest("POST", base+path, strings.NewReader(body))
			Expect(err).NotTo(HaveOccurred())
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
		batchBody := func(key string) string {
			var b strings.Builder
			b.WriteString(`{"tasks":[`)
			for i := 0; i < batchSize; i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"code_name":"crash","payload":"%s/%03d"}`, key, i)
			}
			b.WriteString(`]}`)
			return b.String()
		}
		idsOf := func(raw []byte) []string {
			var out struct {
				Tasks []struct {
					ID string `json:"id"`
				} `json:"tasks"`
			}
			ExpectWithOffset(1, json.Unmarshal(raw, &out)).To(Succeed(), string(raw))
			ids := make([]string, len(out.Tasks))
			for i, t := range out.Tasks {
				ids[i] = t.ID
			}
			return ids
		}
		copies := func(key string) int {
			var n int
			ExpectWithOffset(1, conn.QueryRow(`SELECT count(*) FROM tasks WHERE project_id = $1 AND payload LIKE $2`,
				project.ProjectID, key+"/%").Scan(&n)).To(Succeed())
			return n
		}

		session := startServer(cfg, port)
		st, raw, err := post("/codes", "", `{"name":"crash","image":"iron/crash"}`)
		Expect(err).NotTo(HaveOccurred())
		Expect(st).To(Equal(http.StatusOK), string(raw))

		answered := map[string][]string{} // key → ids of the answer the client got
		var sent []string                 // every key sent, answered or not
		interrupted := 0
		for it := 0; it < iterations; it++ {
			done := make(chan struct{})
			go func(it int) {
				defer GinkgoRecover()
				defer close(done)
				for n := 0; ; n++ {
					key := fmt.Sprintf("crash-%02d-%03d", it, n)
					sent = append(sent, key)
					st, raw, err := post("/tasks", key, batchBody(key))
					if err != nil {
						interrupted++
						return // the API died under this request: outcome unknown
					}
					Expect(st).To(Equal(http.StatusOK), string(raw))
					answered[key] = idsOf(raw)
				}
			}(it)
			time.Sleep(time.Duration(20+rand.IntN(400)) * time.Millisecond)
			Expect(session.Signal(syscall.SIGKILL)).NotTo(BeNil())
			Eventually(session).WithTimeout(10 * time.Second).Should(gexec.Exit())
			Eventually(done).WithTimeout(40 * time.Second).Should(BeClosed())

			By(fmt.Sprintf("iteration %d: every batch is whole or absent", it))
			for _, key := range sent {
				n := copies(key)
				Expect(n).To(Or(Equal(0), Equal(batchSize)), "batch %s has %d of %d tasks", key, n, batchSize)
				if _, ok := answered[key]; ok {
					Expect(n).To(Equal(batchSize), "answered batch %s lost", key)
				}
			}

			session = startServer(cfg, port)
			By(fmt.Sprintf("iteration %d: retrying every key", it))
			for _, key := range sent {
				st, raw, err := post("/tasks", key, batchBody(key))
				Expect(err).NotTo(HaveOccurred())
				Expect(st).To(Equal(http.StatusOK), string(raw))
				ids := idsOf(raw)
				Expect(ids).To(HaveLen(batchSize))
				if prev, ok := answered[key]; ok {
					Expect(ids).To(Equal(prev), "the retry of %s answered other ids", key)
				}
				answered[key] = ids
				Expect(copies(key)).To(Equal(batchSize), "batch %s after its retry", key)
			}
		}
		Expect(len(sent)).To(BeNumerically(">", iterations))
		GinkgoWriter.Printf("crash spec: %d batches, %d interrupted mid-request\n", len(sent), interrupted)
		var total int
		Expect(conn.QueryRow(`SELECT count(*) FROM tasks WHERE project_id = $1`, project.ProjectID).Scan(&total)).To(Succeed())
		Expect(total).To(Equal(len(sent) * batchSize))
	})
})
