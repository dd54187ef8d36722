package store_test

import (
	"context"
	"database/sql"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

// The set-based firing (one INSERT of a batch's tasks, one UPDATE of its schedules);
// the scheduling semantics themselves are specified in src/scheduler.
var _ = Describe("FireDueSchedules (set-based batches)", func() {
	ctx := context.Background()
	var (
		st  *store.Store
		db  *sql.DB
		pid string
		t0  time.Time
	)
	BeforeEach(func() {
		var tdb *testsupport.Database
		st, tdb = freshStore(testsupport.NewSealer())
		var err error
		db, err = tdb.SQL()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(db.Close)
		pid = newScheduleProject(st)
		t0 = time.Now().UTC().Truncate(time.Second)
	})

	create := func(projectID string, batch ...store.NewSchedule) []string {
		GinkgoHelper()
		ids, err := st.CreateSchedules(ctx, projectID, batch, t0)
		Expect(err).NotTo(HaveOccurred())
		return ids
	}
	fire := func(now time.Time, batchSize int) map[string]store.FireEvent {
		GinkgoHelper()
		events, err := st.FireDueSchedules(ctx, now, batchSize)
		Expect(err).NotTo(HaveOccurred())
		out := map[string]store.FireEvent{}
		for _, ev := range events {
			Expect(out).NotTo(HaveKey(ev.ScheduleID), "one event per schedule per call")
			out[ev.ScheduleID] = ev
		}
		return out
	}

	It("fires a backlog of many batches exactly once, each task as QueueTasks would write it", func() {
		const n = 230
		batch := make([]store.NewSchedule, n)
		for i := range batch {
			batch[i] = store.NewSchedule{CodeName: "hello", Payload: `{"i":1}`, StartAt: t0.Add(-time.Duration(i) * time.Millisecond),
				RunEvery: 60, Timeout: 90, TaskDelay: i % 3, Label: "l", Cluster: "c"}
		}
		ids := create(pid, batch...)
		events := fire(t0, 17)
		Expect(events).To(HaveLen(n))
		for _, id := range ids {
			Expect(events[id].TaskID).To(MatchRegexp(`^[0-9a-f]{24}$`))
			Expect(events[id].Status).To(Equal("scheduled"))
		}
		var tasks, schedules, odd int
		Expect(db.QueryRow(`SELECT count(*) FROM tasks WHERE schedule_id IS NOT NULL`).Scan(&tasks)).To(Succeed())
		Expect(db.QueryRow(`SELECT count(*) FROM schedules WHERE run_count = 1 AND last_run_time = $1
			AND next_start = start_at + interval '60 seconds'`, t0).Scan(&schedules)).To(Succeed())
		Expect(db.QueryRow(`SELECT count(*) FROM tasks WHERE created_at <> updated_at
			OR run_at <> created_at + delay * interval '1 second' OR status <> 'queued' OR priority <> 2`).Scan(&odd)).To(Succeed())
		Expect([]int{tasks, schedules, odd}).To(Equal([]int{n, n, 0}))
		Expect(fire(t0, 17)).To(BeEmpty())

		// A task of the same code queued by QueueTasks has the same code columns.
		queued, err := st.QueueTasks(ctx, pid, []store.NewTask{{CodeName: "hello", Timeout: 90}})
		Expect(err).NotTo(HaveOccurred())
		want, err := st.GetTask(ctx, pid, queued[0])
		Expect(err).NotTo(HaveOccurred())
		got, err := st.GetTask(ctx, pid, events[ids[5]].TaskID)
		Expect(err).NotTo(HaveOccurred())
		Expect([]any{got.CodeID, got.CodeName, got.CodeRevisionID, got.CodeRev, got.Priority, got.Timeout, got.RetryCount}).
			To(Equal([]any{want.CodeID, want.CodeName, want.CodeRevisionID, want.CodeRev, want.Priority, want.Timeout, want.RetryCount}))
		Expect([]any{got.Payload, got.Label, got.Cluster, got.Delay, got.ScheduleID, *got.ScheduledFor}).
			To(Equal([]any{`{"i":1}`, "l", "c", 5 % 3, ids[5], t0.Add(-5 * time.Millisecond)}))
	})

	It("gives the tasks of one batch increasing created_at in due order, as insertTask does within a transaction", func() {
		batch := make([]store.NewSchedule, 50)
		for i := range batch {
			batch[i] = store.NewSchedule{CodeName: "hello", StartAt: t0.Add(-time.Minute + time.Duration(i)*time.Second), RunEvery: 60, Timeout: 60}
		}
		create(pid, batch...)
		Expect(fire(t0, 100)).To(HaveLen(50))
		rows, err := db.Query(`SELECT created_at FROM tasks ORDER BY scheduled_for`)
		Expect(err).NotTo(HaveOccurred())
		defer rows.Close()
		var prev time.Time
		for rows.Next() {
			var at time.Time
			Expect(rows.Scan(&at)).To(Succeed())
			Expect(at.After(prev)).To(BeTrue())
			prev = at
		}
		Expect(rows.Err()).NotTo(HaveOccurred())
	})

	It("applies the project's allowed priorities as insertTask does", func() {
		_, err := db.Exec(`UPDATE projects SET allowed_priorities = '{0,1}' WHERE id = $1`, pid)
		Expect(err).NotTo(HaveOccurred())
		ids := create(pid,
			store.NewSchedule{CodeName: "hello", StartAt: t0, RunEvery: 60, Timeout: 60},                          // the code's 2: not allowed
			store.NewSchedule{CodeName: "hello", StartAt: t0, RunEvery: 60, Timeout: 60, Priority: fireIntPtr(1)}) // allowed
		events := fire(t0, 100)
		prio := func(id string) int {
			t, err := st.GetTask(ctx, pid, events[id].TaskID)
			Expect(err).NotTo(HaveOccurred())
			return t.Priority
		}
		Expect([]int{prio(ids[0]), prio(ids[1])}).To(Equal([]int{0, 1}))
	})

	It("skips a disabled project's schedule with a problem, firing the rest of the batch", func() {
		other := newScheduleProject(st)
		live := create(pid, store.NewSchedule{CodeName: "hello", StartAt: t0, RunEvery: 60, Timeout: 60})[0]
		gone := create(other, store.NewSchedule{CodeName: "hello", StartAt: t0, RunEvery: 60, Timeout: 60})[0]
		_, err := db.Exec(`UPDATE projects SET deleted_at = now() WHERE id = $1`, other)
		Expect(err).NotTo(HaveOccurred())

		events := fire(t0, 100)
		Expect(events[live].TaskID).NotTo(BeEmpty())
		Expect(events[gone].TaskID).To(BeEmpty())
		Expect(events[gone].Problem).To(ContainSubstring("disabled"))
		s, err := st.GetSchedule(ctx, other, gone)
		Expect(err).NotTo(HaveOccurred())
		Expect([]int{s.RunCount, s.ErrorCount}).To(Equal([]int{0, 1}))
		Expect(*s.NextStart).To(Equal(t0.Add(time.Minute)))
	})

	It("handles every case in one batch: fired, already fired, code gone, past end_at", func() {
		_, err := st.SaveCode(ctx, pid, store.CodeUpload{Settings: store.CodeSettings{Name: "doomed", Image: "busybox"}})
		Expect(err).NotTo(HaveOccurred())
		end := t0.Add(30 * time.Second)
		ids := create(pid,
			store.NewSchedule{CodeName: "hello", StartAt: t0, RunEvery: 60, Timeout: 60},
			store.NewSchedule{CodeName: "hello", StartAt: t0, RunEvery: 60, Timeout: 60},
			store.NewSchedule{CodeName: "doomed", StartAt: t0, RunEvery: 60, Timeout: 60},
			store.NewSchedule{CodeName: "hello", StartAt: t0, RunEvery: 60, Timeout: 60, EndAt: &end})
		Expect(fire(t0, 100)[ids[1]].TaskID).NotTo(BeEmpty())
		// Back on the instant it fired (as a stale update could); the doomed code goes; an
		// instant past end_at (as after an update of end_at).
		_, err = db.Exec(`UPDATE schedules SET next_start = $2 WHERE id = $1`, ids[1], t0)
		Expect(err).NotTo(HaveOccurred())
		_, err = db.Exec(`UPDATE codes SET deleted_at = now() WHERE project_id = $1 AND name = 'doomed'`, pid)
		Expect(err).NotTo(HaveOccurred())
		_, err = db.Exec(`UPDATE schedules SET status = 'scheduled', msg = '', next_start = $2 WHERE id = $1`, ids[3], end.Add(time.Second))
		Expect(err).NotTo(HaveOccurred())

		events := fire(t0.Add(time.Minute), 100)
		Expect(events[ids[0]].TaskID).NotTo(BeEmpty())
		Expect(events[ids[1]].AlreadyFired).To(BeTrue())
		Expect(events[ids[2]].Problem).To(ContainSubstring(`"doomed" not found`))
		Expect(events[ids[3]].TaskID).To(BeEmpty())
		Expect(events[ids[3]].Status).To(Equal("complete"))
		get := func(id string) store.Schedule {
			s, err := st.GetSchedule(ctx, pid, id)
			Expect(err).NotTo(HaveOccurred())
			return s
		}
		Expect([]int{get(ids[0]).RunCount, get(ids[1]).RunCount, get(ids[2]).RunCount, get(ids[3]).RunCount}).To(Equal([]int{2, 1, 1, 1}))
		Expect(get(ids[2]).ErrorCount).To(Equal(1))
		Expect(get(ids[3]).Msg).To(Equal("Reached end_at."))
	})
})

// newScheduleProject makes a project with a code "hello" (default priority 2).
func newScheduleProject(st *store.Store) string {
	GinkgoHelper()
	ctx := context.Background()
	p, _, err := st.CreateProject(ctx, "schedules")
	Expect(err).NotTo(HaveOccurred())
	_, err = st.SaveCode(ctx, p.ID, store.CodeUpload{Settings: store.CodeSettings{Name: "hello", Image: "busybox", DefaultPriority: fireIntPtr(2)}})
	Expect(err).NotTo(HaveOccurred())
	return p.ID
}

func fireIntPtr(v int) *int { return &v }
