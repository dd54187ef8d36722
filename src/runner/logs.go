package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/client"
)

// logForwarder is a task's backend.LogSink: it buffers output (bounded) and sends it to
// the API in order from one goroutine, every flush interval or when a batch is full.
// WriteLog never blocks on the network. Close sends whatever is left, so the tail of a
// task's output is in its log before the task is completed.
type logForwarder struct {
	send     func(ctx context.Context, stream string, data []byte) error
	log      *slog.Logger
	metrics  *metrics
	interval time.Duration
	batch    int
	max      int

	mu      sync.Mutex
	chunks  []logChunk
	size    int
	dropped int64
	lost    bool // the lease is gone: nothing more is sent
	closing bool
	looping bool // loop runs (it starts with the first output or cursor)

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	ctx  context.Context

	// sendCursor, when set (before any output), records a backend log cursor once the
	// output before it was sent (see LogCursor).
	sendCursor func(ctx context.Context, cursor string) error
}

type logChunk struct {
	stream string
	data   []byte
}

// cursorMark is the stream of a chunk that is not output but a backend log cursor.
const cursorMark = "\x00cursor"

// LogCursor implements the diego backend's CursorSink: the cursor covers the output
// written so far. It is queued behind that output and recorded through the API once
// the output was sent, so that a runner adopting the task resumes the backend's log
// there (nothing stored twice; a crash between the two costs a few repeated lines).
func (f *logForwarder) LogCursor(cursor string) {
	if f.sendCursor == nil || cursor == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lost {
		return
	}
	f.startLocked()
	if n := len(f.chunks); n > 0 && f.chunks[n-1].stream == cursorMark {
		f.chunks[n-1].data = []byte(cursor)
		return
	}
	f.chunks = append(f.chunks, logChunk{stream: cursorMark, data: []byte(cursor)})
}

// startLocked starts the sending loop once there is something to send (a task without
// output costs no goroutine); f.mu is held.
func (f *logForwarder) startLocked() {
	if !f.looping && !f.closing {
		f.looping = true
		go f.loop()
	}
}

func newLogForwarder(ctx context.Context, send func(ctx context.Context, stream string, data []byte) error,
	log *slog.Logger, m *metrics, interval time.Duration, batch, max int) *logForwarder {
	f := &logForwarder{send: send, log: log, metrics: m, interval: interval, batch: batch, max: max,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), ctx: ctx}
	return f
}

// WriteLog implements backend.LogSink.
func (f *logForwarder) WriteLog(stream backend.Stream, p []byte) {
	if len(p) == 0 {
		return
	}
	name := client.Stdout
	if stream == backend.Stderr {
		name = client.Stderr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lost {
		return
	}
	f.startLocked()
	if f.size+len(p) > f.max {
		f.dropped += int64(len(p))
		f.metrics.logBytesDropped.Add(float64(len(p)))
		return
	}
	if n := len(f.chunks); n > 0 && f.chunks[n-1].stream == name {
		f.chunks[n-1].data = append(f.chunks[n-1].data, p...)
	} else {
		f.chunks = append(f.chunks, logChunk{stream: name, data: append([]byte(nil), p...)})
	}
	f.size += len(p)
	if f.size >= f.batch {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

func (f *logForwarder) loop() {
	defer close(f.done)
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			f.flush()
			return
		case <-t.C:
		case <-f.kick:
		}
		f.flush()
	}
}

// flush sends everything buffered so far, in order.
func (f *logForwarder) flush() {
	f.mu.Lock()
	chunks, dropped := f.chunks, f.dropped
	f.chunks, f.size, f.dropped = nil, 0, 0
	f.mu.Unlock()
	if dropped > 0 {
		chunks = append(chunks, logChunk{stream: client.Stderr,
			data: fmt.Appendf(nil, "\n[iron-runner: %d bytes of output dropped because the API did not keep up]\n", dropped)})
	}
	cursor := ""
	for _, c := range chunks {
		if c.stream == cursorMark {
			cursor = string(c.data)
			continue
		}
		for off := 0; off < len(c.data); off += f.batch {
			end := min(off+f.batch, len(c.data))
			if !f.sendOne(c.stream, c.data[off:end]) {
				return
			}
		}
	}
	if cursor != "" {
		f.recordCursor(cursor)
	}
}

func (f *logForwarder) recordCursor(cursor string) {
	f.mu.Lock()
	lost := f.lost
	f.mu.Unlock()
	if lost {
		return
	}
	if err := f.sendCursor(f.ctx, cursor); err != nil {
		if errors.Is(err, client.ErrLeaseLost) {
			f.markLost()
			return
		}
		f.log.Warn("could not record the task's log cursor", "error", err.Error())
	}
}

func (f *logForwarder) sendOne(stream string, data []byte) bool {
	f.mu.Lock()
	lost := f.lost
	f.mu.Unlock()
	if lost {
		return false
	}
	err := f.send(f.ctx, stream, data)
	switch {
	case err == nil:
		f.metrics.logBytesSent.Add(float64(len(data)))
		return true
	case errors.Is(err, client.ErrLeaseLost):
		f.markLost()
		return false
	default:
		// Not resent: a failed append may have been stored already, and a duplicate is
		// worse than a gap that the warning explains.
		f.metrics.logBytesDropped.Add(float64(len(data)))
		f.log.Warn("could not forward task output", "bytes", len(data), "error", err.Error())
		return true
	}
}

func (f *logForwarder) markLost() {
	f.mu.Lock()
	f.lost = true
	f.chunks, f.size = nil, 0
	f.mu.Unlock()
}

// Close flushes what is buffered and stops; it returns when everything was sent (or
// the lease was lost, or ctx ended).
func (f *logForwarder) Close(ctx context.Context) {
	f.mu.Lock()
	already, looping := f.closing, f.looping
	f.closing = true
	f.mu.Unlock()
	if !already {
		close(f.stop)
		if !looping {
			// Nothing was ever written: no loop to stop.
			close(f.done)
		}
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		f.markLost()
	}
}

// Abandon drops what is buffered and stops without sending.
func (f *logForwarder) Abandon() {
	f.markLost()
	f.Close(context.Background())
}
