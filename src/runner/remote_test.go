package runner_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/runner"
)

// remoteClient adds the diego-related runner protocol calls to the scripted client.
type remoteClient struct {
	*fakeClient
	rmu      sync.Mutex
	tokens   []string // task ids asked for
	tokenErr error
	released []string
}

func (c *remoteClient) InputToken(_ context.Context, taskID, leaseID string) (client.InputToken, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.tokens = append(c.tokens, taskID)
	if c.tokenErr != nil {
		return client.InputToken{}, c.tokenErr
	}
	return client.InputToken{URL: "https://api.example.com/internal/v1/tasks/" + taskID + "/input", Token: "tok-" + leaseID, BrokerInstance: true}, nil
}

func (c *remoteClient) Release(_ context.Context, taskID, _ string) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.released = append(c.released, taskID)
	return nil
}

func (c *remoteClient) releases() []string {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return append([]string(nil), c.released...)
}

// specBackend records the Specs it was started with.
type specBackend struct {
	*scriptBackend
	smu   sync.Mutex
	specs []backend.Spec
}

func (b *specBackend) Start(ctx context.Context, spec backend.Spec, sink backend.LogSink) (backend.Ref, error) {
	b.smu.Lock()
	b.specs = append(b.specs, spec)
	b.smu.Unlock()
	return b.scriptBackend.Start(ctx, spec, sink)
}

func (b *specBackend) started() []backend.Spec {
	b.smu.Lock()
	defer b.smu.Unlock()
	return append([]backend.Spec(nil), b.specs...)
}

var _ = Describe("Runner with a backend whose tasks run away from it (diego)", func() {
	var (
		rc *remoteClient
		be *specBackend
	)
	BeforeEach(func() {
		rc = &remoteClient{fakeClient: newFakeClient()}
		be = &specBackend{scriptBackend: newScript("diego", func(backend.LogSink, <-chan struct{}) backend.Result { return backend.Result{} })}
	})
	withRemote := func(mod func(*runner.Options)) func(*runner.Options) {
		return func(o *runner.Options) {
			o.Client = rc
			o.SpaceFor = func(projectID string, inst bool) string {
				if inst {
					return "iron-" + projectID
				}
				return ""
			}
			if mod != nil {
				mod(o)
			}
		}
	}

	It("asks for a task input credential before Start and fills the Spec: input, first lease, project space", func() {
		startFake(rc.fakeClient, be, withRemote(nil))
		first := lease("t1", 60)
		first.Task.ProjectID = "p1"
		second := lease("t2", 60)
		second.Attempt = 2 // an earlier lease may have started it
		rc.leases <- []client.Lease{first, second}
		Eventually(rc.completed, 10*time.Second).Should(HaveLen(2))
		specs := map[string]backend.Spec{}
		for _, s := range be.started() {
			specs[s.TaskID] = s
		}
		Expect(specs).To(HaveLen(2))
		Expect(specs["t1"].InputURL).To(Equal("https://api.example.com/internal/v1/tasks/t1/input"))
		Expect(specs["t1"].InputToken).To(Equal("tok-lease-t1"))
		Expect(specs["t1"].FirstLease).To(BeTrue())
		Expect(specs["t1"].Space).To(Equal("iron-p1"))
		Expect(specs["t2"].FirstLease).To(BeFalse())
	})

	It("does not start a task it got no input credential for, leaving its lease to expire", func() {
		rc.tokenErr = &client.HTTPError{Code: 409, Msg: "Lease lost"}
		startFake(rc.fakeClient, be, withRemote(nil))
		rc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(func() int { rc.rmu.Lock(); defer rc.rmu.Unlock(); return len(rc.tokens) }, 10*time.Second).Should(BeNumerically(">=", 1))
		Consistently(be.started, 500*time.Millisecond).Should(BeEmpty())
		Expect(rc.completed()).To(BeEmpty())
	})

	It("completes a task whose code the backend refuses error with no_retry", func() {
		be.startErr = fmt.Errorf("%w: the code has no command", backend.ErrBadCode)
		startFake(rc.fakeClient, be, withRemote(nil))
		rc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(rc.completed, 10*time.Second).Should(HaveLen(1))
		Expect(rc.completed()[0].Status).To(Equal(client.StatusError))
		Expect(rc.completed()[0].NoRetry).To(BeTrue())
	})

	It("hands a running task back on drain (Release) instead of waiting for its lease to expire", func() {
		be.scriptBackend = newScript("diego", runUntilCancelled)
		ctx, cancel := context.WithCancel(context.Background())
		opts := runner.Options{Backend: be, Slots: 1, LeaseWait: 200 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond,
			DrainTimeout: 200 * time.Millisecond, LogFlushInterval: 20 * time.Millisecond, Logger: testLogger()}
		withRemote(nil)(&opts)
		r, err := runner.New(opts)
		Expect(err).NotTo(HaveOccurred())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()
		rc.leases <- []client.Lease{lease("t1", 60)}
		Eventually(r.Busy, 10*time.Second).Should(Equal(1))
		Eventually(func() int { return len(be.started()) }, 10*time.Second).Should(Equal(1))
		cancel()
		Eventually(done, 10*time.Second).Should(BeClosed())
		Expect(rc.releases()).To(Equal([]string{"t1"}))
		Expect(be.cancelledRefs()).To(BeEmpty(), "the task keeps running for another runner")
		Expect(rc.completed()).To(BeEmpty())
		var withRef bool
		for _, hb := range rc.hbs() {
			withRef = withRef || hb.BackendRef != ""
		}
		Expect(withRef).To(BeTrue(), "the ref was reported before the release")
	})

	It("uses a third of the lease duration as the heartbeat interval when that is shorter", func() {
		startFake(rc.fakeClient, newScript("diego", runUntilCancelled), withRemote(func(o *runner.Options) { o.HeartbeatInterval = time.Hour }))
		l := lease("t1", 60)
		l.LeaseDuration = 600 * time.Millisecond
		rc.leases <- []client.Lease{l}
		Eventually(func() int { return len(rc.hbs()) }, 5*time.Second).Should(BeNumerically(">=", 4))
	})
})
