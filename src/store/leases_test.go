package store_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

var _ = Describe("Leases (store)", func() {
	ctx := context.Background()
	var (
		st        *store.Store
		db        *sql.DB
		tdb       *testsupport.Database
		projectID string
	)
	BeforeEach(func() {
		st, tdb = freshStore(testsupport.NewSealer())
		var err error
		db, err = tdb.SQL()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(db.Close)
		p, _, err := st.CreateProject(ctx, "leases")
		Expect(err).NotTo(HaveOccurred())
		projectID = p.ID
	})
	newCode := func(s store.CodeSettings) store.Code {
		s.Name = "lease-spec/" + store.NewID()
		s.Image = "img"
		c, err := st.SaveCode(ctx, projectID, store.CodeUpload{Settings: s})
		Expect(err).NotTo(HaveOccurred())
		return c
	}
	queue := func(name string, n int) []string {
		batch := make([]store.NewTask, n)
		for i := range batch {
			batch[i] = store.NewTask{CodeName: name, Timeout: 60}
		}
		ids, err := st.QueueTasks(ctx, projectID, batch)
		Expect(err).NotTo(HaveOccurred())
		return ids
	}
	lease := func(n int) []store.LeasedTask {
		ls, err := st.LeaseTasks(ctx, store.LeaseRequest{RunnerID: "r", MaxTasks: n, Duration: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		return ls
	}

	It("keeps max_concurrency under concurrent lease and complete churn", func() {
		capped := newCode(store.CodeSettings{MaxConcurrency: intPtr(2)})
		other := newCode(store.CodeSettings{MaxConcurrency: intPtr(3)})
		queue(capped.Name, 60)
		queue(other.Name, 60)

		var violations atomic.Int32
		var peak [2]atomic.Int32
		stop := make(chan struct{})
		var monitor sync.WaitGroup
		monitor.Add(1)
		go func() {
			defer monitor.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i, c := range []store.Code{capped, other} {
					var n int32
					if err := db.QueryRow(`SELECT count(*) FROM tasks WHERE code_id = $1 AND status IN ('preparing','running')`, c.ID).Scan(&n); err != nil {
						continue
					}
					if n > int32(*c.Revision.Settings.MaxConcurrency) {
						violations.Add(1)
					}
					if n > peak[i].Load() {
						peak[i].Store(n)
					}
				}
			}
		}()

		var done atomic.Int32
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer GinkgoRecover()
				for done.Load() < 120 {
					ls, err := st.LeaseTasks(ctx, store.LeaseRequest{RunnerID: "w", MaxTasks: 3, Duration: 30 * time.Second})
					Expect(err).NotTo(HaveOccurred())
					if len(ls) == 0 {
						time.Sleep(5 * time.Millisecond)
						continue
					}
					for _, l := range ls {
						_, err := st.CompleteTask(ctx, l.Task.ID, l.LeaseID, store.Completion{Status: "complete"})
						Expect(err).NotTo(HaveOccurred())
						done.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		monitor.Wait()
		Expect(violations.Load()).To(BeZero())
		Expect(peak[0].Load()).To(BeNumerically("<=", 2))
		Expect(peak[1].Load()).To(BeNumerically("<=", 3))
		var left int
		Expect(db.QueryRow(`SELECT count(*) FROM tasks WHERE status <> 'complete'`).Scan(&left)).To(Succeed())
		Expect(left).To(BeZero())
	})

	It("hands each queued task to one lease only", func() {
		code := newCode(store.CodeSettings{})
		queue(code.Name, 50)
		seen := sync.Map{}
		var dup atomic.Int32
		var total atomic.Int32
		var wg sync.WaitGroup
		for w := 0; w < 10; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer GinkgoRecover()
				// A call may come back short while other leases hold the rows it wanted;
				// the workers go on until everything is leased.
				for i := 0; i < 200 && total.Load() < 50; i++ {
					ls, err := st.LeaseTasks(ctx, store.LeaseRequest{RunnerID: "w", MaxTasks: 2, Duration: time.Minute})
					Expect(err).NotTo(HaveOccurred())
					for _, l := range ls {
						total.Add(1)
						if _, loaded := seen.LoadOrStore(l.Task.ID, true); loaded {
							dup.Add(1)
						}
					}
				}
			}()
		}
		wg.Wait()
		Expect(dup.Load()).To(BeZero())
		Expect(total.Load()).To(Equal(int32(50)))
	})

	It("keeps priority order past a paused code's backlog (the queue-head fallback)", func() {
		paused := newCode(store.CodeSettings{})
		backlog := make([]store.NewTask, 600)
		two, one := 2, 1
		for i := range backlog {
			backlog[i] = store.NewTask{CodeName: paused.Name, Timeout: 60, Priority: &two}
		}
		pausedIDs, err := st.QueueTasks(ctx, projectID, backlog)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.SetCodePaused(ctx, projectID, paused.ID, true)).To(Succeed())
		free := newCode(store.CodeSettings{})
		low, err := st.QueueTasks(ctx, projectID, []store.NewTask{{CodeName: free.Name, Timeout: 60, Priority: &one}})
		Expect(err).NotTo(HaveOccurred())
		high, err := st.QueueTasks(ctx, projectID, []store.NewTask{{CodeName: free.Name, Timeout: 60, Priority: &two}})
		Expect(err).NotTo(HaveOccurred())
		// The newest task of the paused code waits for adoption: it is leased anyway. It
		// lies beyond the fast path's scan (queueScanRows), so only the fallback finds it.
		adopt := pausedIDs[len(pausedIDs)-1]
		_, err = db.Exec(`UPDATE tasks SET backend_ref = 'diego:x', backend_adoptable = true, start_time = now() WHERE id = $1`, adopt)
		Expect(err).NotTo(HaveOccurred())

		var got []string
		for i := 0; i < 3; i++ {
			ls := lease(1)
			Expect(ls).To(HaveLen(1))
			got = append(got, ls[0].Task.ID)
		}
		Expect(got).To(ConsistOf(adopt, high[0], low[0]))
		Expect(got[2]).To(Equal(low[0]), "priority 1 after both priority 2 tasks")
		Expect(lease(5)).To(BeEmpty())
	})

	It("does not retry a task whose code was deleted", func() {
		code := newCode(store.CodeSettings{Retries: 3})
		queue(code.Name, 1)
		l := lease(1)[0]
		_, err := st.DeleteCode(ctx, projectID, code.ID)
		Expect(err).NotTo(HaveOccurred())
		res, err := st.CompleteTask(ctx, l.Task.ID, l.LeaseID, store.Completion{Status: "error", ExitCode: intPtr(1)})
		Expect(err).NotTo(HaveOccurred())
		Expect(res).To(Equal(store.CompleteResult{Status: "error"}))
	})

	It("sets the retry's run_at retries_delay later", func() {
		code := newCode(store.CodeSettings{Retries: 1, RetriesDelay: 600})
		queue(code.Name, 1)
		l := lease(1)[0]
		res, err := st.CompleteTask(ctx, l.Task.ID, l.LeaseID, store.Completion{Status: "timeout"})
		Expect(err).NotTo(HaveOccurred())
		retry, err := st.GetTask(ctx, projectID, res.RetryTaskID)
		Expect(err).NotTo(HaveOccurred())
		Expect(retry.RunAt.Sub(retry.CreatedAt)).To(Equal(600 * time.Second))
		Expect(retry.RetryCount).To(Equal(1))
		Expect(retry.OriginalTaskID).To(Equal(l.Task.ID))
		Expect(lease(1)).To(BeEmpty())
	})

	It("reports lease errors precisely", func() {
		code := newCode(store.CodeSettings{})
		queue(code.Name, 1)
		l := lease(1)[0]
		_, err := st.HeartbeatTask(ctx, store.NewID(), l.LeaseID, store.Heartbeat{}, time.Minute)
		Expect(errors.Is(err, store.ErrNotFound)).To(BeTrue())
		_, err = st.HeartbeatTask(ctx, l.Task.ID, "other", store.Heartbeat{}, time.Minute)
		Expect(errors.Is(err, store.ErrLeaseLost)).To(BeTrue())
		Expect(st.CancelTask(ctx, projectID, l.Task.ID)).To(Succeed())
		_, err = st.HeartbeatTask(ctx, l.Task.ID, l.LeaseID, store.Heartbeat{}, time.Minute)
		Expect(errors.Is(err, store.ErrTaskCancelled)).To(BeTrue())
		Expect(errors.Is(st.SetLeasedTaskProgress(ctx, l.Task.ID, l.LeaseID, intPtr(5), nil), store.ErrTaskCancelled)).To(BeTrue())
		_, err = st.CompleteTask(ctx, l.Task.ID, l.LeaseID, store.Completion{Status: "bogus"})
		Expect(err).To(HaveOccurred())
	})

	It("reaps in batches until nothing expired is left", func() {
		code := newCode(store.CodeSettings{})
		queue(code.Name, 7)
		lease(7)
		_, err := db.Exec(`UPDATE tasks SET lease_expires_at = now() - interval '1 second'`)
		Expect(err).NotTo(HaveOccurred())
		ev, err := st.ReapExpiredLeases(ctx, store.ReapOptions{BatchSize: 5})
		Expect(err).NotTo(HaveOccurred())
		Expect(ev).To(HaveLen(5))
		ev, err = st.ReapExpiredLeases(ctx, store.ReapOptions{BatchSize: 5})
		Expect(err).NotTo(HaveOccurred())
		Expect(ev).To(HaveLen(2))
		for _, e := range ev {
			Expect(e.Action).To(Equal(store.ReapRequeued))
		}
		Expect(lease(10)).To(HaveLen(7))
	})

	It("treats a running task without any lease as stale after StaleAfter", func() {
		code := newCode(store.CodeSettings{})
		id := queue(code.Name, 1)[0]
		_, err := db.Exec(`UPDATE tasks SET status = 'running', start_time = now(), updated_at = now() - interval '1 hour' WHERE id = $1`, id)
		Expect(err).NotTo(HaveOccurred())
		ev, err := st.ReapExpiredLeases(ctx, store.ReapOptions{StaleAfter: time.Minute})
		Expect(err).NotTo(HaveOccurred())
		Expect(ev).To(ConsistOf(store.ReapEvent{TaskID: id, ProjectID: projectID, Action: store.ReapKilled}))
	})

	It("wakes waiters on NOTIFY through the queue waker", func() {
		w := store.NewQueueWaker(tdb.URL, nil)
		DeferCleanup(w.Close)
		code := newCode(store.CodeSettings{})
		// The LISTEN is set up asynchronously: queue until a wake-up comes.
		Eventually(func() bool {
			ch := w.Wait()
			queue(code.Name, 1)
			select {
			case <-ch:
				return true
			case <-time.After(300 * time.Millisecond):
				return false
			}
		}, 10*time.Second).Should(BeTrue())
	})
})

func intPtr(v int) *int { return &v }
