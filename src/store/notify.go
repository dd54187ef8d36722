package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// TaskQueueChannel is the LISTEN/NOTIFY channel that wakes lease long-polls.
const TaskQueueChannel = "iron_tasks_queued"

// notifyInterval is the least time between two NOTIFYs of one Store: under load every
// enqueue would otherwise cost a NOTIFY transaction of its own, while one per interval
// wakes every long-poll of every API instance just as well.
const notifyInterval = 2 * time.Millisecond

// queueNotifier tells lease long-polls that the queue may have changed (tasks queued,
// slots freed), after the change committed: in-process at once (onQueued), and to other
// processes with a coalesced NOTIFY sent from a connection of its own.
//
// NOTIFY is not sent inside the changing transaction because PostgreSQL holds its global
// notify-queue lock from a notifying transaction's pre-commit through its commit's WAL
// flush, which serialised every enqueue on one fsync. The notifier's session runs with
// synchronous_commit off (NOTIFY assigns a transaction id, so its commit writes a
// record): a wake-up is best effort anyway, and waiters re-check on a timer.
type queueNotifier struct {
	db       *sql.DB
	id       string // the NOTIFY payload: tells this Store's notifications apart
	onQueued atomic.Pointer[func()]
	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	start    sync.Once
	closed   atomic.Bool
	failures atomic.Int64
}

func newQueueNotifier(db *sql.DB) *queueNotifier {
	return &queueNotifier{db: db, id: NewID(), kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// WakeLocally wires this process's QueueWaker to the Store: committed changes wake its
// long-polls at once (OnQueued), and the NOTIFYs this Store sends for them are not
// taken as a second wake-up when they come back on the waker's LISTEN.
func (s *Store) WakeLocally(w *QueueWaker) {
	s.OnQueued(w.Wake)
	w.ignore.Store(s.notifier.id)
}

// OnQueued sets a function called (without blocking the caller's work: it must be
// cheap) after each committed change that may let a lease take a task; the API wires
// its QueueWaker here so that its own long-polls wake without a database round trip.
func (s *Store) OnQueued(f func()) {
	if f == nil {
		s.notifier.onQueued.Store(nil)
		return
	}
	s.notifier.onQueued.Store(&f)
}

// notifyAfterCommit has queueChanged called once tx commits (inTx does it; nothing
// when tx rolls back).
func (s *Store) notifyAfterCommit(tx *sql.Tx) { s.notifyTxs.Store(tx, struct{}{}) }

// queueChanged is called after a commit that queued tasks or freed a slot.
func (s *Store) queueChanged() {
	n := s.notifier
	if f := n.onQueued.Load(); f != nil {
		(*f)()
	}
	if n.closed.Load() {
		return
	}
	n.start.Do(func() { go n.loop(s) })
	select {
	case n.kick <- struct{}{}:
	default: // a NOTIFY is already due; it covers this change too
	}
}

func (n *queueNotifier) loop(s *Store) {
	defer close(n.done)
	var conn *sql.Conn
	defer func() { discard(conn) }()
	for {
		select {
		case <-n.stop:
			return
		case <-n.kick:
		}
		var err error
		if conn == nil {
			conn, err = n.open()
		}
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = conn.ExecContext(ctx, `SELECT pg_notify($1, $2)`, TaskQueueChannel, n.id)
			cancel()
		}
		if err != nil {
			discard(conn)
			conn = nil
			// Waiters re-check on their own timer; log the first failure of a run only.
			if n.failures.Add(1) == 1 {
				s.log.Warn("cannot notify lease long-polls; they fall back to periodic re-checks", "error", err.Error())
			}
		} else if n.failures.Swap(0) > 0 {
			s.log.Info("notifying lease long-polls works again")
		}
		select {
		case <-n.stop:
			return
		case <-time.After(notifyInterval):
		}
	}
}

func (n *queueNotifier) open() (*sql.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := n.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("notifier connection: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `SET synchronous_commit = off`); err != nil {
		discard(conn)
		return nil, fmt.Errorf("notifier connection: %w", err)
	}
	return conn, nil
}

// discard closes the notifier's session instead of returning it to the pool, where its
// synchronous_commit = off would weaken other transactions.
func discard(conn *sql.Conn) {
	if conn == nil {
		return
	}
	conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

// close stops the notifier goroutine (if it ever started).
func (n *queueNotifier) close() {
	if n.closed.Swap(true) {
		return
	}
	started := true
	n.start.Do(func() { started = false })
	close(n.stop)
	if started {
		<-n.done
	}
}
