package diego

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/resource"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

type scripted struct {
	mu    sync.Mutex
	codes []int
	after []string
	times []time.Time
}

func (s *scripted) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.times = append(s.times, time.Now())
	code := http.StatusOK
	ra := ""
	if len(s.codes) > 0 {
		code, s.codes = s.codes[0], s.codes[1:]
		ra, s.after = s.after[0], s.after[1:]
	}
	h := http.Header{}
	if ra != "" {
		h.Set("Retry-After", ra)
	}
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		if string(b) != "body" {
			code = http.StatusBadRequest
		}
	}
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
}

var _ = Describe("gate", func() {
	It("holds every request to a host until Retry-After and replays the throttled one", func() {
		base := &scripted{codes: []int{429}, after: []string{"1"}}
		g := newGate(base)
		req, _ := http.NewRequest(http.MethodPost, "http://cc.example/v3/x", strings.NewReader("body"))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("body")), nil }
		resp, err := g.RoundTrip(req)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(base.times).To(HaveLen(2))
		Expect(base.times[1].Sub(base.times[0])).To(BeNumerically(">=", time.Second))
	})

	It("returns the 429 when the request's deadline comes before Retry-After, and keeps the gate shut", func() {
		base := &scripted{codes: []int{429}, after: []string{"2"}}
		g := newGate(base)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://cc.example/v3/x", nil)
		resp, err := g.RoundTrip(req)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.StatusCode).To(Equal(http.StatusTooManyRequests))
		_, err = g.RoundTrip(req) // still shut: waits, and the context ends first
		Expect(err).To(MatchError(context.DeadlineExceeded))
		Expect(base.times).To(HaveLen(1))
		other, _ := http.NewRequest(http.MethodGet, "http://uaa.example/oauth/token", nil)
		resp, err = g.RoundTrip(other) // other hosts are not held
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
	})

	It("reads Retry-After as seconds or an HTTP date, and backs off without one", func() {
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		Expect(retryAfter("3", now)).To(Equal(3 * time.Second))
		Expect(retryAfter(now.Add(5*time.Second).Format(http.TimeFormat), now)).To(Equal(5 * time.Second))
		Expect(retryAfter("", now)).To(BeZero())
		Expect(retryAfter("soon", now)).To(BeZero())
		Expect(backoff(1)).To(Equal(250 * time.Millisecond))
		Expect(backoff(3)).To(Equal(time.Second))
		Expect(backoff(100)).To(Equal(30 * time.Second))
	})

	It("tells retryable failures apart", func() {
		Expect(retryable(resource.CloudFoundryError{Code: 10013, Title: "CF-RateLimitExceeded"})).To(BeTrue())
		Expect(retryable(resource.CloudFoundryHTTPError{StatusCode: 502})).To(BeTrue())
		Expect(retryable(context.DeadlineExceeded)).To(BeTrue())
		Expect(retryable(resource.CloudFoundryError{Code: 10008, Title: "CF-UnprocessableEntity"})).To(BeFalse())
		Expect(retryable(resource.CloudFoundryError{Code: 10010, Title: "CF-ResourceNotFound"})).To(BeFalse())
		Expect(retryable(errors.New("boom"))).To(BeFalse())
	})

	It("maps CF task outcomes to results", func() {
		Expect(mapResult("SUCCEEDED", "", false, false, 0).Success()).To(BeTrue())
		r := mapResult("FAILED", "APP/TASK/iw-1: Exited with status 137 (out of memory)", false, false, 0)
		Expect(r.ExitCode).To(Equal(137))
		Expect(r.OOM).To(BeTrue())
		r = mapResult("FAILED", "task was cancelled", false, true, time.Minute)
		Expect(r.TimedOut).To(BeTrue())
		Expect(r.Msg).To(ContainSubstring("timed out after 1m0s"))
		r = mapResult("FAILED", "task was cancelled", false, false, 0)
		Expect(r.Cancelled).To(BeTrue())
		Expect(r.Success()).To(BeFalse())
	})

	It("round-trips Refs and refuses foreign ones", func() {
		ref := makeRef("tg", "ag", "iw-1")
		g, a, n, err := parseRef(ref)
		Expect(err).NotTo(HaveOccurred())
		Expect([]string{g, a, n}).To(Equal([]string{"tg", "ag", "iw-1"}))
		_, _, _, err = parseRef("local:123")
		Expect(err).To(HaveOccurred())
		_, _, _, err = parseRef("diego:only")
		Expect(err).To(HaveOccurred())
	})
})
