package store_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/secrets"
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

	// listeningWaker starts a queue waker and, as it sets up its LISTEN asynchronously,
	// calls notify (something that notifies the queue) until a wake-up comes.
	listeningWaker := func(notify func()) *store.QueueWaker {
		w := store.NewQueueWaker(tdb.URL, nil)
		DeferCleanup(w.Close)
		Eventually(func() bool {
			ch := w.Wait()
			notify()
			select {
			case <-ch:
				return true
			case <-time.After(300 * time.Millisecond):
				return false
			}
		}, 10*time.Second).Should(BeTrue())
		return w
	}
	// watchPeaks runs count (active tasks of each capped thing) continuously until the
	// returned stop is called, which gives the peak of each and the samples taken.
	watchPeaks := func(count func() ([]int32, error)) (stop func() (peaks []int32, samples int)) {
		quit := make(chan struct{})
		result := make(chan []int32, 1)
		var n int
		go func() {
			var peaks []int32
			for {
				select {
				case <-quit:
					result <- peaks
					return
				default:
				}
				counts, err := count()
				if err != nil {
					continue
				}
				n++
				for i, c := range counts {
					if i == len(peaks) {
						peaks = append(peaks, 0)
					}
					peaks[i] = max(peaks[i], c)
				}
			}
		}()
		return func() ([]int32, int) {
			close(quit)
			peaks := <-result
			return peaks, n
		}
	}
	// churn runs workers that lease up to maxTasks at a time, hold them a while and
	// complete them, until total tasks are done.
	churn := func(workers, maxTasks int, total int32, hold time.Duration) {
		var done atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer GinkgoRecover()
				<-start
				for i := 0; i < 5000 && done.Load() < total; i++ {
					ls, err := st.LeaseTasks(ctx, store.LeaseRequest{RunnerID: "w", MaxTasks: maxTasks, Duration: 30 * time.Second})
					Expect(err).NotTo(HaveOccurred())
					if len(ls) == 0 {
						time.Sleep(2 * time.Millisecond)
						continue
					}
					time.Sleep(hold)
					for _, l := range ls {
						_, err := st.CompleteTask(ctx, l.Task.ID, l.LeaseID, store.Completion{Status: "complete"})
						Expect(err).NotTo(HaveOccurred())
						done.Add(1)
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		Expect(done.Load()).To(Equal(total))
		var left int
		Expect(db.QueryRow(`SELECT count(*) FROM tasks WHERE status <> 'complete'`).Scan(&left)).To(Succeed())
		Expect(left).To(BeZero())
	}

	It("keeps max_concurrency under concurrent lease and complete churn", func() {
		capped := newCode(store.CodeSettings{MaxConcurrency: intPtr(2)})
		other := newCode(store.CodeSettings{MaxConcurrency: intPtr(3)})
		queue(capped.Name, 60)
		queue(other.Name, 60)

		stop := watchPeaks(func() ([]int32, error) {
			var a, b int32
			err := db.QueryRow(`SELECT count(*) FILTER (WHERE code_id = $1), count(*) FILTER (WHERE code_id = $2)
				FROM tasks WHERE status IN ('preparing','running')`, capped.ID, other.ID).Scan(&a, &b)
			return []int32{a, b}, err
		})
		churn(8, 3, 120, 0)
		peaks, _ := stop()
		Expect(peaks).To(HaveLen(2))
		Expect(peaks[0]).To(BeNumerically("<=", 2))
		Expect(peaks[1]).To(BeNumerically("<=", 3))
	})

	Describe("a project's max_concurrency (plan quota)", func() {
		setProjectCap := func(id string, n int) {
			_, err := db.Exec(`UPDATE projects SET max_concurrency = $2 WHERE id = $1`, id, n)
			Expect(err).NotTo(HaveOccurred())
		}

		It("counts the project's active tasks across its codes, and leaves other projects alone", func() {
			setProjectCap(projectID, 2)
			a, b := newCode(store.CodeSettings{}), newCode(store.CodeSettings{MaxConcurrency: intPtr(5)})
			queue(a.Name, 3)
			queue(b.Name, 3)
			other, _, err := st.CreateProject(ctx, "uncapped")
			Expect(err).NotTo(HaveOccurred())
			_, err = st.SaveCode(ctx, other.ID, store.CodeUpload{Settings: store.CodeSettings{Name: "free", Image: "img"}})
			Expect(err).NotTo(HaveOccurred())
			_, err = st.QueueTasks(ctx, other.ID, []store.NewTask{{CodeName: "free", Timeout: 60}, {CodeName: "free", Timeout: 60}})
			Expect(err).NotTo(HaveOccurred())

			perProject := func(ls []store.LeasedTask) map[string]int {
				m := map[string]int{}
				for _, l := range ls {
					m[l.Task.ProjectID]++
				}
				return m
			}
			first := lease(10)
			Expect(perProject(first)).To(Equal(map[string]int{projectID: 2, other.ID: 2}))
			Expect(lease(10)).To(BeEmpty(), "the project is full")

			// A task queued for adoption counts, and is leased although the project is full.
			var mine []store.LeasedTask
			for _, l := range first {
				if l.Task.ProjectID == projectID {
					mine = append(mine, l)
				}
			}
			_, err = st.CompleteTask(ctx, mine[0].Task.ID, mine[0].LeaseID, store.Completion{Status: "complete"})
			Expect(err).NotTo(HaveOccurred())
			_, err = db.Exec(`UPDATE tasks SET status = 'queued', lease_id = NULL, lease_expires_at = NULL, backend_ref = 'diego:x',
				backend_adoptable = true, start_time = now() WHERE id = $1`, mine[1].Task.ID)
			Expect(err).NotTo(HaveOccurred())
			again := lease(10)
			Expect(again).To(HaveLen(2), "one adopted and one new, within the cap of 2")
			Expect(lease(10)).To(BeEmpty())

			Expect(st.CancelTask(ctx, projectID, again[0].Task.ID)).To(Succeed())
			Expect(lease(10)).To(HaveLen(1))
		})

		It("leases past a full project's backlog (the queue-head fallback) and excludes the project", func() {
			setProjectCap(projectID, 1)
			busy := newCode(store.CodeSettings{})
			two := 2
			backlog := make([]store.NewTask, 600)
			for i := range backlog {
				backlog[i] = store.NewTask{CodeName: busy.Name, Timeout: 60, Priority: &two}
			}
			_, err := st.QueueTasks(ctx, projectID, backlog)
			Expect(err).NotTo(HaveOccurred())
			Expect(lease(1)).To(HaveLen(1), "the project's one slot")

			other, _, err := st.CreateProject(ctx, "behind the backlog")
			Expect(err).NotTo(HaveOccurred())
			_, err = st.SaveCode(ctx, other.ID, store.CodeUpload{Settings: store.CodeSettings{Name: "free", Image: "img"}})
			Expect(err).NotTo(HaveOccurred())
			want, err := st.QueueTasks(ctx, other.ID, []store.NewTask{{CodeName: "free", Timeout: 60, Priority: &two}})
			Expect(err).NotTo(HaveOccurred())
			ls := lease(5)
			Expect(ls).To(HaveLen(1))
			Expect(ls[0].Task.ID).To(Equal(want[0]))
			Expect(lease(5)).To(BeEmpty())
		})

		It("never exceeds it under 20 concurrent lease calls across several codes", func() {
			setProjectCap(projectID, 3)
			codes := []store.Code{
				newCode(store.CodeSettings{}),
				newCode(store.CodeSettings{MaxConcurrency: intPtr(2)}),
				newCode(store.CodeSettings{MaxConcurrency: intPtr(10)}),
				newCode(store.CodeSettings{}),
			}
			const perCode = 20
			for _, c := range codes {
				queue(c.Name, perCode)
			}
			total := int32(perCode * len(codes))

			stop := watchPeaks(func() ([]int32, error) {
				var n int32
				err := db.QueryRow(`SELECT count(*) FROM tasks WHERE project_id = $1
					AND (status IN ('preparing','running') OR (status = 'queued' AND backend_ref IS NOT NULL))`, projectID).Scan(&n)
				return []int32{n}, err
			})
			churn(20, 2, total, time.Millisecond) // hold a little, so that leases overlap
			peaks, samples := stop()
			GinkgoWriter.Printf("samples %d peaks %v\n", samples, peaks)
			Expect(samples).To(BeNumerically(">", 10))
			Expect(peaks).To(HaveLen(1))
			Expect(peaks[0]).To(BeNumerically("<=", 3), "never beyond the cap")
			Expect(peaks[0]).To(BeNumerically(">=", 2), "the workers do run the project's tasks side by side")
		})
	})

	It("wakes a waiting lease within 1 s when a cancel frees a full code's slot", func() {
		resumed := newCode(store.CodeSettings{})
		w := listeningWaker(func() { Expect(st.SetCodePaused(ctx, projectID, resumed.ID, false)).To(Succeed()) })

		// waitingLease is a lease long-poll: it leases, and waits for a wake-up when
		// nothing is leasable.
		waitingLease := func() <-chan []store.LeasedTask {
			got := make(chan []store.LeasedTask, 1)
			ch := w.Wait()
			Expect(lease(1)).To(BeEmpty(), "the code is full")
			go func() {
				defer GinkgoRecover()
				select {
				case <-ch:
					got <- lease(1)
				case <-time.After(5 * time.Second):
					got <- nil
				}
			}()
			return got
		}

		full := newCode(store.CodeSettings{MaxConcurrency: intPtr(1)})
		ids := queue(full.Name, 2)
		Expect(lease(1)).To(HaveLen(1))
		got := waitingLease()
		Expect(st.CancelTask(ctx, projectID, ids[0])).To(Succeed())
		var ls []store.LeasedTask
		Eventually(got, time.Second).Should(Receive(&ls))
		Expect(ls).To(HaveLen(1))
		Expect(ls[0].Task.ID).To(Equal(ids[1]))

		// cancel_all and delete notify too.
		for _, end := range []func(store.Code) error{
			func(c store.Code) error { _, err := st.CancelCodeTasks(ctx, projectID, c.ID); return err },
			func(c store.Code) error { _, err := st.DeleteCode(ctx, projectID, c.ID); return err },
		} {
			c := newCode(store.CodeSettings{MaxConcurrency: intPtr(1)})
			queue(c.Name, 2)
			Expect(lease(1)).To(HaveLen(1))
			ch := w.Wait()
			Expect(end(c)).To(Succeed())
			Eventually(ch, time.Second).Should(BeClosed())
		}
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

	It("leaves no task queued for a code deleted while tasks are being queued for it", func() {
		for round := 0; round < 10; round++ {
			code := newCode(store.CodeSettings{})
			var wg sync.WaitGroup
			var queued atomic.Int32
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer GinkgoRecover()
					batch := make([]store.NewTask, 1+9*(w%2)) // the one-task and the batch statement
					for i := range batch {
						batch[i] = store.NewTask{CodeName: code.Name, Timeout: 60}
					}
					for i := 0; i < 500; i++ {
						_, err := st.QueueTasks(ctx, projectID, batch)
						var notFound *store.ErrCodeNotFound
						if errors.As(err, &notFound) {
							return
						}
						Expect(err).NotTo(HaveOccurred())
						queued.Add(1)
					}
				}()
			}
			Eventually(queued.Load).Should(BeNumerically(">=", 8))
			_, err := st.DeleteCode(ctx, projectID, code.ID)
			Expect(err).NotTo(HaveOccurred())
			wg.Wait()
			var left int
			Expect(db.QueryRow(`SELECT count(*) FROM tasks WHERE code_id = $1 AND status = 'queued'`, code.ID).Scan(&left)).To(Succeed())
			Expect(left).To(BeZero(), "round %d: tasks queued for the deleted code", round)
		}
	})

	It("does not retry a task completed with no_retry (the code itself cannot run)", func() {
		code := newCode(store.CodeSettings{Retries: 3})
		queue(code.Name, 1)
		l := lease(1)[0]
		res, err := st.CompleteTask(ctx, l.Task.ID, l.LeaseID, store.Completion{Status: "error", Msg: "bad zip", NoRetry: true})
		Expect(err).NotTo(HaveOccurred())
		Expect(res).To(Equal(store.CompleteResult{Status: "error"}))
		Expect(lease(1)).To(BeEmpty())
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
		code := newCode(store.CodeSettings{})
		listeningWaker(func() { queue(code.Name, 1) })
	})

	It("wakes its own process's waiters at commit, before and without any NOTIFY", func() {
		code := newCode(store.CodeSettings{})
		Expect(st.SetCodePaused(ctx, projectID, code.ID, true)).To(Succeed())
		// A waker that never gets its LISTEN up: only the in-process wake can reach it.
		w := store.NewQueueWaker("postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1", nil)
		DeferCleanup(w.Close)
		st.WakeLocally(w)
		DeferCleanup(func() { st.OnQueued(nil) })
		ch := w.Wait()
		Consistently(ch, 200*time.Millisecond).ShouldNot(BeClosed())
		Expect(st.SetCodePaused(ctx, projectID, code.ID, false)).To(Succeed()) // a resume wakes lease long-polls
		Expect(ch).To(BeClosed())
	})

	It("does not take its own NOTIFYs as a second wake-up, but wakes on another process's", func() {
		code := newCode(store.CodeSettings{})
		other, err := store.Open(ctx, tdb.URL, testsupport.NewSealer(), store.Options{MaxOpenConns: 2})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(other.Close)
		resume := func(s *store.Store) {
			Expect(s.SetCodePaused(ctx, projectID, code.ID, true)).To(Succeed())
			Expect(s.SetCodePaused(ctx, projectID, code.ID, false)).To(Succeed())
		}
		w := listeningWaker(func() { resume(other) })
		st.WakeLocally(w)
		DeferCleanup(func() { st.OnQueued(nil) })

		ch := w.Wait()
		resume(st)
		Expect(ch).To(BeClosed()) // at commit
		echo := w.Wait()
		Consistently(echo, 500*time.Millisecond).ShouldNot(BeClosed()) // st's NOTIFY came back and was ignored

		resume(other)
		Eventually(echo, 5*time.Second).Should(BeClosed())
	})
})

