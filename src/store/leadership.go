package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"
)

// Leadership keys: the session-level advisory locks that elect one leader per job
// among the iron-api instances.
const (
	SchedulerLeadershipKey = lockScheduler
	ReaperLeadershipKey    = lockReaper
)

// Leadership is a leader's hold on a session-level advisory lock, kept on a dedicated
// connection: it lasts as long as that connection.
type Leadership struct {
	conn *sql.Conn
	key  int64
}

// AcquireLeadership tries (without waiting) to take the advisory lock key on a
// dedicated connection; ok is false when another session leads.
func (s *Store) AcquireLeadership(ctx context.Context, key int64) (*Leadership, bool, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("leadership %#x: get connection: %w", key, err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		discardConn(conn)
		return nil, false, fmt.Errorf("leadership %#x: try lock: %w", key, err)
	}
	if !ok {
		conn.Close()
		return nil, false, nil
	}
	return &Leadership{conn: conn, key: key}, true, nil
}

// AcquireSchedulerLeadership tries (without waiting) to become the scheduler leader.
// ok is false when another session leads.
func (s *Store) AcquireSchedulerLeadership(ctx context.Context) (*Leadership, bool, error) {
	return s.AcquireLeadership(ctx, SchedulerLeadershipKey)
}

// AcquireReaperLeadership tries (without waiting) to become the lease reaper's leader;
// ok is false when another session leads.
func (s *Store) AcquireReaperLeadership(ctx context.Context) (*Leadership, bool, error) {
	return s.AcquireLeadership(ctx, ReaperLeadershipKey)
}

// Check tells whether leadership is still held: an error means the connection (and so
// the lock) is gone, or cannot be vouched for; Release it and acquire again.
func (l *Leadership) Check(ctx context.Context) error {
	var held bool
	err := l.conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
		AND pid = pg_backend_pid() AND granted AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid
		AND objsubid = 1)`, l.key).Scan(&held)
	if err != nil {
		return fmt.Errorf("leadership lost: %w", err)
	}
	if !held {
		return errors.New("leadership lost: the advisory lock is no longer held")
	}
	return nil
}

// Release gives leadership up: it unlocks at once when the connection still works (so
// another instance can lead without waiting for the session to end), then closes the
// session, which frees the lock in any case; the connection is never returned to the
// pool. Releasing a nil or released Leadership does nothing.
func (l *Leadership) Release() {
	if l == nil || l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = l.conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, l.key)
	discardConn(l.conn)
	l.conn = nil
}

// discardConn closes a dedicated connection for good instead of pooling it.
func discardConn(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}
