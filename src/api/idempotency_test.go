package api_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/store"
)

var _ = Describe("Idempotency-Key on POST /tasks and POST /schedules", func() {
	var (
		pid, token string
		db         *sql.DB
		ctx        = context.Background()
	)
	BeforeEach(func() {
		var err error
		pid, token, err = iron.NewProject("idempotency")
		Expect(err).NotTo(HaveOccurred())
		_, err = iron.Store.SaveCode(ctx, pid, store.CodeUpload{Settings: store.CodeSettings{Name: "idem", Image: "img"}})
		Expect(err).NotTo(HaveOccurred())
		db, err = iron.DB.SQL()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(db.Close)
	})
	count := func(q string, args ...any) int {
		var n int
		ExpectWithOffset(1, db.QueryRow(q, args...).Scan(&n)).To(Succeed())
		return n
	}
	tasksBody := func(n int, payload string) string {
		items := ""
		for i := 0; i < n; i++ {
			if i > 0 {
				items += ","
			}
			items += fmt.Sprintf(`{"code_name":"idem","payload":"%s-%d"}`, payload, i)
		}
		return `{"tasks":[` + items + `]}`
	}
	post := func(path, key, body string) (int, string, http.Header) {
		h := http.Header{}
		if key != "" {
			h.Set("Idempotency-Key", key)
		}
		r := iron.DoAs(token, "POST", "/2/projects/"+pid+path, body, h)
		return r.Status, string(r.Body), r.Header
	}

	It("answers a repeated task batch with the first answer and queues it once", func() {
		st, first, h := post("/tasks", "batch-1", tasksBody(5, "a"))
		Expect(st).To(Equal(http.StatusOK), first)
		Expect(h.Get("Idempotent-Replayed")).To(BeEmpty())
		for i := 0; i < 3; i++ {
			st, again, h := post("/tasks", "batch-1", tasksBody(5, "a"))
			Expect(st).To(Equal(http.StatusOK))
			Expect(again).To(MatchJSON(first))
			Expect(h.Get("Idempotent-Replayed")).To(Equal("true"))
		}
		Expect(count(`SELECT count(*) FROM tasks WHERE project_id = $1`, pid)).To(Equal(5))

		By("a different body under the used key: 422")
		st, body, _ := post("/tasks", "batch-1", tasksBody(5, "b"))
		Expect(st).To(Equal(http.StatusUnprocessableEntity))
		Expect(body).To(MatchJSON(`{"msg":"Idempotency-Key was already used for a different request; use a new key for a new request"}`))
		By("the same key on the schedules route: 422")
		st, _, _ = post("/schedules", "batch-1", `{"schedules":[{"code_name":"idem","run_every":3600}]}`)
		Expect(st).To(Equal(http.StatusUnprocessableEntity))
		By("without a key or with another key: queued again")
		st, _, _ = post("/tasks", "", tasksBody(5, "a"))
		Expect(st).To(Equal(http.StatusOK))
		st, _, _ = post("/tasks", "batch-2", tasksBody(5, "a"))
		Expect(st).To(Equal(http.StatusOK))
		Expect(count(`SELECT count(*) FROM tasks WHERE project_id = $1`, pid)).To(Equal(15))
	})

	It("keeps keys per project", func() {
		st, _, _ := post("/tasks", "shared", tasksBody(1, "a"))
		Expect(st).To(Equal(http.StatusOK))
		other, otherToken, err := iron.NewProject("idempotency other")
		Expect(err).NotTo(HaveOccurred())
		_, err = iron.Store.SaveCode(ctx, other, store.CodeUpload{Settings: store.CodeSettings{Name: "idem", Image: "img"}})
		Expect(err).NotTo(HaveOccurred())
		h := http.Header{"Idempotency-Key": {"shared"}}
		r := iron.DoAs(otherToken, "POST", "/2/projects/"+other+"/tasks", tasksBody(1, "b"), h)
		Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
		Expect(r.Header.Get("Idempotent-Replayed")).To(BeEmpty())
		Expect(count(`SELECT count(*) FROM tasks WHERE project_id = $1`, other)).To(Equal(1))
	})

	It("does not record a request that failed, so its retry runs", func() {
		st, _, _ := post("/tasks", "fails", `{"tasks":[{"code_name":"no-such-code"}]}`)
		Expect(st).To(Equal(http.StatusNotFound))
		Expect(count(`SELECT count(*) FROM idempotency_keys WHERE project_id = $1`, pid)).To(Equal(0))
		_, err := iron.Store.SaveCode(ctx, pid, store.CodeUpload{Settings: store.CodeSettings{Name: "no-such-code", Image: "img"}})
		Expect(err).NotTo(HaveOccurred())
		st, body, _ := post("/tasks", "fails", `{"tasks":[{"code_name":"no-such-code"}]}`)
		Expect(st).To(Equal(http.StatusOK), body)
	})

	It("refuses a malformed key", func() {
		st, _, _ := post("/tasks", "clé", tasksBody(1, "a"))
		Expect(st).To(Equal(http.StatusBadRequest))
		long := make([]byte, 256)
		for i := range long {
			long[i] = 'k'
		}
		st, _, _ = post("/tasks", string(long), tasksBody(1, "a"))
		Expect(st).To(Equal(http.StatusBadRequest))
		Expect(count(`SELECT count(*) FROM tasks WHERE project_id = $1`, pid)).To(Equal(0))
	})

	It("answers a repeated schedule batch with the first answer and creates it once", func() {
		body := `{"schedules":[{"code_name":"idem","run_every":3600},{"code_name":"idem","cron":"0 * * * *"}]}`
		st, first, _ := post("/schedules", "sched-1", body)
		Expect(st).To(Equal(http.StatusOK), first)
		st, again, h := post("/schedules", "sched-1", body)
		Expect(st).To(Equal(http.StatusOK))
		Expect(again).To(MatchJSON(first))
		Expect(h.Get("Idempotent-Replayed")).To(Equal("true"))
		Expect(count(`SELECT count(*) FROM schedules WHERE project_id = $1`, pid)).To(Equal(2))
		st, _, _ = post("/schedules", "sched-1", `{"schedules":[{"code_name":"idem","run_every":60}]}`)
		Expect(st).To(Equal(http.StatusUnprocessableEntity))
	})

	It("creates one batch when the same key arrives concurrently", func() {
		var wg sync.WaitGroup
		answers := make([]string, 8)
		statuses := make([]int, 8)
		for i := range answers {
			wg.Add(1)
			go func(i int) {
				defer GinkgoRecover()
				defer wg.Done()
				statuses[i], answers[i], _ = post("/tasks", "race", tasksBody(20, "r"))
			}(i)
		}
		wg.Wait()
		for i := range answers {
			Expect(statuses[i]).To(Equal(http.StatusOK), answers[i])
			Expect(answers[i]).To(MatchJSON(answers[0]))
		}
		Expect(count(`SELECT count(*) FROM tasks WHERE project_id = $1`, pid)).To(Equal(20))
	})

	It("forgets keys after 24 hours and purges them in bounded batches", func() {
		st, _, _ := post("/tasks", "old", tasksBody(2, "a"))
		Expect(st).To(Equal(http.StatusOK))
		_, err := db.Exec(`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE project_id = $1`, pid)
		Expect(err).NotTo(HaveOccurred())
		By("an expired key is a new key: even another body is accepted")
		st, _, h := post("/tasks", "old", tasksBody(2, "b"))
		Expect(st).To(Equal(http.StatusOK))
		Expect(h.Get("Idempotent-Replayed")).To(BeEmpty())
		Expect(count(`SELECT count(*) FROM tasks WHERE project_id = $1`, pid)).To(Equal(4))

		By("purging")
		for i := 0; i < 5; i++ {
			st, _, _ := post("/tasks", fmt.Sprintf("purge-%d", i), tasksBody(1, "p"))
			Expect(st).To(Equal(http.StatusOK))
		}
		_, err = db.Exec(`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE project_id = $1`, pid)
		Expect(err).NotTo(HaveOccurred())
		n, err := iron.Store.PurgeIdempotencyKeys(ctx, 4)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(4))
		Expect(count(`SELECT count(*) FROM idempotency_keys WHERE project_id = $1`, pid)).To(Equal(2))
		By("a new key purges the rest on its way")
		st, _, _ = post("/tasks", "fresh", tasksBody(1, "f"))
		Expect(st).To(Equal(http.StatusOK))
		Expect(count(`SELECT count(*) FROM idempotency_keys WHERE project_id = $1`, pid)).To(Equal(1))
	})
})
