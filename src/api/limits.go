package api

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// Request body caps and task-creation rate limits (config.Limits).

// uploadFramingBytes is room for multipart boundaries and part headers of an upload.
const uploadFramingBytes = 1 << 20

// bodyLimit is the most a route may send: the code upload its zip plus its data part,
// every other route MaxRequestBytes.
func (s *Server) bodyLimit(c *gin.Context) int64 {
	if c.Request.Method == http.MethodPost && c.FullPath() == "/2/projects/:project_id/codes" {
		return s.limits.MaxCodeSizeBytes + s.limits.MaxRequestBytes + uploadFramingBytes
	}
	return s.limits.MaxRequestBytes
}

// limitBody caps the request body of every route, including those whose handlers do not
// bound their reads themselves (the broker under /v2, ignored multipart parts, routes
// that take no body). Handlers that do bound it (readBody reads limit+1 bytes) keep
// their own 413 answers: the hard cap sits one byte above. The broker answers 413 in
// OSB's format at once when Content-Length announces too much.
func (s *Server) limitBody() gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.Body == nil || c.Request.Body == http.NoBody {
			c.Next()
			return
		}
		limit := s.bodyLimit(c)
		if strings.HasPrefix(c.Request.URL.Path, "/v2/") && c.Request.ContentLength > limit {
			c.AbortWithStatusJSON(http.StatusRequestEntityTooLarge,
				gin.H{"description": fmt.Sprintf("Request body is larger than %d bytes", limit)})
			return
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit+1)
		c.Next()
	}
}

// taskLimiter is a token bucket per project: rate tasks per second, burst at most.
// Buckets live in memory on each API instance; idle ones are dropped so that memory
// stays bounded by the projects active within the last refill period.
type taskLimiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxIdleBuckets triggers a sweep of full (idle) buckets.
const maxIdleBuckets = 10000

func newTaskLimiter(rate float64, burst int, now func() time.Time) *taskLimiter {
	if rate <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	return &taskLimiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}}
}

// take removes n tokens from the project's bucket, or answers how long until n tokens
// are there (n is capped at the burst, so that a wait always ends).
func (l *taskLimiter) take(project string, n int) (time.Duration, bool) {
	if l == nil {
		return 0, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[project]
	if !ok {
		if len(l.buckets) >= maxIdleBuckets {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[project] = b
	}
	if d := now.Sub(b.at).Seconds(); d > 0 {
		b.tokens = math.Min(l.burst, b.tokens+d*l.rate)
	}
	b.at = now
	need := math.Min(float64(n), l.burst)
	if b.tokens >= need {
		b.tokens -= need
		return 0, true
	}
	return time.Duration((need - b.tokens) / l.rate * float64(time.Second)), false
}

// sweep drops the buckets that have refilled completely (nothing to remember).
func (l *taskLimiter) sweep(now time.Time) {
	for p, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, p)
		}
	}
}

// allowTasks answers 429 {"msg"} with Retry-After (whole seconds, at least 1) when the
// project may not create n more tasks now.
func (s *Server) allowTasks(c *gin.Context, n int) bool {
	wait, ok := s.taskRate.take(projectID(c), n)
	if ok {
		return true
	}
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	c.Header("Retry-After", strconv.Itoa(secs))
	abortMsg(c, http.StatusTooManyRequests,
		fmt.Sprintf("Too many tasks created; this project may create %g tasks per second. Retry after %d seconds", s.taskRate.rate, secs))
	return false
}
