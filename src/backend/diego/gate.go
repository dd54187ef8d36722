package diego

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/resource"
)

// gate is the http.RoundTripper under every CC, UAA and Log Cache request. A 429 closes
// the gate of its host until the response's Retry-After (or an exponential backoff when
// it has none): no request to that host leaves before then, whichever goroutine sends
// it. The throttled request itself is retried after the wait when its body can be
// replayed and its context leaves time for it; otherwise the 429 goes back to the caller
// (go-cfclient turns it into CF-RateLimitExceeded, which the backend retries).
type gate struct {
	base       http.RoundTripper
	maxRetries int
	now        func() time.Time

	mu    sync.Mutex
	hosts map[string]*hostGate
}

type hostGate struct {
	notBefore time.Time
	strikes   int // consecutive 429s, for the backoff without Retry-After
}

func newGate(base http.RoundTripper) *gate {
	return &gate{base: base, maxRetries: 5, now: time.Now, hosts: map[string]*hostGate{}}
}

func (g *gate) host(h string) *hostGate {
	g.mu.Lock()
	defer g.mu.Unlock()
	hg := g.hosts[h]
	if hg == nil {
		hg = &hostGate{}
		g.hosts[h] = hg
	}
	return hg
}

// wait blocks until the host's gate is open or ctx ends.
func (g *gate) wait(ctx context.Context, hg *hostGate) error {
	for {
		g.mu.Lock()
		d := hg.notBefore.Sub(g.now())
		g.mu.Unlock()
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	hg := g.host(req.URL.Host)
	for attempt := 0; ; attempt++ {
		if err := g.wait(req.Context(), hg); err != nil {
			return nil, err
		}
		resp, err := g.base.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusTooManyRequests {
			g.mu.Lock()
			hg.strikes = 0
			g.mu.Unlock()
			return resp, nil
		}
		g.mu.Lock()
		hg.strikes++
		delay := retryAfter(resp.Header.Get("Retry-After"), g.now())
		if delay <= 0 {
			delay = backoff(hg.strikes)
		}
		until := g.now().Add(delay)
		if until.After(hg.notBefore) {
			hg.notBefore = until
		}
		g.mu.Unlock()

		replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
		deadline, hasDeadline := req.Context().Deadline()
		if attempt >= g.maxRetries || !replayable || (hasDeadline && deadline.Before(until.Add(100*time.Millisecond))) {
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req.Body = body
		}
	}
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return t.Sub(now)
	}
	return 0
}

func backoff(n int) time.Duration {
	d := 250 * time.Millisecond
	for i := 1; i < n && d < 30*time.Second; i++ {
		d *= 2
	}
	if d > 30*time.Second {
		d = 30 * time.Second
	}
	return d
}

// retryable tells whether a failed call may succeed later: rate limits, CC or UAA
// unavailable, network trouble, a single request that timed out.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	if resource.IsRateLimitExceededError(err) {
		return true
	}
	var cf resource.CloudFoundryError
	if errors.As(err, &cf) {
		switch cf.Title {
		case "CF-RateLimitExceeded", "CF-IPBasedRateLimitExceeded", "CF-RateLimitV2APIExceeded",
			"CF-ServiceBrokerRateLimitExceeded", "CF-UaaRateLimited", "CF-ServiceUnavailable", "CF-UaaUnavailable":
			return true
		}
		return cf.Code == 10013 || cf.Code == 10014 || cf.Code == 20008
	}
	var httpErr resource.CloudFoundryHTTPError
	if errors.As(err, &httpErr) {
		switch httpErr.StatusCode {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusInternalServerError:
			return true
		}
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "status code 429") || strings.Contains(msg, "status code 50")
}

// call runs fn with a per-request timeout, retrying retryable failures with backoff
// until ctx ends. The gate already holds requests back until a Retry-After has passed.
func (b *Backend) call(ctx context.Context, fn func(ctx context.Context) error) error {
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, b.requestTimeout)
		err := fn(cctx)
		cancel()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil {
				return errors.Join(ctx.Err(), err)
			}
			return err
		}
		d := backoff(attempt)
		if d > 5*time.Second {
			d = 5 * time.Second
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}
