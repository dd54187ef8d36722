package local

import (
	"bytes"
	"fmt"
	"strings"
	"sync"

	"github.com/ironcf/ironworker-release/src/backend"
)

const (
	// maxLineBytes caps the remembered stderr line: it becomes the task msg.
	maxLineBytes = 1024
	// stderrTailBytes is how much recent stderr is kept to recognise allocation failures.
	stderrTailBytes = 8 << 10
)

// taskLog sits between a task's pipes and the runner's sink: it serialises the two
// streams, enforces the per-task byte budget and remembers what the Result needs from
// stderr even after the budget is spent.
type taskLog struct {
	mu        sync.Mutex
	sink      backend.LogSink
	max       int64
	written   int64
	truncated bool
	lastByte  byte

	cur      []byte // stderr line being assembled (capped)
	curLong  bool   // cur was capped
	lastLine string // last complete non-empty stderr line
	tail     []byte // last stderrTailBytes of stderr
}

func newTaskLog(sink backend.LogSink, max int64) *taskLog {
	return &taskLog{sink: sink, max: max}
}

func (l *taskLog) setSink(s backend.LogSink) {
	l.mu.Lock()
	l.sink = s
	l.mu.Unlock()
}

func (l *taskLog) write(stream backend.Stream, p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if stream == backend.Stderr {
		l.track(p)
	}
	if l.truncated || len(p) == 0 {
		return
	}
	room := l.max - l.written
	if int64(len(p)) <= room {
		l.emit(stream, p)
		return
	}
	if room > 0 {
		l.emit(stream, p[:room])
	}
	l.truncated = true
	marker := fmt.Sprintf("[log truncated after %d bytes]\n", l.max)
	if l.written > 0 && l.lastByte != '\n' {
		marker = "\n" + marker
	}
	if l.sink != nil {
		l.sink.WriteLog(stream, []byte(marker))
	}
}

func (l *taskLog) emit(stream backend.Stream, p []byte) {
	l.written += int64(len(p))
	l.lastByte = p[len(p)-1]
	if l.sink != nil {
		l.sink.WriteLog(stream, p)
	}
}

// track follows stderr line by line; only the last non-empty line is kept.
func (l *taskLog) track(p []byte) {
	l.tail = append(l.tail, p...)
	if over := len(l.tail) - stderrTailBytes; over > 0 {
		l.tail = append(l.tail[:0], l.tail[over:]...)
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.appendCur(p)
			return
		}
		l.appendCur(p[:i])
		l.endLine()
		p = p[i+1:]
	}
}

func (l *taskLog) appendCur(p []byte) {
	if room := maxLineBytes - len(l.cur); room < len(p) {
		if room > 0 {
			l.cur = append(l.cur, p[:room]...)
		}
		l.curLong = true
		return
	}
	l.cur = append(l.cur, p...)
}

func (l *taskLog) endLine() {
	line := strings.TrimSpace(strings.ToValidUTF8(string(l.cur), "\uFFFD"))
	if line != "" {
		if l.curLong {
			line += " …"
		}
		l.lastLine = line
	}
	l.cur = l.cur[:0]
	l.curLong = false
}

// finish flushes a last stderr line that had no newline.
func (l *taskLog) finish() (lastLine string, tail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.cur) > 0 {
		l.endLine()
	}
	return l.lastLine, string(l.tail)
}
