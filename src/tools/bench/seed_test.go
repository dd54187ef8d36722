package main

import (
	"context"
	"database/sql"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lib/pq"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

func TestBench(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "bench suite")
}

// The benchmark's set-based seeding must write the rows the product writes, or it
// measures something else.
var _ = Describe("seeding", func() {
	var (
		a   *testsupport.API
		db  *sql.DB
		ctx = context.Background()
	)
	BeforeEach(func() {
		var err error
		a, err = testsupport.StartAPI(config.Limits{})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(a.Stop)
		db, err = a.DB.SQL()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(db.Close)
		Expect(uploadImageCode(a, "noop")).To(Succeed())
	})

	// differing lists the columns (besides those named) in which rows of table differ.
	differing := func(table string, except ...string) []string {
		GinkgoHelper()
		rows, err := db.Query(`SELECT c.column_name FROM information_schema.columns c
			WHERE c.table_schema = current_schema() AND c.table_name = $1 AND NOT c.column_name = ANY ($2)`, table, pq.Array(except))
		Expect(err).NotTo(HaveOccurred())
		var cols []string
		for rows.Next() {
			var c string
			Expect(rows.Scan(&c)).To(Succeed())
			cols = append(cols, c)
		}
		rows.Close()
		var out []string
		for _, c := range cols {
			var n int
			Expect(db.QueryRow(`SELECT count(DISTINCT "` + c + `"::text) + max(CASE WHEN "` + c + `" IS NULL THEN 1 ELSE 0 END) FROM ` + table).Scan(&n)).To(Succeed())
			if n > 1 {
				out = append(out, c)
			}
		}
		return out
	}

	It("copies queued tasks as QueueTasks writes them", func() {
		Expect(seedQueued(ctx, a, db, 500)).To(Succeed())
		queued, err := a.Store.QueueTasks(ctx, a.ProjectID, []store.NewTask{{CodeName: "noop", Payload: "{}", Timeout: 3600}})
		Expect(err).NotTo(HaveOccurred())
		Expect(queued).To(HaveLen(1))
		Expect(differing("tasks", "id", "created_at", "updated_at", "run_at")).To(BeEmpty())
		var n, distinct, odd, badID int
		Expect(db.QueryRow(`SELECT count(*), count(DISTINCT created_at),
			count(*) FILTER (WHERE created_at <> updated_at OR run_at <> created_at + delay * interval '1 second'),
			count(*) FILTER (WHERE id !~ '^[0-9a-f]{24}$') FROM tasks`).Scan(&n, &distinct, &odd, &badID)).To(Succeed())
		Expect([]int{n, distinct, odd, badID}).To(Equal([]int{501, 501, 0, 0}))
	})

	It("seeds schedules due in one minute as POST /schedules writes them, and fires them all", func() {
		prev := *nSchedules
		DeferCleanup(func() { *nSchedules = prev })
		*nSchedules = 600
		res, err := schedulesWorkload(a, db)
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Unit).To(Equal("s"))
		Expect(differing("schedules", "id", "created_at", "updated_at", "start_at", "next_start", "last_run_time")).To(BeEmpty())
		var n, badID, ran int
		Expect(db.QueryRow(`SELECT count(*), count(*) FILTER (WHERE id !~ '^[0-9a-f]{24}$'),
			count(*) FILTER (WHERE run_count = 1 AND next_start > last_run_time AND next_start <= last_run_time + interval '1 minute')
			FROM schedules`).Scan(&n, &badID, &ran)).To(Succeed())
		Expect([]int{n, badID, ran}).To(Equal([]int{600, 0, 600}))
		var spread time.Duration
		var secs float64
		Expect(db.QueryRow(`SELECT extract(epoch FROM max(start_at) - min(start_at)) FROM schedules`).Scan(&secs)).To(Succeed())
		spread = time.Duration(secs * float64(time.Second))
		Expect(spread).To(BeNumerically("<", time.Minute))
		Expect(spread).To(BeNumerically(">", 59*time.Second))
	})
})
