// Package store is all of iron-api's SQL: migrations, projects and tokens, codes, tasks,
// logs, schedules and the queue. Callers see Go types and sentinel errors, never SQL.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/ironcf/ironworker-release/src/secrets"
)

var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// Advisory lock keys; distinct constants so that leaders of different jobs never collide.
const (
	lockMigrations int64 = 0x1a0e_0001
	lockScheduler  int64 = 0x1a0e_0002
	lockReaper     int64 = 0x1a0e_0003
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

type Store struct {
	db     *sql.DB
	sealer *secrets.Sealer
	log    *slog.Logger
	// maxLogBytes caps each task's stored log (tasklogs_cap.go); 0 = unlimited.
	maxLogBytes atomic.Int64
	// revocations counts the token revocations made through this Store (projects.go).
	revocations atomic.Uint64
	// notifier wakes lease long-polls after commits (notify.go).
	notifier  *queueNotifier
	notifyTxs sync.Map // *sql.Tx → struct{}: transactions that wake long-polls once committed
	// groupsOnce/grp: the group commits of heartbeats and completions (leases.go).
	groupsOnce sync.Once
	grp        *storeGroups
	// stmts holds statements prepared once on db (query → *sql.Stmt).
	stmts sync.Map
	// hot is a second pool for the queue's hot statements (lease, heartbeat, complete),
	// prepared once (hotStmts) and always run with generic plans: PostgreSQL otherwise
	// re-plans them on every call with their parameters, and the lease scan took longer
	// to plan than to run. Other statements stay on db, planned per call, where their
	// parameters matter (task lists, filters).
	hot      *sql.DB
	hotStmts sync.Map
}

// sessionConnector runs init on each new session of a pool.
type sessionConnector struct {
	driver.Connector
	init string
}

func (c sessionConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("session setup: the driver cannot execute %q", c.init)
	}
	if _, err := ex.ExecContext(ctx, c.init, nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("session setup: %w", err)
	}
	return conn, nil
}

// Options tune a Store.
type Options struct {
	MaxOpenConns int
	Logger       *slog.Logger
	// MaxTaskLogBytes caps each task's log (see SetMaxTaskLogBytes); 0 = unlimited.
	MaxTaskLogBytes int64
}

