package api_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/reaper"
	"github.com/ironcf/ironworker-release/src/store"
)

// ---- helpers (prefixed rp… to stay clear of other specs in this package) ----

// rpEnv is one spec's own API (own database, so that no other spec's queued tasks are
// leased) with a runner client.
type rpEnv struct {
	h  *testsupport.API
	rc *client.RunnerClient
	db *sql.DB
}

func rpStart() *rpEnv {
	h, err := testsupport.StartAPI(config.Limits{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(h.Stop)
	rc, err := client.NewRunnerClient(h.Server.URL, h.RunnerName, h.RunnerSecret, client.RunnerOptions{Timeout: 15 * time.Second})
	Expect(err).NotTo(HaveOccurred())
	db, err := h.DB.SQL()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(db.Close)
	return &rpEnv{h: h, rc: rc, db: db}
}

func (e *rpEnv) code(st store.CodeSettings, archive []byte) store.Code {
	if st.Name == "" {
		st.Name = "runner-spec/" + store.NewID()
	}
	if st.Image == "" && archive == nil {
		st.Image = "img"
	}
	up := store.CodeUpload{Settings: st}
	if archive != nil {
		up.Archive = bytes.NewReader(archive)
	}
	c, err := e.h.Store.SaveCode(context.Background(), e.h.ProjectID, up)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return c
}

// queue posts tasks through the public API and returns their ids.
func (e *rpEnv) queue(tasks ...map[string]any) []string {
	r := e.h.Do("POST", e.h.Project()+"/tasks", map[string]any{"tasks": tasks})
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusOK), string(r.Body))
	items := r.JSON()["tasks"].([]any)
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.(map[string]any)["id"].(string)
	}
	return ids
}

func (e *rpEnv) queueN(codeName string, n int) []string {
	tasks := make([]map[string]any, n)
	for i := range tasks {
		tasks[i] = map[string]any{"code_name": codeName}
	}
	return e.queue(tasks...)
}

// task reads a task through the public API.
func (e *rpEnv) task(id string) map[string]any {
	r := e.h.Do("GET", e.h.Project()+"/tasks/"+id, nil)
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusOK), string(r.Body))
	return r.JSON()
}

func (e *rpEnv) storeTask(id string) store.Task {
	t, err := e.h.Store.GetTask(context.Background(), e.h.ProjectID, id)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return t
}

func (e *rpEnv) lease(max int, wait time.Duration) []client.Lease {
	ls, err := e.rc.Lease(context.Background(), client.LeaseRequest{RunnerID: "spec-runner", MaxTasks: max, Wait: wait})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return ls
}

func (e *rpEnv) leaseOne() client.Lease {
	ls := e.lease(1, 0)
	ExpectWithOffset(1, ls).To(HaveLen(1))
	return ls[0]
}