var _ = Describe("Leases of a code revision whose secrets cannot be decrypted", func() {
	It("ends such tasks error, naming the missing key, and leases the others", func() {
		ctx := context.Background()
		key := func() []byte {
			k := make([]byte, 32)
			_, _ = rand.Read(k)
			return k
		}
		old, err := secrets.New("k1", []secrets.Key{{Label: "k1", Secret: key()}})
		Expect(err).NotTo(HaveOccurred())
		st, tdb := freshStore(old)
		p, _, err := st.CreateProject(ctx, "sealed")
		Expect(err).NotTo(HaveOccurred())
		config := "api_key: s3cret-config"
		_, err = st.SaveCode(ctx, p.ID, store.CodeUpload{Settings: store.CodeSettings{
			Name: "sealed", Image: "img", Retries: 2, Config: &config, EnvVars: map[string]string{"TOKEN": "s3cret-env"}}})
		Expect(err).NotTo(HaveOccurred())
		_, err = st.SaveCode(ctx, p.ID, store.CodeUpload{Settings: store.CodeSettings{
			Name: "plain", Image: "img"}})
		Expect(err).NotTo(HaveOccurred())
		// The sealed code's tasks are older: a lease meets them first.
		bad, err := st.QueueTasks(ctx, p.ID, []store.NewTask{{CodeName: "sealed", Timeout: 60}, {CodeName: "sealed", Timeout: 60}})
		Expect(err).NotTo(HaveOccurred())
		good, err := st.QueueTasks(ctx, p.ID, []store.NewTask{{CodeName: "plain", Timeout: 60}})
		Expect(err).NotTo(HaveOccurred())

		// k1 is no longer configured.
		onlyNew, err := secrets.New("k2", []secrets.Key{{Label: "k2", Secret: key()}})
		Expect(err).NotTo(HaveOccurred())
		st2, err := store.Open(ctx, tdb.URL, onlyNew, store.Options{})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(st2.Close)

		ls, err := st2.LeaseTasks(ctx, store.LeaseRequest{RunnerID: "r", MaxTasks: 1, Duration: time.Minute})
		Expect(err).NotTo(HaveOccurred())
		Expect(ls).To(HaveLen(1))
		Expect(ls[0].Task.ID).To(Equal(good[0]))
		for _, id := range bad {
			t, err := st2.GetTask(ctx, p.ID, id)
			Expect(err).NotTo(HaveOccurred())
			Expect(t.Status).To(Equal("error"))
			Expect(t.Msg).To(Equal("code revision secrets cannot be decrypted: key k1 is not configured"))
			Expect(t.RetryTaskID).To(BeEmpty())
		}
		ls, err = st2.LeaseTasks(ctx, store.LeaseRequest{RunnerID: "r", MaxTasks: 5, Duration: time.Minute})
		Expect(err).NotTo(HaveOccurred())
		Expect(ls).To(BeEmpty())
	})
})

func intPtr(v int) *int { return &v }
