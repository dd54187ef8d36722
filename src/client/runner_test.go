package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/client"
)

func TestClient(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Client suite")
}

// fakeAPI answers every request with the next of its handlers (the last one repeats)
// and counts the requests.
type fakeAPI struct {
	srv      *httptest.Server
	calls    atomic.Int32
	handlers []http.HandlerFunc
	lastReq  atomic.Pointer[http.Request]
	lastBody atomic.Pointer[[]byte]
}

func newFake(handlers ...http.HandlerFunc) *fakeAPI {
	f := &fakeAPI{handlers: handlers}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(f.calls.Add(1))
		body, _ := io.ReadAll(r.Body)
		f.lastReq.Store(r)
		f.lastBody.Store(&body)
		f.handlers[min(n, len(f.handlers))-1](w, r)
	}))
	DeferCleanup(f.srv.Close)
	return f
}

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func fastClient(url, name string) *client.RunnerClient {
	c, err := client.NewRunnerClient(url, name, "s3cr3t-s3cr3t-s3cr3t", client.RunnerOptions{
		Timeout: 2 * time.Second, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxAttempts: 4})
	Expect(err).NotTo(HaveOccurred())
	return c
}

var _ = Describe("Runner protocol client", func() {
	ctx := context.Background()

	It("authenticates with HTTP basic, or Bearer without a name", func() {
		f := newFake(status(200, `{"leases":[]}`))
		_, err := fastClient(f.srv.URL, "runner-1").Lease(ctx, client.LeaseRequest{})
		Expect(err).NotTo(HaveOccurred())
		user, pass, ok := f.lastReq.Load().BasicAuth()
		Expect(ok).To(BeTrue())
		Expect(user).To(Equal("runner-1"))
		Expect(pass).To(Equal("s3cr3t-s3cr3t-s3cr3t"))

		_, err = fastClient(f.srv.URL, "").Lease(ctx, client.LeaseRequest{})
		Expect(err).NotTo(HaveOccurred())
		Expect(f.lastReq.Load().Header.Get("Authorization")).To(Equal("Bearer s3cr3t-s3cr3t-s3cr3t"))
	})

	It("sends the lease request and decodes leases", func() {
		f := newFake(status(200, `{"leases":[{"lease_id":"l1","expires_at":"2026-01-02T03:04:05Z","attempt":2,"adopt":true,
			"backend_ref":"diego:x","task":{"id":"t1","code_name":"c","env_vars":{"A":"1"},"config":"cfg","timeout":60,
			"created_at":"2026-01-01T00:00:00Z"}}]}`))
		ls, err := fastClient(f.srv.URL, "r").Lease(ctx, client.LeaseRequest{RunnerID: "vm-1", MaxTasks: 3, Wait: 1500 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		Expect(f.lastReq.Load().URL.Path).To(Equal("/internal/v1/lease"))
		var sent map[string]any
		Expect(json.Unmarshal(*f.lastBody.Load(), &sent)).To(Succeed())
		Expect(sent).To(Equal(map[string]any{"runner_id": "vm-1", "max_tasks": 3.0, "wait_seconds": 1.5}))
		Expect(ls).To(HaveLen(1))
		Expect(ls[0].LeaseID).To(Equal("l1"))
		Expect(ls[0].Adopt).To(BeTrue())
		Expect(ls[0].BackendRef).To(Equal("diego:x"))
		Expect(ls[0].Task.EnvVars).To(Equal(map[string]string{"A": "1"}))
		Expect(ls[0].Task.Config).To(HaveValue(Equal("cfg")))
		Expect(ls[0].ExpiresAt).To(Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
	})

	It("retries idempotent calls on 503 and 502 with backoff", func() {
		f := newFake(status(503, `{"msg":"later"}`), status(502, `bad gateway`), status(200, `{"cancel":true,"status":"cancelled"}`))
		hb, err := fastClient(f.srv.URL, "r").Heartbeat(ctx, "t1", client.HeartbeatRequest{LeaseID: "l1"})
		Expect(err).NotTo(HaveOccurred())
		Expect(hb.Cancel).To(BeTrue())
		Expect(f.calls.Load()).To(Equal(int32(3)))
		Expect(f.lastReq.Load().URL.Path).To(Equal("/internal/v1/tasks/t1/heartbeat"))
	})

	It("gives up after MaxAttempts with the last error", func() {
		f := newFake(status(503, `{"msg":"database down"}`))
		_, err := fastClient(f.srv.URL, "r").Complete(ctx, "t1", client.CompleteRequest{LeaseID: "l", Status: client.StatusComplete})
		var he *client.HTTPError
		Expect(errors.As(err, &he)).To(BeTrue())
		Expect(he.Code).To(Equal(503))
		Expect(he.Msg).To(Equal("database down"))
		Expect(f.calls.Load()).To(Equal(int32(4)))
	})

	It("does not retry a lease, nor a log append except on 503", func() {
		f := newFake(status(503, `{"msg":"later"}`))
		_, err := fastClient(f.srv.URL, "r").Lease(ctx, client.LeaseRequest{})
		Expect(err).To(HaveOccurred())
		Expect(f.calls.Load()).To(Equal(int32(1)))

		g := newFake(status(500, `{"msg":"oops"}`))
		Expect(fastClient(g.srv.URL, "r").AppendLog(ctx, "t1", "l1", client.Stderr, []byte("x"))).NotTo(Succeed())
		Expect(g.calls.Load()).To(Equal(int32(1)))

		h := newFake(status(503, `{"msg":"later"}`), status(200, `{"msg":"ok"}`))
		Expect(fastClient(h.srv.URL, "r").AppendLog(ctx, "t1", "l1", client.Stderr, []byte("line\n"))).To(Succeed())
		Expect(h.calls.Load()).To(Equal(int32(2)))
		Expect(h.lastReq.Load().URL.Query().Get("stream")).To(Equal("stderr"))
		Expect(h.lastReq.Load().URL.Query().Get("lease_id")).To(Equal("l1"))
		Expect(string(*h.lastBody.Load())).To(Equal("line\n"))
	})

	It("retries connection errors of idempotent calls", func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		addr := ln.Addr().String()
		Expect(ln.Close()).To(Succeed()) // nothing listens: connection refused
		c := fastClient("http://"+addr, "r")
		start := time.Now()
		_, err = c.Progress(ctx, "t1", "l1", nil, nil)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("refused"))
		Expect(time.Since(start)).To(BeNumerically(">=", 5*time.Millisecond+10*time.Millisecond+20*time.Millisecond), "three backoffs")
	})

	It("maps 409, 404 and 401 to sentinel errors", func() {
		f := newFake(status(409, `{"msg":"Lease lost"}`))
		_, err := fastClient(f.srv.URL, "r").Heartbeat(ctx, "t1", client.HeartbeatRequest{LeaseID: "l"})
		Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue())
		Expect(errors.Is(err, client.ErrTaskFinished)).To(BeFalse())
		Expect(f.calls.Load()).To(Equal(int32(1)), "a 409 is final")

		g := newFake(status(409, `{"msg":"Task has already finished with status killed","status":"killed"}`))
		_, err = fastClient(g.srv.URL, "r").Complete(ctx, "t1", client.CompleteRequest{LeaseID: "l", Status: client.StatusComplete})
		Expect(errors.Is(err, client.ErrTaskFinished)).To(BeTrue())
		Expect(errors.Is(err, client.ErrLeaseLost)).To(BeTrue())
		var he *client.HTTPError
		Expect(errors.As(err, &he)).To(BeTrue())
		Expect(he.Status).To(Equal("killed"))

		h := newFake(status(404, `{"msg":"Task not found"}`))
		_, err = fastClient(h.srv.URL, "r").OpenArchive(ctx, "t1", "l")
		Expect(errors.Is(err, client.ErrNotFound)).To(BeTrue())

		u := newFake(status(401, `{"msg":"Runner credential required"}`))
		_, err = fastClient(u.srv.URL, "r").Lease(ctx, client.LeaseRequest{})
		Expect(errors.Is(err, client.ErrUnauthorized)).To(BeTrue())
	})

	It("bounds each attempt by Timeout, and a lease by its wait on top", func() {
		slow := func(d time.Duration) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-time.After(d):
				case <-r.Context().Done():
				}
				status(200, `{"leases":[],"cancel":false}`)(w, r)
			}
		}
		f := newFake(slow(3 * time.Second))
		c, err := client.NewRunnerClient(f.srv.URL, "r", "secret-secret-secret", client.RunnerOptions{Timeout: 200 * time.Millisecond, MaxAttempts: 1})
		Expect(err).NotTo(HaveOccurred())
		start := time.Now()
		_, err = c.Heartbeat(ctx, "t1", client.HeartbeatRequest{LeaseID: "l"})
		Expect(errors.Is(err, context.DeadlineExceeded)).To(BeTrue(), "%v", err)
		Expect(time.Since(start)).To(BeNumerically("<", time.Second))

		g := newFake(slow(500 * time.Millisecond))
		c, err = client.NewRunnerClient(g.srv.URL, "r", "secret-secret-secret", client.RunnerOptions{Timeout: 200 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		_, err = c.Lease(ctx, client.LeaseRequest{Wait: time.Second})
		Expect(err).NotTo(HaveOccurred(), "the lease's wait extends its timeout")
	})

	It("honours the caller's context between retries", func() {
		f := newFake(status(503, `{}`))
		c, err := client.NewRunnerClient(f.srv.URL, "r", "secret-secret-secret", client.RunnerOptions{Backoff: time.Second, MaxAttempts: 10})
		Expect(err).NotTo(HaveOccurred())
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = c.Heartbeat(cctx, "t1", client.HeartbeatRequest{LeaseID: "l"})
		Expect(err).To(HaveOccurred())
		Expect(time.Since(start)).To(BeNumerically("<", 900*time.Millisecond))
		Expect(f.calls.Load()).To(Equal(int32(1)))
	})

	It("streams an archive with its size and checksum", func() {
		f := newFake(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/zip")
			w.Header().Set("X-Archive-MD5", "abc")
			io.WriteString(w, strings.Repeat("z", 1000))
		})
		a, err := fastClient(f.srv.URL, "r").OpenArchive(ctx, "t1", "l 1")
		Expect(err).NotTo(HaveOccurred())
		data, err := io.ReadAll(a)
		Expect(err).NotTo(HaveOccurred())
		Expect(a.Close()).To(Succeed())
		Expect(data).To(HaveLen(1000))
		Expect(a.Size).To(Equal(int64(1000)))
		Expect(a.MD5).To(Equal("abc"))
		Expect(f.lastReq.Load().URL.Query().Get("lease_id")).To(Equal("l 1"))
	})

	It("refuses a bad base URL or an empty secret", func() {
		_, err := client.NewRunnerClient("ftp://x", "r", "s", client.RunnerOptions{})
		Expect(err).To(HaveOccurred())
		_, err = client.NewRunnerClient("http://x", "r", "", client.RunnerOptions{})
		Expect(err).To(HaveOccurred())
	})
})
