package scheduler_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"io"
	"log/slog"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/secrets"
	"github.com/ironcf/ironworker-release/src/store"
)

func TestScheduler(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Scheduler suite")
}

// schedulerLockObjID is the low half of store's lockScheduler advisory key (0x1a0e_0002),
// as pg_locks shows it.
const schedulerLockObjID = 0x1a0e0002

// env is one database with a migrated store (and a second store on it, as a second
// process would have), a plain SQL handle for assertions, and the encryption key.
type env struct {
	DB        *testsupport.Database
	Store     *store.Store
	Store2    *store.Store
	SQL       *sql.DB
	KeyBase64 string
}

func newEnv() *env {
	GinkgoHelper()
	ctx := context.Background()
	db, err := testsupport.NewDatabase()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(db.Drop)
	key := make([]byte, 32)
	_, err = rand.Read(key)
	Expect(err).NotTo(HaveOccurred())
	sealer, err := secrets.New("test", []secrets.Key{{Label: "test", Secret: key}})
	Expect(err).NotTo(HaveOccurred())
	open := func() *store.Store {
		st, err := store.Open(ctx, db.URL, sealer, store.Options{MaxOpenConns: 12, Logger: quietLogger()})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(st.Close)
		return st
	}
	e := &env{DB: db, Store: open(), KeyBase64: base64.StdEncoding.EncodeToString(key)}
	Expect(e.Store.Migrate(ctx)).To(Succeed())
	e.Store2 = open()
	e.SQL, err = db.SQL()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(e.SQL.Close)
	return e
}

func quietLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

// testLogger writes to GinkgoWriter, shown only for failed specs.
func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(GinkgoWriter, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newProject makes a project with a code "hello" (default priority 2).
func (e *env) newProject() string {
	GinkgoHelper()
	ctx := context.Background()
	p, _, err := e.Store.CreateProject(ctx, "scheduler test")
	Expect(err).NotTo(HaveOccurred())
	two := 2
	_, err = e.Store.SaveCode(ctx, p.ID, store.CodeUpload{Settings: store.CodeSettings{Name: "hello", Image: "busybox", DefaultPriority: &two}})
	Expect(err).NotTo(HaveOccurred())
	return p.ID
}

func (e *env) create(projectID string, now time.Time, batch ...store.NewSchedule) []string {
	GinkgoHelper()
	ids, err := e.Store.CreateSchedules(context.Background(), projectID, batch, now)
	Expect(err).NotTo(HaveOccurred())
	return ids
}

func (e *env) get(projectID, id string) store.Schedule {
	GinkgoHelper()
	s, err := e.Store.GetSchedule(context.Background(), projectID, id)
	Expect(err).NotTo(HaveOccurred())
	return s
}

// taskInstants lists the scheduled_for of each task of a schedule, oldest first.
func (e *env) taskInstants(scheduleID string) []time.Time {
	GinkgoHelper()
	rows, err := e.SQL.Query(`SELECT scheduled_for FROM tasks WHERE schedule_id = $1 ORDER BY scheduled_for`, scheduleID)
	Expect(err).NotTo(HaveOccurred())
	defer rows.Close()
	var out []time.Time
	for rows.Next() {
		var t time.Time
		Expect(rows.Scan(&t)).To(Succeed())
		out = append(out, t.UTC())
	}
	Expect(rows.Err()).NotTo(HaveOccurred())
	return out
}

// duplicates counts schedule instants with more than one task.
func (e *env) duplicates() int {
	GinkgoHelper()
	var n int
	Expect(e.SQL.QueryRow(`SELECT count(*) FROM (SELECT schedule_id, scheduled_for FROM tasks
		WHERE schedule_id IS NOT NULL GROUP BY schedule_id, scheduled_for HAVING count(*) > 1) d`).Scan(&n)).To(Succeed())
	return n
}

func (e *env) count(query string, args ...any) int {
	GinkgoHelper()
	var n int
	Expect(e.SQL.QueryRow(query, args...).Scan(&n)).To(Succeed())
	return n
}

// leaderPID is the backend holding the scheduler lock in this database, or 0.
func (e *env) leaderPID() int {
	GinkgoHelper()
	var pid int
	err := e.SQL.QueryRow(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0
		AND objid = $1 AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		schedulerLockObjID).Scan(&pid)
	if err == sql.ErrNoRows {
		return 0
	}
	Expect(err).NotTo(HaveOccurred())
	return pid
}

func (e *env) terminate(pid int) {
	GinkgoHelper()
	var ok bool
	Expect(e.SQL.QueryRow(`SELECT pg_terminate_backend($1)`, pid).Scan(&ok)).To(Succeed())
	Expect(ok).To(BeTrue())
}

func ptr[T any](v T) *T { return &v }