// Open connects to PostgreSQL and checks the connection.
func Open(ctx context.Context, dsn string, sealer *secrets.Sealer, opts Options) (*Store, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	connector, err := pq.NewConnector(dsn)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	hot := sql.OpenDB(sessionConnector{Connector: connector, init: `SET plan_cache_mode = force_generic_plan`})
	for _, p := range []*sql.DB{db, hot} {
		if opts.MaxOpenConns > 0 {
			p.SetMaxOpenConns(opts.MaxOpenConns)
			p.SetMaxIdleConns(opts.MaxOpenConns)
		}
		p.SetConnMaxIdleTime(5 * time.Minute)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		hot.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	st := &Store{db: db, hot: hot, sealer: sealer, log: logger, notifier: newQueueNotifier(db)}
	st.SetMaxTaskLogBytes(opts.MaxTaskLogBytes)
	return st, nil
}

func (s *Store) Close() error {
	s.notifier.close()
	for _, m := range []*sync.Map{&s.stmts, &s.hotStmts} {
		m.Range(func(_, st any) bool {
			st.(*sql.Stmt).Close()
			return true
		})
	}
	s.hot.Close()
	return s.db.Close()
}

// stmt returns query as a statement of the main pool, prepared once, bound to tx when
// tx is not nil: a frequent statement then costs one round trip (Bind/Execute) where an
// unnamed one costs a Parse and a plan before each Execute. database/sql prepares it on
// each connection the first time that connection runs it.
func (s *Store) stmt(ctx context.Context, tx *sql.Tx, query string) (stmtRunner, error) {
	return stmtOn(ctx, s.db, &s.stmts, tx, query)
}

// hotStmt is stmt on the hot pool (see Store.hot); tx must come from inHotTx.
func (s *Store) hotStmt(ctx context.Context, tx *sql.Tx, query string) (stmtRunner, error) {
	return stmtOn(ctx, s.hot, &s.hotStmts, tx, query)
}

// hotQuery runs one of the queue's hot statements (hotStmt).
func (s *Store) hotQuery(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Rows, error) {
	st, err := s.hotStmt(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// stmtRunner runs a statement whose query it knows: a *sql.Stmt, or txQuery.
type stmtRunner interface {
	QueryContext(ctx context.Context, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, args ...any) *sql.Row
	ExecContext(ctx context.Context, args ...any) (sql.Result, error)
}

// stmtOn prepares query once on pool (stmts: query → *sql.Stmt; concurrent first
// callers may both prepare, one statement is kept) and binds it to tx when tx is not
// nil. Inside a transaction it never takes a second connection from the pool: while tx
// holds one (and maybe locks), a pool full of transactions waiting for those locks
// would deadlock. So a statement not prepared yet runs unnamed on tx that time.
func stmtOn(ctx context.Context, pool *sql.DB, stmts *sync.Map, tx *sql.Tx, query string) (stmtRunner, error) {
	if st, ok := stmts.Load(query); ok {
		if tx != nil {
			return tx.StmtContext(ctx, st.(*sql.Stmt)), nil // closed with tx
		}
		return st.(*sql.Stmt), nil
	}
	if tx != nil {
		return txQuery{tx, query}, nil
	}
	st, err := pool.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if prev, loaded := stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// txQuery runs a query unnamed in a transaction.
type txQuery struct {
	tx    *sql.Tx
	query string
}

func (q txQuery) QueryContext(ctx context.Context, args ...any) (*sql.Rows, error) {
	return q.tx.QueryContext(ctx, q.query, args...)
}

func (q txQuery) QueryRowContext(ctx context.Context, args ...any) *sql.Row {
	return q.tx.QueryRowContext(ctx, q.query, args...)
}

func (q txQuery) ExecContext(ctx context.Context, args ...any) (sql.Result, error) {
	return q.tx.ExecContext(ctx, q.query, args...)
}

// DB exposes the pool for health checks and metrics collectors.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Migrate applies the embedded migrations in name order, once each, under an advisory
// lock so that API instances starting together do not race.
func (s *Store) Migrate(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: get connection: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, lockMigrations); err != nil {
		return fmt.Errorf("migrate: take lock: %w", err)
	}
	defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, lockMigrations)

	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("migrate: list migrations: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		short := strings.TrimPrefix(name, "migrations/")
		var done bool
		if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = $1)`, short).Scan(&done); err != nil {
			return fmt.Errorf("migrate: check %s: %w", short, err)
		}
		if done {
			continue
		}
		body, err := migrationFiles.ReadFile(name)
		if err != nil {
			return fmt.Errorf("migrate: read %s: %w", short, err)
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate: begin %s: %w", short, err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate: apply %s: %w", short, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name) VALUES ($1)`, short); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate: record %s: %w", short, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate: commit %s: %w", short, err)
		}
		s.log.Info("applied migration", "migration", short)
	}
	return nil
}

// inTx runs fn in a transaction, committing when it returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.inTxOn(ctx, s.db, fn)
}

// inHotTx is inTx on the hot pool, for transactions of hot statements (hotQuery).
func (s *Store) inHotTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.inTxOn(ctx, s.hot, fn)
}

func (s *Store) inTxOn(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		s.notifyTxs.Delete(tx)
		tx.Rollback()
		return err
	}
	_, notify := s.notifyTxs.LoadAndDelete(tx)
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if notify {
		s.queueChanged()
	}
	return nil
}

func isUniqueViolation(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "23505"
}

// IsUnavailable tells whether err means the database cannot be reached right now, a
// condition worth a 503 so that clients retry.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		class := string(pqErr.Code)[:2]
		return class == "08" || class == "57" || class == "53"
	}
	msg := err.Error()
	return errors.Is(err, sql.ErrConnDone) || strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "bad connection") || strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "i/o timeout")
}

// nullTime turns a nullable column into *time.Time in UTC.
func nullTime(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	u := t.Time.UTC()
	return &u
}

func nullInt(v sql.NullInt64) *int {
	if !v.Valid {
		return nil
	}
	i := int(v.Int64)
	return &i
}
