package store_test

import (
	"context"
	"errors"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

var _ = Describe("queueing tasks (QueueTasksOnce: one statement per batch)", func() {
	var (
		st  *store.Store
		db  *testsupport.Database
		ctx context.Context
	)
	intp := func(i int) *int { return &i }

	BeforeEach(func() {
		st, db = freshStore(testsupport.NewSealer())
		ctx = context.Background()
	})

	// instance makes a broker project with quotas q and a code "worker" (default
	// priority defPrio, nil = none).
	instance := func(q store.Quotas, defPrio *int) string {
		GinkgoHelper()
		in, created, err := st.ProvisionInstance(ctx, store.NewInstance{ID: "inst-" + store.NewID(), ServiceID: "svc",
			PlanID: "plan", OrganizationGUID: "org", SpaceGUID: "space", ProjectName: "queue spec", Quotas: q})
		Expect(err).NotTo(HaveOccurred())
		Expect(created).To(BeTrue())
		_, err = st.SaveCode(ctx, in.ProjectID, store.CodeUpload{Settings: store.CodeSettings{Name: "worker", Image: "img", DefaultPriority: defPrio}})
		Expect(err).NotTo(HaveOccurred())
		return in.ProjectID
	}
	countTasks := func(projectID string) int {
		GinkgoHelper()
		tasks, err := st.ListTasks(ctx, projectID, store.TaskFilter{Limit: 100})
		Expect(err).NotTo(HaveOccurred())
		return len(tasks)
	}

	It("inserts a batch in order with each task's fields, priorities and the code's default priority", func() {
		p, _, err := st.CreateProject(ctx, "batch")
		Expect(err).NotTo(HaveOccurred())
		_, err = st.SaveCode(ctx, p.ID, store.CodeUpload{Settings: store.CodeSettings{Name: "urgent", Image: "img", DefaultPriority: intp(2)}})
		Expect(err).NotTo(HaveOccurred())
		_, err = st.SaveCode(ctx, p.ID, store.CodeUpload{Settings: store.CodeSettings{Name: "plain", Image: "img"}})
		Expect(err).NotTo(HaveOccurred())
		batch := []store.NewTask{
			{CodeName: "urgent", Payload: `{"n":0}`, Timeout: 60},
			{CodeName: "plain", Payload: "one", Priority: intp(1), Timeout: 70, Cluster: "gpu", Label: "l1"},
			{CodeName: "urgent", Payload: "two", Priority: intp(0), Timeout: 80, Delay: 30},
			{CodeName: "plain", Payload: `it's "quoted" \ and {braces}, ünïcode`, Timeout: 90},
			{CodeName: "urgent", Payload: "", Priority: intp(7), Timeout: 100},
		}
		ids, err := st.QueueTasks(ctx, p.ID, batch)
		Expect(err).NotTo(HaveOccurred())
		Expect(ids).To(HaveLen(len(batch)))
		wantPrio := []int{2, 1, 0, 0, 2}
		var prev time.Time
		for i, id := range ids {
			t, err := st.GetTask(ctx, p.ID, id)
			Expect(err).NotTo(HaveOccurred())
			Expect(t.Status).To(Equal("queued"))
			Expect(t.CodeName).To(Equal(batch[i].CodeName))
			Expect(t.Payload).To(Equal(batch[i].Payload))
			Expect(t.Priority).To(Equal(wantPrio[i]), "task %d", i)
			Expect(t.Timeout).To(Equal(batch[i].Timeout))
			Expect(t.Delay).To(Equal(batch[i].Delay))
			Expect(t.Label).To(Equal(batch[i].Label))
			if batch[i].Cluster == "" {
				Expect(t.Cluster).To(Equal("default"))
			} else {
				Expect(t.Cluster).To(Equal(batch[i].Cluster))
			}
			Expect(t.RunAt).To(Equal(t.CreatedAt.Add(time.Duration(batch[i].Delay) * time.Second)))
			Expect(t.CreatedAt.After(prev)).To(BeTrue(), "task %d is created after task %d", i, i-1)
			prev = t.CreatedAt
		}
		// Newest first: the batch's order reversed.
		list, err := st.ListTasks(ctx, p.ID, store.TaskFilter{Limit: 10})
		Expect(err).NotTo(HaveOccurred())
		Expect(list).To(HaveLen(len(ids)))
		for i, t := range list {
			Expect(t.ID).To(Equal(ids[len(ids)-1-i]))
		}
	})

	It("queues none of a batch that names a code the project does not have", func() {
		p := instance(store.Quotas{}, nil)
		_, err := st.QueueTasks(ctx, p, []store.NewTask{{CodeName: "worker"}, {CodeName: "nope"}, {CodeName: "worker"}, {CodeName: "gone"}})
		var cnf *store.ErrCodeNotFound
		Expect(errors.As(err, &cnf)).To(BeTrue(), "%v", err)
		Expect(cnf.Name).To(Equal("nope"), "the first missing code in batch order")
		Expect(countTasks(p)).To(BeZero())

		// A code of another project is not found either.
		other := instance(store.Quotas{}, nil)
		_, err = st.SaveCode(ctx, other, store.CodeUpload{Settings: store.CodeSettings{Name: "theirs", Image: "img"}})
		Expect(err).NotTo(HaveOccurred())
		_, err = st.QueueTasks(ctx, p, []store.NewTask{{CodeName: "theirs"}})
		Expect(errors.As(err, &cnf)).To(BeTrue(), "%v", err)
	})

	It("refuses a disabled (deprovisioned) project with ErrNotFound, with or without quotas or key", func() {
		for _, q := range []store.Quotas{{}, {MaxQueuedTasks: intp(5)}} {
			in, _, err := st.ProvisionInstance(ctx, store.NewInstance{ID: "inst-" + store.NewID(), ServiceID: "svc",
				PlanID: "plan", OrganizationGUID: "org", SpaceGUID: "space", ProjectName: "gone", Quotas: q})
			Expect(err).NotTo(HaveOccurred())
			_, err = st.SaveCode(ctx, in.ProjectID, store.CodeUpload{Settings: store.CodeSettings{Name: "worker", Image: "img"}})
			Expect(err).NotTo(HaveOccurred())
			_, err = st.DeprovisionInstance(ctx, in.ID)
			Expect(err).NotTo(HaveOccurred())
			_, err = st.QueueTasks(ctx, in.ProjectID, []store.NewTask{{CodeName: "worker"}})
			Expect(err).To(MatchError(store.ErrNotFound))
			_, _, err = st.QueueTasksOnce(ctx, in.ProjectID, &store.Idempotency{Key: "k", Route: "tasks", RequestHash: []byte{1}},
				[]store.NewTask{{CodeName: "worker"}})
			Expect(err).To(MatchError(store.ErrNotFound))
			Expect(countTasks(in.ProjectID)).To(BeZero())
		}
	})

	It("runs a priority the plan does not allow at 0, the code's default priority included", func() {
		p := instance(store.Quotas{AllowedPriorities: []int{0, 1}}, intp(2))
		ids, err := st.QueueTasks(ctx, p, []store.NewTask{{CodeName: "worker"}, {CodeName: "worker", Priority: intp(2)},
			{CodeName: "worker", Priority: intp(1)}})
		Expect(err).NotTo(HaveOccurred())
		for i, want := range []int{0, 0, 1} {
			t, err := st.GetTask(ctx, p, ids[i])
			Expect(err).NotTo(HaveOccurred())
			Expect(t.Priority).To(Equal(want), "task %d", i)
		}
	})

	It("counts max_queued_tasks up to the boundary, a batch all or none, with or without a key", func() {
		p := instance(store.Quotas{MaxQueuedTasks: intp(3)}, nil)
		_, err := st.QueueTasks(ctx, p, []store.NewTask{{CodeName: "worker"}, {CodeName: "worker"}, {CodeName: "worker"}, {CodeName: "worker"}})
		var qe *store.QuotaError
		Expect(errors.As(err, &qe)).To(BeTrue(), "%v", err)
		Expect(*qe).To(Equal(store.QuotaError{Limit: "max_queued_tasks", Max: 3, Current: 0, Adding: 4}))
		Expect(countTasks(p)).To(BeZero())

		_, err = st.QueueTasks(ctx, p, []store.NewTask{{CodeName: "worker"}, {CodeName: "worker"}})
		Expect(err).NotTo(HaveOccurred())
		_, replay, err := st.QueueTasksOnce(ctx, p, &store.Idempotency{Key: "third", Route: "tasks", RequestHash: []byte{3}},
			[]store.NewTask{{CodeName: "worker"}})
		Expect(err).NotTo(HaveOccurred())
		Expect(replay).To(BeFalse())
		Expect(countTasks(p)).To(Equal(3))

		_, err = st.QueueTasks(ctx, p, []store.NewTask{{CodeName: "worker"}})
		Expect(errors.As(err, &qe)).To(BeTrue(), "%v", err)
		Expect(*qe).To(Equal(store.QuotaError{Limit: "max_queued_tasks", Max: 3, Current: 3, Adding: 1}))
		_, _, err = st.QueueTasksOnce(ctx, p, &store.Idempotency{Key: "fourth", Route: "tasks", RequestHash: []byte{4}},
			[]store.NewTask{{CodeName: "worker"}})
		Expect(errors.As(err, &qe)).To(BeTrue(), "%v", err)
		// The refused request did not use up its key.
		_, _, err = st.QueueTasksOnce(ctx, p, &store.Idempotency{Key: "fourth", Route: "tasks", RequestHash: []byte{5}},
			[]store.NewTask{{CodeName: "worker"}})
		Expect(errors.As(err, &qe)).To(BeTrue(), "%v", err)
		Expect(countTasks(p)).To(Equal(3))

		// The quota error comes before a missing code, as the quota is checked first.
		_, err = st.QueueTasks(ctx, p, []store.NewTask{{CodeName: "nope"}})
		Expect(errors.As(err, &qe)).To(BeTrue(), "%v", err)
	})

	It("counts concurrent batches of a project with max_queued_tasks one after the other", func() {
		p := instance(store.Quotas{MaxQueuedTasks: intp(10)}, nil)
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				_, err := st.QueueTasks(ctx, p, []store.NewTask{{CodeName: "worker"}, {CodeName: "worker"}, {CodeName: "worker"}})
				var qe *store.QuotaError
				if err != nil {
					Expect(errors.As(err, &qe)).To(BeTrue(), "%v", err)
					return
				}
				mu.Lock()
				ok++
				mu.Unlock()
			}()
		}
		wg.Wait()
		Expect(ok).To(Equal(3))
		Expect(countTasks(p)).To(Equal(9))
	})

	It("replays a request under the same idempotency key and refuses another under it", func() {
		p := instance(store.Quotas{}, nil)
		idem := &store.Idempotency{Key: "k1", Route: "tasks", RequestHash: []byte("body")}
		ids, replay, err := st.QueueTasksOnce(ctx, p, idem, []store.NewTask{{CodeName: "worker"}, {CodeName: "worker"}})
		Expect(err).NotTo(HaveOccurred())
		Expect(replay).To(BeFalse())
		again, replay, err := st.QueueTasksOnce(ctx, p, idem, []store.NewTask{{CodeName: "worker"}, {CodeName: "worker"}})
		Expect(err).NotTo(HaveOccurred())
		Expect(replay).To(BeTrue())
		Expect(again).To(Equal(ids))
		_, _, err = st.QueueTasksOnce(ctx, p, &store.Idempotency{Key: "k1", Route: "tasks", RequestHash: []byte("other")},
			[]store.NewTask{{CodeName: "worker"}})
		Expect(err).To(MatchError(store.ErrIdempotencyMismatch))
		Expect(countTasks(p)).To(Equal(2))
	})

	It("queues a checked batch only while the project has the quotas it was checked against", func() {
		p := instance(store.Quotas{MaxPayloadBytes: intp(100), MaxTimeoutSeconds: intp(60)}, nil)
		q, err := st.ProjectQuotas(ctx, p)
		Expect(err).NotTo(HaveOccurred())
		_, _, err = st.QueueTasksChecked(ctx, p, nil, []store.NewTask{{CodeName: "worker"}}, &q)
		Expect(err).NotTo(HaveOccurred())

		for _, stale := range []store.Quotas{{MaxPayloadBytes: intp(100)}, {MaxPayloadBytes: intp(200), MaxTimeoutSeconds: intp(60)}, {}} {
			_, _, err = st.QueueTasksChecked(ctx, p, nil, []store.NewTask{{CodeName: "worker"}}, &stale)
			Expect(err).To(MatchError(store.ErrQuotasChanged))
			_, _, err = st.QueueTasksChecked(ctx, p, &store.Idempotency{Key: "k" + store.NewID(), Route: "tasks", RequestHash: []byte{1}},
				[]store.NewTask{{CodeName: "worker"}}, &stale)
			Expect(err).To(MatchError(store.ErrQuotasChanged))
		}
		Expect(countTasks(p)).To(Equal(1))

		// No limits on either side: the same.
		open := instance(store.Quotas{}, nil)
		_, _, err = st.QueueTasksChecked(ctx, open, nil, []store.NewTask{{CodeName: "worker"}}, &store.Quotas{})
		Expect(err).NotTo(HaveOccurred())
	})

	DescribeTable("never leaves a queued task of a code deleted while the batch is queued", func(n int) {
		p := instance(store.Quotas{}, nil)
		code, err := st.GetCodeByName(ctx, p, "worker")
		Expect(err).NotTo(HaveOccurred())
		conn, err := db.SQL()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)

		// A delete of the code is under way (DeleteCode's lock taken, its row updated,
		// not yet committed): the batch waits for it, then finds no code.
		tx, err := conn.Begin()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _ = tx.Rollback() }) // after a failure: free the batch and the pool
		_, err = tx.Exec(`SELECT pg_advisory_xact_lock(hashtextextended('code-delete/' || $1::text, 0))`, code.ID)
		Expect(err).NotTo(HaveOccurred())
		_, err = tx.Exec(`UPDATE codes SET deleted_at = now() WHERE id = $1`, code.ID)
		Expect(err).NotTo(HaveOccurred())
		done := make(chan error, 1)
		batch := make([]store.NewTask, n)
		for i := range batch {
			batch[i] = store.NewTask{CodeName: "worker"}
		}
		go func() { _, err := st.QueueTasks(ctx, p, batch); done <- err }()
		Eventually(func() int {
			var n int
			Expect(conn.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n)).To(Succeed())
			return n
		}).Should(Equal(1))
		Consistently(done, 200*time.Millisecond).ShouldNot(Receive())
		Expect(tx.Commit()).To(Succeed())
		var got error
		Eventually(done).Should(Receive(&got))
		var cnf *store.ErrCodeNotFound
		Expect(errors.As(got, &cnf)).To(BeTrue(), "%v", got)
		Expect(countTasks(p)).To(BeZero())
	},
		Entry("one task (queueOneSQL)", 1),
		Entry("a batch (queueBatchSQL)", 3),
	)
})