func (e *rpEnv) exec(q string, args ...any) {
	_, err := e.db.Exec(q, args...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
}

func (e *rpEnv) count(q string, args ...any) int {
	var n int
	ExpectWithOffset(1, e.db.QueryRow(q, args...).Scan(&n)).To(Succeed())
	return n
}

// expire makes a task's lease lapse now.
func (e *rpEnv) expire(taskID string) {
	e.exec(`UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, taskID)
}

func (e *rpEnv) reap() {
	ExpectWithOffset(1, reaper.ReapOnce(context.Background(), e.h.Store, store.ReapOptions{}, rpQuiet)).To(Succeed())
}

func (e *rpEnv) complete(l client.Lease, status string) client.CompleteResponse {
	res, err := e.rc.Complete(context.Background(), l.Task.ID, client.CompleteRequest{LeaseID: l.LeaseID, Status: status})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return res
}

func rpZip(files map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		Expect(err).NotTo(HaveOccurred())
		_, err = w.Write([]byte(body))
		Expect(err).NotTo(HaveOccurred())
	}
	Expect(zw.Close()).To(Succeed())
	return buf.Bytes()
}

func rpInt(v int) *int { return &v }

var rpQuiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func rpStr(s string) *string { return &s }

var _ = Describe("Runner protocol: /internal/v1", func() {
	var e *rpEnv
	BeforeEach(func() { e = rpStart() })

	Describe("authentication", func() {
		leaseWith := func(header http.Header) int {
			return e.h.DoAs("", "POST", "/internal/v1/lease", map[string]any{"wait_seconds": 0}, header).Status
		}
		basic := func(name, secret string) http.Header {
			req, _ := http.NewRequest("GET", "http://x", nil)
			req.SetBasicAuth(name, secret)
			return http.Header{"Authorization": req.Header["Authorization"]}
		}

		It("refuses a request without a credential with 401", func() {
			r := e.h.DoAs("", "POST", "/internal/v1/lease", map[string]any{"wait_seconds": 0}, nil)
			Expect(r.Status).To(Equal(http.StatusUnauthorized))
			Expect(r.JSON()).To(HaveKey("msg"))
			Expect(r.Header.Get("WWW-Authenticate")).To(ContainSubstring("Basic"))
		})

		It("refuses an app's OAuth token, however it is sent", func() {
			Expect(e.h.DoAs(e.h.Token, "POST", "/internal/v1/lease", map[string]any{"wait_seconds": 0}, nil).Status).
				To(Equal(http.StatusUnauthorized))
			Expect(leaseWith(http.Header{"Authorization": {"Bearer " + e.h.Token}})).To(Equal(http.StatusUnauthorized))
			Expect(leaseWith(basic(e.h.RunnerName, e.h.Token))).To(Equal(http.StatusUnauthorized))
		})

		It("refuses a wrong secret or a wrong name", func() {
			Expect(leaseWith(basic(e.h.RunnerName, e.h.RunnerSecret+"x"))).To(Equal(http.StatusUnauthorized))
			Expect(leaseWith(basic("someone-else", e.h.RunnerSecret))).To(Equal(http.StatusUnauthorized))
			Expect(leaseWith(http.Header{"Authorization": {"Bearer nope"}})).To(Equal(http.StatusUnauthorized))
		})

		It("accepts the runner credential as HTTP basic or as a Bearer secret", func() {
			Expect(leaseWith(basic(e.h.RunnerName, e.h.RunnerSecret))).To(Equal(http.StatusOK))
			Expect(leaseWith(http.Header{"Authorization": {"Bearer " + e.h.RunnerSecret}})).To(Equal(http.StatusOK))
			bearer, err := client.NewRunnerClient(e.h.Server.URL, "", e.h.RunnerSecret, client.RunnerOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = bearer.Lease(context.Background(), client.LeaseRequest{})
			Expect(err).NotTo(HaveOccurred())
		})

		It("guards every route", func() {
			id := store.NewID()
			for _, route := range [][2]string{{"POST", "/internal/v1/tasks/" + id + "/heartbeat"}, {"POST", "/internal/v1/tasks/" + id + "/log"},
				{"POST", "/internal/v1/tasks/" + id + "/progress"}, {"POST", "/internal/v1/tasks/" + id + "/complete"},
				{"GET", "/internal/v1/tasks/" + id + "/archive"}, {"POST", "/internal/v1/reports"}} {
				Expect(e.h.DoAs(e.h.Token, route[0], route[1], nil, nil).Status).To(Equal(http.StatusUnauthorized), route[1])
			}
			bad, err := client.NewRunnerClient(e.h.Server.URL, e.h.RunnerName, "wrong-secret-wrong-secret", client.RunnerOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = bad.Lease(context.Background(), client.LeaseRequest{})
			Expect(errors.Is(err, client.ErrUnauthorized)).To(BeTrue(), "%v", err)
		})
	})

	Describe("POST /lease", func() {
		It("answers [] after the wait when nothing is queued, and at once with no wait", func() {
			start := time.Now()
			Expect(e.lease(1, 0)).To(BeEmpty())
			Expect(time.Since(start)).To(BeNumerically("<", 500*time.Millisecond))

			start = time.Now()
			Expect(e.lease(1, 1500*time.Millisecond)).To(BeEmpty())
			Expect(time.Since(start)).To(And(BeNumerically(">=", 1400*time.Millisecond), BeNumerically("<", 3*time.Second)))
		})

		It("caps the wait at runner.lease_wait", func() {
			r := e.h.DoAs("", "POST", "/internal/v1/lease", map[string]any{"wait_seconds": -1},
				http.Header{"Authorization": {"Bearer " + e.h.RunnerSecret}})
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			r = e.h.DoAs("", "POST", "/internal/v1/lease", map[string]any{"max_tasks": 0, "wait_seconds": 0},
				http.Header{"Authorization": {"Bearer " + e.h.RunnerSecret}})
			Expect(r.Status).To(Equal(http.StatusBadRequest))
		})

		It("is woken by a task queued during the long-poll, well before the wait ends", func() {
			code := e.code(store.CodeSettings{}, nil)
			type result struct {
				leases []client.Lease
				at     time.Time
			}
			done := make(chan result, 1)
			go func() {
				defer GinkgoRecover()
				ls, err := e.rc.Lease(context.Background(), client.LeaseRequest{Wait: 10 * time.Second})
				Expect(err).NotTo(HaveOccurred())
				done <- result{ls, time.Now()}
			}()
			// Queue between two of the lease's 2 s re-checks (at 2 s and 4 s), so that only
			// the NOTIFY can wake it within 1 s.
			time.Sleep(2300 * time.Millisecond)
			queuedAt := time.Now()
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			var r result
			Eventually(done, 5*time.Second).Should(Receive(&r))
			Expect(r.leases).To(HaveLen(1))
			Expect(r.leases[0].Task.ID).To(Equal(id))
			Expect(r.at.Sub(queuedAt)).To(BeNumerically("<", time.Second))
		})

		It("is woken when a running task of a capped code ends and frees its slot", func() {
			code := e.code(store.CodeSettings{MaxConcurrency: rpInt(1)}, nil)
			e.queueN(code.Name, 2)
			first := e.leaseOne()
			Expect(e.lease(1, 0)).To(BeEmpty()) // at max_concurrency
			done := make(chan []client.Lease, 1)
			go func() {
				defer GinkgoRecover()
				ls, err := e.rc.Lease(context.Background(), client.LeaseRequest{Wait: 10 * time.Second})
				Expect(err).NotTo(HaveOccurred())
				done <- ls
			}()
			time.Sleep(2300 * time.Millisecond) // between two re-checks, as above
			completedAt := time.Now()
			e.complete(first, client.StatusComplete)
			var ls []client.Lease
			Eventually(done, 5*time.Second).Should(Receive(&ls))
			Expect(ls).To(HaveLen(1))
			Expect(time.Since(completedAt)).To(BeNumerically("<", time.Second))
		})

		It("hands out priority 2 before 1 before 0, then the oldest first", func() {
			code := e.code(store.CodeSettings{}, nil)
			ids := e.queue(
				map[string]any{"code_name": code.Name, "priority": 0},
				map[string]any{"code_name": code.Name, "priority": 2},
				map[string]any{"code_name": code.Name, "priority": 1},
				map[string]any{"code_name": code.Name, "priority": 2},
			)
			Expect(e.leaseOne().Task.ID).To(Equal(ids[1]))
			ls := e.lease(3, 0)
			Expect([]string{ls[0].Task.ID, ls[1].Task.ID, ls[2].Task.ID}).To(Equal([]string{ids[3], ids[2], ids[0]}))
		})

		It("does not hand out a delayed task before its delay", func() {
			code := e.code(store.CodeSettings{}, nil)
			queuedAt := time.Now()
			id := e.queue(map[string]any{"code_name": code.Name, "delay": 2})[0]
			Expect(e.lease(1, 0)).To(BeEmpty())
			ls := e.lease(1, 8*time.Second)
			Expect(ls).To(HaveLen(1))
			Expect(ls[0].Task.ID).To(Equal(id))
			Expect(time.Since(queuedAt)).To(BeNumerically(">=", 1900*time.Millisecond))
		})

		It("skips a paused code's tasks until it is resumed", func() {
			paused := e.code(store.CodeSettings{}, nil)
			Expect(e.h.Store.SetCodePaused(context.Background(), e.h.ProjectID, paused.ID, true)).To(Succeed())
			pausedID := e.queue(map[string]any{"code_name": paused.Name, "priority": 2})[0]
			other := e.code(store.CodeSettings{}, nil)
			otherID := e.queue(map[string]any{"code_name": other.Name})[0]

			Expect(e.leaseOne().Task.ID).To(Equal(otherID))
			Expect(e.lease(1, 0)).To(BeEmpty())
			Expect(e.task(pausedID)["status"]).To(Equal("queued"))

			r := e.h.Do("POST", e.h.Project()+"/codes/"+paused.ID+"/resume_task_queue", nil)
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			Expect(e.leaseOne().Task.ID).To(Equal(pausedID))
		})

		It("never exceeds max_concurrency under many concurrent leases", func() {
			code := e.code(store.CodeSettings{MaxConcurrency: rpInt(3)}, nil)
			e.queueN(code.Name, 40)
			free := e.code(store.CodeSettings{}, nil)
			e.queueN(free.Name, 5)

			// 20 runners lease concurrently, each a few times (a call may come back short
			// while other leases hold the rows it wanted).
			var mu sync.Mutex
			perCode := map[string]int{}
			total := func() int {
				mu.Lock()
				defer mu.Unlock()
				return perCode[code.Name] + perCode[free.Name]
			}
			leaseConcurrently := func(runners, maxTasks, want int) {
				var wg sync.WaitGroup
				for i := 0; i < runners; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer GinkgoRecover()
						for try := 0; try < 5 && total() < want; try++ {
							ls, err := e.rc.Lease(context.Background(), client.LeaseRequest{MaxTasks: maxTasks, Wait: 0})
							Expect(err).NotTo(HaveOccurred())
							mu.Lock()
							for _, l := range ls {
								perCode[l.Task.CodeName]++
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
			}
			active := func() int {
				return e.count(`SELECT count(*) FROM tasks WHERE code_id = $1 AND status IN ('preparing','running')`, code.ID)
			}
			leaseConcurrently(20, 2, 8)
			Expect(perCode[code.Name]).To(Equal(3))
			Expect(perCode[free.Name]).To(Equal(5), "a capped code must not starve the others")
			Expect(active()).To(Equal(3))
			Expect(e.lease(100, 0)).To(BeEmpty())

			// Freed slots are taken again, still never beyond the cap.
			e.exec(`UPDATE tasks SET status = 'complete', end_time = now() WHERE id IN
				(SELECT id FROM tasks WHERE code_id = $1 AND status = 'preparing' LIMIT 2)`, code.ID)
			leaseConcurrently(10, 3, 10)
			Expect(perCode[code.Name]).To(Equal(5))
			Expect(active()).To(Equal(3))
		})

		It("gives everything a runner needs, and the task becomes preparing", func() {
			zipBytes := rpZip(map[string]string{"__runner__.sh": "echo hi\n"})
			code := e.code(store.CodeSettings{
				Command: "sh __runner__.sh", Runtime: "sh", FileName: "__runner__.sh", Stack: "x",
				Config: rpStr(`{"db":"secret"}`), EnvVars: map[string]string{"A": "1"},
				Retries: 2, RetriesDelay: 7,
			}, zipBytes)
			id := e.queue(map[string]any{"code_name": code.Name, "payload": `{"x":1}`, "timeout": 120, "priority": 1,
				"label": "lbl", "cluster": "default"})[0]
			l := e.leaseOne()
			Expect(l.LeaseID).NotTo(BeEmpty())
			Expect(l.ExpiresAt).To(BeTemporally("~", time.Now().Add(30*time.Second), 5*time.Second))
			Expect(l.Attempt).To(Equal(1))
			Expect(l.Adopt).To(BeFalse())
			Expect(l.BackendRef).To(BeEmpty())
			t := l.Task
			Expect(t.ID).To(Equal(id))
			Expect(t.ProjectID).To(Equal(e.h.ProjectID))
			Expect(t.CodeID).To(Equal(code.ID))
			Expect(t.CodeName).To(Equal(code.Name))
			Expect(t.CodeRev).To(Equal(1))
			Expect(t.CodeRevisionID).To(Equal(code.LatestRevisionID))
			Expect(t.Status).To(Equal("preparing"))
			Expect(t.Command).To(Equal("sh __runner__.sh"))
			Expect(t.Runtime).To(Equal("sh"))
			Expect(t.FileName).To(Equal("__runner__.sh"))
			Expect(t.EnvVars).To(Equal(map[string]string{"A": "1"}))
			Expect(t.Config).To(HaveValue(Equal(`{"db":"secret"}`)))
			Expect(t.Payload).To(Equal(`{"x":1}`))
			Expect(t.Timeout).To(Equal(120))
			Expect(t.Priority).To(Equal(1))
			Expect(t.Label).To(Equal("lbl"))
			Expect(t.Retries).To(Equal(2))
			Expect(t.RetriesDelay).To(Equal(7))
			sum := md5.Sum(zipBytes)
			Expect(t.HasArchive).To(BeTrue())
			Expect(t.ArchiveSize).To(Equal(int64(len(zipBytes))))
			Expect(t.ArchiveMD5).To(Equal(hex.EncodeToString(sum[:])))
			Expect(t.ArchivePath).To(HavePrefix("/internal/v1/tasks/" + id + "/archive?lease_id="))
			Expect(e.task(id)["status"]).To(Equal("preparing"))

			a, err := e.rc.OpenArchive(context.Background(), id, l.LeaseID)
			Expect(err).NotTo(HaveOccurred())
			got, err := io.ReadAll(a)
			Expect(err).NotTo(HaveOccurred())
			Expect(a.Close()).To(Succeed())
			Expect(got).To(Equal(zipBytes))
			Expect(a.Size).To(Equal(int64(len(zipBytes))))
			Expect(a.MD5).To(Equal(t.ArchiveMD5))

			_, err = e.rc.OpenArchive(context.Background(), id, store.NewID())
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)
		})

		It("answers 404 for the archive of an image-only code", func() {
			code := e.code(store.CodeSettings{Image: "busybox"}, nil)
			e.queue(map[string]any{"code_name": code.Name})
			l := e.leaseOne()
			Expect(l.Task.Image).To(Equal("busybox"))
			Expect(l.Task.HasArchive).To(BeFalse())
			Expect(l.Task.EnvVars).To(BeEmpty())
			Expect(l.Task.Config).To(BeNil())
			_, err := e.rc.OpenArchive(context.Background(), l.Task.ID, l.LeaseID)
			Expect(errors.Is(err, client.ErrNotFound)).To(BeTrue(), "%v", err)
		})
	})

	Describe("heartbeat, log and progress", func() {
		var code store.Code
		BeforeEach(func() { code = e.code(store.CodeSettings{}, nil) })

		It("extends the lease and marks the task running with its backend ref and start_time", func() {
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			e.exec(`UPDATE tasks SET lease_expires_at = now() + interval '2 seconds' WHERE id = $1`, id)

			hb, err := e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StatePreparing})
			Expect(err).NotTo(HaveOccurred())
			Expect(hb.Cancel).To(BeFalse())
			Expect(hb.Status).To(Equal("preparing"))
			Expect(hb.ExpiresAt).To(BeTemporally("~", time.Now().Add(30*time.Second), 5*time.Second))
			Expect(e.task(id)).NotTo(HaveKey("start_time"))

			hb, err = e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID, BackendRef: "local:123"})
			Expect(err).NotTo(HaveOccurred())
			Expect(hb.Status).To(Equal("running"))
			task := e.task(id)
			Expect(task["status"]).To(Equal("running"))
			Expect(task).To(HaveKey("start_time"))
			start := task["start_time"]
			Expect(e.count(`SELECT count(*) FROM tasks WHERE id = $1 AND backend_ref = 'local:123'`, id)).To(Equal(1))

			time.Sleep(20 * time.Millisecond)
			_, err = e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StateRunning})
			Expect(err).NotTo(HaveOccurred())
			Expect(e.task(id)["start_time"]).To(Equal(start), "start_time is set once")
			Expect(e.count(`SELECT count(*) FROM tasks WHERE id = $1 AND backend_ref = 'local:123'`, id)).To(Equal(1), "an empty ref keeps the recorded one")
		})

		It("signals a user's cancel, and the task stays cancelled whatever the runner reports", func() {
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			_, err := e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StateRunning})
			Expect(err).NotTo(HaveOccurred())

			r := e.h.Do("POST", e.h.Project()+"/tasks/"+id+"/cancel", nil)
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))

			hb, err := e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StateRunning})
			Expect(err).NotTo(HaveOccurred())
			Expect(hb.Cancel).To(BeTrue())
			cancel, err := e.rc.Progress(context.Background(), id, l.LeaseID, rpInt(50), nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(cancel).To(BeTrue())
			Expect(e.rc.AppendLog(context.Background(), id, l.LeaseID, client.Stdout, []byte("last words\n"))).To(Succeed())

			res, err := e.rc.Complete(context.Background(), id, client.CompleteRequest{LeaseID: l.LeaseID, Status: client.StatusError, ExitCode: rpInt(137)})
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Status).To(Equal("cancelled"))
			Expect(res.RetryTaskID).To(BeEmpty())
			Expect(e.task(id)["status"]).To(Equal("cancelled"))
		})

		It("appends stdout and stderr to the log readable while the task runs", func() {
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			r := e.h.Do("GET", e.h.Project()+"/tasks/"+id+"/log", nil)
			Expect(r.Status).To(Equal(http.StatusNotFound))

			Expect(e.rc.AppendLog(context.Background(), id, l.LeaseID, client.Stdout, []byte("out 1\n"))).To(Succeed())
			Expect(e.rc.AppendLog(context.Background(), id, l.LeaseID, client.Stderr, []byte("err 1\n"))).To(Succeed())
			Expect(e.rc.AppendLog(context.Background(), id, l.LeaseID, client.Stdout, []byte("out 2\n"))).To(Succeed())

			r = e.h.Do("GET", e.h.Project()+"/tasks/"+id+"/log", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(string(r.Body)).To(Equal("out 1\nerr 1\nout 2\n"))
			r = e.h.Do("GET", e.h.Project()+"/tasks/"+id+"/outlog", nil)
			Expect(string(r.Body)).To(Equal("out 1\nout 2\n"))

			bad := e.h.DoAs("", "POST", "/internal/v1/tasks/"+id+"/log?stream=both&lease_id="+l.LeaseID, "x",
				http.Header{"Authorization": {"Bearer " + e.h.RunnerSecret}})
			Expect(bad.Status).To(Equal(http.StatusBadRequest))
		})

		It("sets progress visible through the task API", func() {
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			cancel, err := e.rc.Progress(context.Background(), id, l.LeaseID, rpInt(42), rpStr("half way"))
			Expect(err).NotTo(HaveOccurred())
			Expect(cancel).To(BeFalse())
			task := e.task(id)
			Expect(intOf(task["percent"])).To(Equal(int64(42)))
			Expect(task["msg"]).To(Equal("half way"))
			_, err = e.rc.Progress(context.Background(), id, l.LeaseID, rpInt(101), nil)
			var he *client.HTTPError
			Expect(errors.As(err, &he)).To(BeTrue())
			Expect(he.Code).To(Equal(http.StatusBadRequest))
		})

		It("answers 409 to a stale or unknown lease id on every call, and 404 for an unknown task", func() {
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			stale := store.NewID()
			ctx := context.Background()
			_, err := e.rc.Heartbeat(ctx, id, client.HeartbeatRequest{LeaseID: stale})
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)
			Expect(errors.Is(err, client.ErrTaskFinished)).To(BeFalse())
			_, err = e.rc.Progress(ctx, id, stale, rpInt(1), nil)
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)
			err = e.rc.AppendLog(ctx, id, stale, client.Stdout, []byte("x"))
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)
			_, err = e.rc.Complete(ctx, id, client.CompleteRequest{LeaseID: stale, Status: client.StatusComplete})
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)
			Expect(e.task(id)["status"]).To(Equal("preparing"))

			_, err = e.rc.Heartbeat(ctx, store.NewID(), client.HeartbeatRequest{LeaseID: l.LeaseID})
			Expect(errors.Is(err, client.ErrNotFound)).To(BeTrue(), "%v", err)
			r := e.h.DoAs("", "POST", "/internal/v1/tasks/"+id+"/heartbeat", map[string]any{},
				http.Header{"Authorization": {"Bearer " + e.h.RunnerSecret}})
			Expect(r.Status).To(Equal(http.StatusBadRequest), "lease_id is required")
		})
	})

	Describe("POST /tasks/:id/complete", func() {
		It("records status, exit code, msg and duration, visible through the task API", func() {
			code := e.code(store.CodeSettings{}, nil)
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			res, err := e.rc.Complete(context.Background(), id, client.CompleteRequest{LeaseID: l.LeaseID, Status: client.StatusError,
				ExitCode: rpInt(3), Msg: "boom: last stderr line", Duration: 1500 * time.Millisecond})
			Expect(err).NotTo(HaveOccurred())
			Expect(res).To(Equal(client.CompleteResponse{Status: "error"}))

			task := e.task(id)
			Expect(task["status"]).To(Equal("error"))
			Expect(task["msg"]).To(Equal("boom: last stderr line"))
			Expect(intOf(task["duration"])).To(BeNumerically("~", 1500, 5))
			Expect(task).To(HaveKey("start_time"))
			Expect(task).To(HaveKey("end_time"))
			Expect(e.storeTask(id).ExitCode).To(HaveValue(Equal(3)))
		})

		It("keeps the run time measured from the first running heartbeat", func() {
			code := e.code(store.CodeSettings{}, nil)
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			_, err := e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StateRunning})
			Expect(err).NotTo(HaveOccurred())
			e.exec(`UPDATE tasks SET start_time = now() - interval '10 seconds' WHERE id = $1`, id)
			e.complete(l, client.StatusComplete)
			t := e.storeTask(id)
			Expect(t.Status).To(Equal("complete"))
			Expect(*t.Duration()).To(BeNumerically("~", 10*time.Second, time.Second))
		})

		It("is idempotent for the same status and refuses another status or another lease", func() {
			code := e.code(store.CodeSettings{Retries: 1}, nil)
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			first := e.complete(l, client.StatusError)
			Expect(first.RetryTaskID).NotTo(BeEmpty())
			again := e.complete(l, client.StatusError)
			Expect(again).To(Equal(first), "same answer, no second retry")
			Expect(e.count(`SELECT count(*) FROM tasks WHERE original_task_id = $1`, id)).To(Equal(1))

			_, err := e.rc.Complete(context.Background(), id, client.CompleteRequest{LeaseID: l.LeaseID, Status: client.StatusComplete})
			Expect(errors.Is(err, client.ErrTaskFinished)).To(BeTrue(), "%v", err)
			var he *client.HTTPError
			Expect(errors.As(err, &he)).To(BeTrue())
			Expect(he.Code).To(Equal(http.StatusConflict))
			Expect(he.Status).To(Equal("error"))

			_, err = e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID})
			Expect(errors.Is(err, client.ErrTaskFinished)).To(BeTrue(), "%v", err)

			r := e.h.DoAs("", "POST", "/internal/v1/tasks/"+id+"/complete", map[string]any{"lease_id": l.LeaseID, "status": "done"},
				http.Header{"Authorization": {"Bearer " + e.h.RunnerSecret}})
			Expect(r.Status).To(Equal(http.StatusBadRequest))
		})

		It("queues linked retries with the code's delay while retry_count < retries", func() {
			code := e.code(store.CodeSettings{Retries: 2, RetriesDelay: 1}, nil)
			id := e.queue(map[string]any{"code_name": code.Name, "payload": "p", "priority": 1})[0]

			l := e.leaseOne()
			res := e.complete(l, client.StatusError)
			Expect(res.RetryTaskID).NotTo(BeEmpty())
			Expect(e.task(id)["retry_task_id"]).To(Equal(res.RetryTaskID))
			retry := e.task(res.RetryTaskID)
			Expect(retry["status"]).To(Equal("queued"))
			Expect(retry["original_task_id"]).To(Equal(id))
			Expect(intOf(retry["retry_count"])).To(Equal(int64(1)))
			Expect(intOf(retry["delay"])).To(Equal(int64(1)))
			Expect(retry["payload"]).To(Equal("p"))
			Expect(intOf(retry["priority"])).To(Equal(int64(1)))

			Expect(e.lease(1, 0)).To(BeEmpty(), "the retry waits for retries_delay")
			ls := e.lease(1, 5*time.Second)
			Expect(ls).To(HaveLen(1))
			Expect(ls[0].Task.ID).To(Equal(res.RetryTaskID))
			Expect(ls[0].Task.RetryCount).To(Equal(1))
			Expect(ls[0].Task.OriginalTaskID).To(Equal(id))

			res2 := e.complete(ls[0], client.StatusTimeout)
			Expect(res2.RetryTaskID).NotTo(BeEmpty())
			Expect(intOf(e.task(res2.RetryTaskID)["retry_count"])).To(Equal(int64(2)))
			e.exec(`UPDATE tasks SET run_at = now() WHERE id = $1`, res2.RetryTaskID)

			res3 := e.complete(e.leaseOne(), client.StatusKilled)
			Expect(res3.RetryTaskID).To(BeEmpty(), "retries exhausted")

			// complete and cancelled never retry.
			id2 := e.queue(map[string]any{"code_name": code.Name})[0]
			Expect(e.complete(e.leaseOne(), client.StatusComplete).RetryTaskID).To(BeEmpty())
			Expect(e.task(id2)).NotTo(HaveKey("retry_task_id"))
		})
	})

	Describe("POST /tasks/:id/release", func() {
		It("hands a task that has not started back to the queue without counting the attempt", func() {
			code := e.code(store.CodeSettings{}, nil)
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			Expect(e.rc.Release(context.Background(), id, l.LeaseID)).To(Succeed())
			Expect(e.task(id)["status"]).To(Equal("queued"))
			_, err := e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID})
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)
			again := e.leaseOne()
			Expect(again.Task.ID).To(Equal(id))
			Expect(again.Attempt).To(Equal(1))
			Expect(again.Adopt).To(BeFalse())
		})

		It("queues a running task with an adoptable ref for adoption, and refuses one without", func() {
			code := e.code(store.CodeSettings{}, nil)
			ids := e.queueN(code.Name, 2)
			ls := e.lease(2, 0)
			Expect(ls).To(HaveLen(2))
			no := false
			_, err := e.rc.Heartbeat(context.Background(), ids[0], client.HeartbeatRequest{LeaseID: ls[0].LeaseID, BackendRef: "diego:a"})
			Expect(err).NotTo(HaveOccurred())
			_, err = e.rc.Heartbeat(context.Background(), ids[1], client.HeartbeatRequest{LeaseID: ls[1].LeaseID, BackendRef: "local:1", Adoptable: &no})
			Expect(err).NotTo(HaveOccurred())

			Expect(e.rc.Release(context.Background(), ids[0], ls[0].LeaseID)).To(Succeed())
			err = e.rc.Release(context.Background(), ids[1], ls[1].LeaseID)
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)
			Expect(err.Error()).To(ContainSubstring("cannot be adopted"))
			Expect(e.task(ids[1])["status"]).To(Equal("running"))

			a := e.leaseOne()
			Expect(a.Task.ID).To(Equal(ids[0]))
			Expect(a.Adopt).To(BeTrue())
			Expect(a.BackendRef).To(Equal("diego:a"))
			Expect(a.Task.Status).To(Equal("running"))
		})
	})

	Describe("the lease reaper", func() {
		It("puts a never-started task back in the queue, and kills it after too many lost leases", func() {
			code := e.code(store.CodeSettings{}, nil)
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			e.reap()
			Expect(e.task(id)["status"]).To(Equal("preparing"), "the lease has not expired")

			e.expire(id)
			e.reap()
			Expect(e.task(id)["status"]).To(Equal("queued"))
			_, err := e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID})
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "%v", err)

			l2 := e.leaseOne()
			Expect(l2.Task.ID).To(Equal(id))
			Expect(l2.Attempt).To(Equal(2))
			Expect(l2.Adopt).To(BeFalse())

			e.exec(`UPDATE tasks SET lease_count = 5 WHERE id = $1`, id)
			e.expire(id)
			e.reap()
			task := e.task(id)
			Expect(task["status"]).To(Equal("killed"))
			Expect(task["msg"]).To(ContainSubstring("runner lost"))
		})

		It("kills a running task whose runner was lost with nothing to adopt, and retries it by policy", func() {
			code := e.code(store.CodeSettings{Retries: 1}, nil)
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			no := false
			_, err := e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StateRunning,
				BackendRef: "local:4242", Adoptable: &no})
			Expect(err).NotTo(HaveOccurred())
			e.expire(id)
			e.reap()

			task := e.task(id)
			Expect(task["status"]).To(Equal("killed"))
			Expect(task["msg"]).To(Equal(store.MsgRunnerLost))
			Expect(task).To(HaveKey("end_time"))
			retryID, _ := task["retry_task_id"].(string)
			Expect(retryID).NotTo(BeEmpty())
			Expect(e.task(retryID)["original_task_id"]).To(Equal(id))
			Expect(e.task(retryID)["status"]).To(Equal("queued"))

			// The lost runner coming back is told to stop.
			_, err = e.rc.Complete(context.Background(), id, client.CompleteRequest{LeaseID: l.LeaseID, Status: client.StatusComplete})
			Expect(errors.Is(err, client.ErrTaskFinished)).To(BeTrue(), "%v", err)
			Expect(e.task(id)["status"]).To(Equal("killed"))
		})

		It("queues a task with an adoptable backend ref again, and the next lease hands the ref over", func() {
			code := e.code(store.CodeSettings{MaxConcurrency: rpInt(1)}, nil)
			ids := e.queueN(code.Name, 2)
			l := e.leaseOne()
			Expect(l.Task.ID).To(Equal(ids[0]))
			_, err := e.rc.Heartbeat(context.Background(), ids[0], client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StateRunning,
				BackendRef: "diego:task-guid"})
			Expect(err).NotTo(HaveOccurred())
			started := e.storeTask(ids[0]).StartTime
			e.expire(ids[0])
			e.reap()
			Expect(e.task(ids[0])["status"]).To(Equal("queued"))

			// Still counted against max_concurrency while it waits for adoption, even
			// when paused, the adoption itself goes through.
			Expect(e.h.Store.SetCodePaused(context.Background(), e.h.ProjectID, code.ID, true)).To(Succeed())
			ls := e.lease(5, 0)
			Expect(ls).To(HaveLen(1))
			a := ls[0]
			Expect(a.Task.ID).To(Equal(ids[0]))
			Expect(a.Adopt).To(BeTrue())
			Expect(a.BackendRef).To(Equal("diego:task-guid"))
			Expect(a.Attempt).To(Equal(2))
			Expect(a.Task.Status).To(Equal("running"))
			Expect(e.storeTask(ids[0]).StartTime).To(Equal(started))
			Expect(e.task(ids[1])["status"]).To(Equal("queued"))

			_, err = e.rc.Heartbeat(context.Background(), ids[0], client.HeartbeatRequest{LeaseID: l.LeaseID})
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "the old holder's lease is stale: %v", err)
			hb, err := e.rc.Heartbeat(context.Background(), ids[0], client.HeartbeatRequest{LeaseID: a.LeaseID, State: client.StateRunning})
			Expect(err).NotTo(HaveOccurred())
			Expect(hb.Status).To(Equal("running"))
			e.complete(a, client.StatusComplete)
			Expect(e.task(ids[0])["status"]).To(Equal("complete"))
		})

		It("hands a task cancelled while queued for adoption to the next lease, to be stopped", func() {
			code := e.code(store.CodeSettings{}, nil)
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			_, err := e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID, BackendRef: "diego:c"})
			Expect(err).NotTo(HaveOccurred())
			e.expire(id)
			e.reap()
			r := e.h.Do("POST", e.h.Project()+"/tasks/"+id+"/cancel", nil)
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))

			stop := e.leaseOne()
			Expect(stop.Task.ID).To(Equal(id))
			Expect(stop.Cancel).To(BeTrue())
			Expect(stop.Adopt).To(BeTrue())
			Expect(stop.BackendRef).To(Equal("diego:c"))
			Expect(stop.Task.Status).To(Equal("cancelled"))
			Expect(e.complete(stop, client.StatusCancelled).Status).To(Equal("cancelled"))
			Expect(e.lease(1, 0)).To(BeEmpty())
			Expect(e.task(id)["status"]).To(Equal("cancelled"))
		})

		It("keeps a stopping holder's lease alive, and hands the stop on when that holder is lost", func() {
			code := e.code(store.CodeSettings{}, nil)
			ids := e.queueN(code.Name, 2)
			ls := e.lease(2, 0)
			Expect(ls).To(HaveLen(2))
			no := false
			_, err := e.rc.Heartbeat(context.Background(), ids[0], client.HeartbeatRequest{LeaseID: ls[0].LeaseID, BackendRef: "diego:s"})
			Expect(err).NotTo(HaveOccurred())
			_, err = e.rc.Heartbeat(context.Background(), ids[1], client.HeartbeatRequest{LeaseID: ls[1].LeaseID, BackendRef: "local:9", Adoptable: &no})
			Expect(err).NotTo(HaveOccurred())
			for _, id := range ids {
				Expect(e.h.Do("POST", e.h.Project()+"/tasks/"+id+"/cancel", nil).Status).To(Equal(http.StatusOK))
			}

			e.exec(`UPDATE tasks SET lease_expires_at = now() + interval '1 second' WHERE id = $1`, ids[0])
			hb, err := e.rc.Heartbeat(context.Background(), ids[0], client.HeartbeatRequest{LeaseID: ls[0].LeaseID})
			Expect(err).NotTo(HaveOccurred())
			Expect(hb.Cancel).To(BeTrue())
			Expect(hb.ExpiresAt).To(BeTemporally("~", time.Now().Add(30*time.Second), 5*time.Second))
			Expect(e.count(`SELECT count(*) FROM tasks WHERE id = $1 AND lease_expires_at > now() + interval '20 seconds'`, ids[0])).To(Equal(1))

			e.expire(ids[0])
			e.expire(ids[1])
			e.reap()
			stop := e.leaseOne()
			Expect(stop.Task.ID).To(Equal(ids[0]), "the local task died with its runner: nothing to stop")
			Expect(stop.Cancel).To(BeTrue())
			_, err = e.rc.Complete(context.Background(), ids[0], client.CompleteRequest{LeaseID: ls[0].LeaseID, Status: client.StatusCancelled})
			Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue(), "the lost holder's lease is stale: %v", err)
			Expect(e.complete(stop, client.StatusCancelled).Status).To(Equal("cancelled"))
			e.reap()
			Expect(e.lease(5, 0)).To(BeEmpty())
			Expect(e.count(`SELECT count(*) FROM tasks WHERE lease_expires_at IS NOT NULL`)).To(BeZero())
		})

		It("runs as a leader loop that leaves nothing running after its lease expired", func() {
			code := e.code(store.CodeSettings{}, nil)
			id := e.queue(map[string]any{"code_name": code.Name})[0]
			l := e.leaseOne()
			_, err := e.rc.Heartbeat(context.Background(), id, client.HeartbeatRequest{LeaseID: l.LeaseID, State: client.StateRunning})
			Expect(err).NotTo(HaveOccurred())

			first, ok, err := e.h.Store.AcquireReaperLeadership(context.Background())
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			_, ok, err = e.h.Store.AcquireReaperLeadership(context.Background())
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeFalse(), "one leader at a time")
			Expect(first.Check(context.Background())).To(Succeed())
			first.Release()

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				defer GinkgoRecover()
				cfg := config.RunnerAPI{ReaperInterval: config.Duration(50 * time.Millisecond), MaxLeaseAttempts: 5,
					LeaseDuration: config.Duration(30 * time.Second)}
				Expect(reaper.Run(ctx, e.h.Store, cfg, rpQuiet)).To(Succeed())
			}()
			DeferCleanup(func() { cancel(); <-done })
			e.expire(id)
			Eventually(func() any { return e.task(id)["status"] }, 5*time.Second, 50*time.Millisecond).Should(Equal("killed"))
		})
	})
})
