package scheduler_test

import (
	"context"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/store"
)

var _ = Describe("FireDueSchedules", Ordered, func() {
	var (
		e   *env
		pid string
		t0  time.Time
		ctx = context.Background()
	)
	BeforeAll(func() { e = newEnv() })
	BeforeEach(func() {
		pid = e.newProject()
		t0 = time.Now().UTC().Truncate(time.Second)
	})
	// Specs fire with simulated clocks; leave nothing due for the next one.
	AfterEach(func() {
		_, err := e.SQL.Exec(`UPDATE schedules SET status = 'cancelled', next_start = NULL`)
		Expect(err).NotTo(HaveOccurred())
	})

	fire := func(now time.Time) map[string]store.FireEvent {
		GinkgoHelper()
		events, err := e.Store.FireDueSchedules(ctx, now, 100)
		Expect(err).NotTo(HaveOccurred())
		out := map[string]store.FireEvent{}
		for _, ev := range events {
			Expect(out).NotTo(HaveKey(ev.ScheduleID), "one event per schedule per call")
			out[ev.ScheduleID] = ev
		}
		return out
	}

	It("fires a past start_at at once, exactly once per instant, with the schedule's task settings", func() {
		start := t0.Add(-10 * time.Second)
		id := e.create(pid, t0, store.NewSchedule{CodeName: "hello", Payload: `{"a":1}`, StartAt: start, RunEvery: 60,
			Timeout: 120, TaskDelay: 3, Label: "lbl", Cluster: "blue"})[0]
		Expect(e.get(pid, id).NextStart).To(Equal(&start))

		ev := fire(t0)[id]
		Expect(ev.TaskID).To(MatchRegexp(`^[0-9a-f]{24}$`))
		Expect(ev.ScheduledFor).To(Equal(start))
		Expect(ev.Status).To(Equal("scheduled"))
		task, err := e.Store.GetTask(ctx, pid, ev.TaskID)
		Expect(err).NotTo(HaveOccurred())
		Expect(task.ScheduleID).To(Equal(id))
		Expect(task.ScheduledFor).To(Equal(&start))
		Expect(task.Status).To(Equal("queued"))
		Expect(task.Payload).To(Equal(`{"a":1}`))
		Expect(task.Priority).To(Equal(2)) // the code's default
		Expect(task.Timeout).To(Equal(120))
		Expect(task.Delay).To(Equal(3))
		Expect(task.Label).To(Equal("lbl"))
		Expect(task.Cluster).To(Equal("blue"))

		Expect(fire(t0)).NotTo(HaveKey(id))
		Expect(fire(t0.Add(49 * time.Second))).NotTo(HaveKey(id))
		s := e.get(pid, id)
		Expect(s.RunCount).To(Equal(1))
		Expect(s.LastRunTime).To(Equal(&t0))
		Expect(*s.NextStart).To(Equal(start.Add(time.Minute)))

		Expect(fire(t0.Add(50 * time.Second))[id].TaskID).NotTo(BeEmpty())
		Expect(e.taskInstants(id)).To(Equal([]time.Time{start, start.Add(time.Minute)}))
	})

	It("uses the schedule's priority when it has one", func() {
		id := e.create(pid, t0, store.NewSchedule{CodeName: "hello", StartAt: t0, RunEvery: 60, Priority: ptr(1), Timeout: 60})[0]
		ev := fire(t0)[id]
		task, err := e.Store.GetTask(ctx, pid, ev.TaskID)
		Expect(err).NotTo(HaveOccurred())
		Expect(task.Priority).To(Equal(1))
	})

	It("skips instants missed during downtime instead of firing a burst", func() {
		start := t0.Add(-10*time.Minute - 5*time.Second)
		id := e.create(pid, t0, store.NewSchedule{CodeName: "hello", StartAt: start, RunEvery: 60, Timeout: 60})[0]
		fire(t0)
		Expect(e.taskInstants(id)).To(Equal([]time.Time{start}))
		Expect(*e.get(pid, id).NextStart).To(Equal(start.Add(11 * time.Minute))) // the first instant after t0
		Expect(fire(t0.Add(54 * time.Second))).NotTo(HaveKey(id))
	})

	It("honours run_times: complete with msg Ran max times.", func() {
		id := e.create(pid, t0, store.NewSchedule{CodeName: "hello", StartAt: t0.Add(-time.Second), RunEvery: 60, RunTimes: 2, Timeout: 60})[0]
		Expect(fire(t0)[id].Status).To(Equal("scheduled"))
		ev := fire(t0.Add(time.Minute))[id]
		Expect(ev.TaskID).NotTo(BeEmpty())
		Expect(ev.Status).To(Equal("complete"))
		s := e.get(pid, id)
		Expect(s.Status).To(Equal("complete"))
		Expect(s.Msg).To(Equal("Ran max times."))
		Expect(s.NextStart).To(BeNil())
		Expect(s.RunCount).To(Equal(2))
		Expect(fire(t0.Add(time.Hour))).NotTo(HaveKey(id))
		Expect(e.taskInstants(id)).To(HaveLen(2))
	})

	It("honours end_at: no run after it, complete", func() {
		end := t0.Add(90 * time.Second)
		id := e.create(pid, t0, store.NewSchedule{CodeName: "hello", StartAt: t0.Add(-time.Second), EndAt: &end, RunEvery: 60, Timeout: 60})[0]
		fire(t0)
		Expect(e.get(pid, id).Status).To(Equal("scheduled"))
		fire(t0.Add(time.Minute)) // t0+59s ≤ end_at: runs; t0+119s > end_at: ends
		s := e.get(pid, id)
		Expect(s.Status).To(Equal("complete"))
		Expect(s.Msg).To(Equal("Reached end_at."))
		Expect(s.NextStart).To(BeNil())
		Expect(fire(t0.Add(time.Hour))).NotTo(HaveKey(id))
		Expect(e.taskInstants(id)).To(HaveLen(2))
	})

	It("fires a one-time schedule once", func() {
		id := e.create(pid, t0, store.NewSchedule{CodeName: "hello", StartAt: t0.Add(30 * time.Second), Timeout: 60})[0]
		s := e.get(pid, id)
		Expect(s.OneTime()).To(BeTrue())
		Expect(s.RunTimes).To(Equal(1))
		Expect(fire(t0)).NotTo(HaveKey(id))
		Expect(fire(t0.Add(30 * time.Second))[id].Status).To(Equal("complete"))
		Expect(fire(t0.Add(time.Hour))).NotTo(HaveKey(id))
		s = e.get(pid, id)
		Expect(s.RunCount).To(Equal(1))
		Expect(s.Msg).To(Equal("Ran max times."))
		Expect(e.taskInstants(id)).To(Equal([]time.Time{t0.Add(30 * time.Second)}))
	})

	It("computes cron instants in UTC whatever the local zone", func() {
		saved := time.Local
		time.Local = time.FixedZone("IST", 5*3600+1800)
		DeferCleanup(func() { time.Local = saved })

		created := time.Date(2031, 3, 10, 1, 0, 0, 0, time.UTC)
		id := e.create(pid, created, store.NewSchedule{CodeName: "hello", StartAt: created.Add(-time.Hour), Cron: "30 2 * * *", Timeout: 60})[0]
		Expect(*e.get(pid, id).NextStart).To(Equal(time.Date(2031, 3, 10, 2, 30, 0, 0, time.UTC)))

		fire(time.Date(2031, 3, 10, 2, 30, 5, 0, time.UTC))
		Expect(*e.get(pid, id).NextStart).To(Equal(time.Date(2031, 3, 11, 2, 30, 0, 0, time.UTC)))
		// Days of downtime: one run for the missed instant, then the next one after now.
		fire(time.Date(2031, 3, 15, 10, 0, 0, 0, time.UTC))
		Expect(*e.get(pid, id).NextStart).To(Equal(time.Date(2031, 3, 16, 2, 30, 0, 0, time.UTC)))
		Expect(e.taskInstants(id)).To(Equal([]time.Time{
			time.Date(2031, 3, 10, 2, 30, 0, 0, time.UTC), time.Date(2031, 3, 11, 2, 30, 0, 0, time.UTC)}))
	})

	It("counts an error and keeps the cadence when the code is gone, and runs again once it is back", func() {
		_, err := e.Store.SaveCode(ctx, pid, store.CodeUpload{Settings: store.CodeSettings{Name: "doomed", Image: "busybox"}})
		Expect(err).NotTo(HaveOccurred())
		start := t0.Add(-time.Second)
		id := e.create(pid, t0, store.NewSchedule{CodeName: "doomed", StartAt: start, RunEvery: 60, Timeout: 60})[0]
		_, err = e.SQL.Exec(`UPDATE codes SET deleted_at = now() WHERE project_id = $1 AND name = 'doomed'`, pid)
		Expect(err).NotTo(HaveOccurred())

		ev := fire(t0)[id]
		Expect(ev.TaskID).To(BeEmpty())
		Expect(ev.Problem).To(ContainSubstring(`"doomed" not found`))
		s := e.get(pid, id)
		Expect(s.Status).To(Equal("scheduled"))
		Expect(s.ErrorCount).To(Equal(1))
		Expect(s.RunCount).To(Equal(0))
		Expect(s.Msg).To(ContainSubstring(`"doomed" not found`))
		Expect(*s.NextStart).To(Equal(start.Add(time.Minute)))
		Expect(e.taskInstants(id)).To(BeEmpty())

		_, err = e.Store.SaveCode(ctx, pid, store.CodeUpload{Settings: store.CodeSettings{Name: "doomed", Image: "busybox"}})
		Expect(err).NotTo(HaveOccurred())
		Expect(fire(t0.Add(time.Minute))[id].TaskID).NotTo(BeEmpty())
		s = e.get(pid, id)
		Expect(s.ErrorCount).To(Equal(1))
		Expect(s.RunCount).To(Equal(1))
		Expect(s.Msg).To(BeEmpty())
	})

	It("treats an instant that already has its task as fired (the unique index), without failing the batch", func() {
		start := t0.Add(-time.Second)
		ids := e.create(pid, t0,
			store.NewSchedule{CodeName: "hello", StartAt: start, RunEvery: 60, Timeout: 60},
			store.NewSchedule{CodeName: "hello", StartAt: start, RunEvery: 60, Timeout: 60})
		fire(t0)
		// Put the first one back on the instant it already fired (as a stale update could).
		_, err := e.SQL.Exec(`UPDATE schedules SET next_start = $2 WHERE id = $1`, ids[0], start)
		Expect(err).NotTo(HaveOccurred())
		_, err = e.SQL.Exec(`UPDATE schedules SET next_start = $2 WHERE id = $1`, ids[1], start.Add(time.Minute))
		Expect(err).NotTo(HaveOccurred())

		events := fire(t0.Add(time.Minute))
		Expect(events[ids[0]].AlreadyFired).To(BeTrue())
		Expect(events[ids[0]].TaskID).To(BeEmpty())
		Expect(events[ids[1]].TaskID).NotTo(BeEmpty()) // same transaction, still fired
		Expect(e.taskInstants(ids[0])).To(Equal([]time.Time{start}))
		s := e.get(pid, ids[0])
		Expect(s.RunCount).To(Equal(1))
		Expect(s.ErrorCount).To(Equal(0))
		Expect(*s.NextStart).To(Equal(start.Add(2 * time.Minute)))
	})

	It("never double-fires when many callers on two stores fire at once, without any leadership", func() {
		const schedules, steps, perStore = 50, 4, 8
		batch := make([]store.NewSchedule, schedules)
		for i := range batch {
			batch[i] = store.NewSchedule{CodeName: "hello", StartAt: t0.Add(-time.Second), RunEvery: 60, Timeout: 60}
		}
		ids := e.create(pid, t0, batch...)

		fired := 0
		var mu sync.Mutex
		for step := 0; step < steps; step++ {
			now := t0.Add(time.Duration(step) * time.Minute)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for _, st := range []*store.Store{e.Store, e.Store2} {
				for g := 0; g < perStore; g++ {
					wg.Add(1)
					go func(st *store.Store) {
						defer GinkgoRecover()
						defer wg.Done()
						<-start
						events, err := st.FireDueSchedules(ctx, now, 7)
						Expect(err).NotTo(HaveOccurred())
						mu.Lock()
						defer mu.Unlock()
						for _, ev := range events {
							if ev.TaskID != "" {
								fired++
							}
						}
					}(st)
				}
			}
			close(start)
			wg.Wait()
		}
		Expect(fired).To(Equal(schedules * steps))
		Expect(e.duplicates()).To(Equal(0))
		Expect(e.count(`SELECT count(*) FROM tasks WHERE project_id = $1`, pid)).To(Equal(schedules * steps))
		for _, id := range ids {
			Expect(e.get(pid, id).RunCount).To(Equal(steps))
		}
	})
})
