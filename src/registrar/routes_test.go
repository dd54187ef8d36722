package registrar_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/registrar"
)

// fakeRouter is a gorouter on NATS: it answers router.greet, can publish router.start,
// and records router.register and router.unregister messages.
type fakeRouter struct {
	nc *nats.Conn

	mu         sync.Mutex
	registers  []received
	unregister []received
}

type received struct {
	at   time.Time
	body map[string]any
	raw  []byte
}

// newFakeRouter connects to a NATS server; minInterval 0 answers no greet.
func newFakeRouter(url string, minInterval, prune int, opts ...nats.Option) *fakeRouter {
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))...)
	Expect(err).NotTo(HaveOccurred())
	r := &fakeRouter{nc: nc}
	greeting, _ := json.Marshal(registrar.RouterGreeting{ID: "0-router", Hosts: []string{"192.0.2.2"},
		MinimumRegisterIntervalInSeconds: minInterval, PruneThresholdInSeconds: prune})
	if minInterval > 0 {
		_, err = nc.Subscribe("router.greet", func(m *nats.Msg) { _ = m.Respond(greeting) })
		Expect(err).NotTo(HaveOccurred())
	}
	record := func(list *[]received) nats.MsgHandler {
		return func(m *nats.Msg) {
			var body map[string]any
			Expect(json.Unmarshal(m.Data, &body)).To(Succeed())
			r.mu.Lock()
			*list = append(*list, received{at: time.Now(), body: body, raw: m.Data})
			r.mu.Unlock()
		}
	}
	_, err = nc.Subscribe("router.register", record(&r.registers))
	Expect(err).NotTo(HaveOccurred())
	_, err = nc.Subscribe("router.unregister", record(&r.unregister))
	Expect(err).NotTo(HaveOccurred())
	Expect(nc.Flush()).To(Succeed())
	return r
}

func (r *fakeRouter) registered() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.registers...)
}

func (r *fakeRouter) unregistered() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.unregister...)
}

func (r *fakeRouter) count() int { return len(r.registered()) }

func (r *fakeRouter) start(minInterval int) {
	b, _ := json.Marshal(registrar.RouterGreeting{ID: "0-router", Hosts: []string{"192.0.2.2"},
		MinimumRegisterIntervalInSeconds: minInterval, PruneThresholdInSeconds: 120})
	Expect(r.nc.Publish("router.start", b)).To(Succeed())
	Expect(r.nc.Flush()).To(Succeed())
}

func (r *fakeRouter) close() { r.nc.Close() }

func routesConfig(servers ...string) config.RegistrarRoutes {
	f := false
	c := config.Registrar{
		Marketplace: config.RegistrarMarketplace{Enabled: &f},
		Routes: config.RegistrarRoutes{
			NATS: config.RegistrarNATS{Servers: servers, MaxReconnectWait: config.Duration(200 * time.Millisecond)},
			Host: "10.0.16.5", Port: 8080, URIs: []string{"iron.sys.example.com", "ironworker.sys.example.com"},
			Tags: map[string]string{"component": "iron-api"}, PrivateInstanceID: "a6f0c1d2-instance",
		},
	}
	c.ApplyDefaults()
	Expect(c.Validate()).To(Succeed())
	return c.Routes
}

// runRoutes runs the registrar until the returned stop is called (which waits).
func runRoutes(cfg config.RegistrarRoutes) (*registrar.Routes, func()) {
	r := registrar.NewRoutes(cfg, registrar.RoutesOptions{GreetTimeout: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		Eventually(done).Should(Receive(BeNil()))
	}
	DeferCleanup(stop)
	return r, stop
}

var _ = Describe("Routes", func() {
	var srv *natsserver.Server

	BeforeEach(func() {
		srv = startNATS(natsOpts{})
		DeferCleanup(srv.Shutdown)
	})

	It("greets gorouter, then registers on gorouter's interval with exactly the fields gorouter reads", func() {
		router := newFakeRouter("nats://"+natsAddr(srv), 1, 30)
		DeferCleanup(router.close)
		r, _ := runRoutes(routesConfig(natsAddr(srv))) // configured 20s; gorouter asks for 1s
		Eventually(router.count, 10*time.Second).Should(BeNumerically(">=", 4))
		Expect(r.Interval()).To(Equal(time.Second))
		regs := router.registered()
		for i := 1; i < len(regs); i++ {
			gap := regs[i].at.Sub(regs[i-1].at)
			Expect(gap).To(BeNumerically("~", time.Second, 400*time.Millisecond))
		}
		body := regs[0].body
		Expect(keys(body)).To(ConsistOf("host", "port", "uris", "private_instance_id", "tags"))
		Expect(body["host"]).To(Equal("10.0.16.5"))
		Expect(body["port"]).To(BeEquivalentTo(8080))
		Expect(body["uris"]).To(Equal([]any{"iron.sys.example.com", "ironworker.sys.example.com"}))
		Expect(body["private_instance_id"]).To(Equal("a6f0c1d2-instance"))
		Expect(body["tags"]).To(Equal(map[string]any{"component": "iron-api"}))
	})

	It("uses its own interval when shorter, or when no gorouter answers the greet", func() {
		router := newFakeRouter("nats://"+natsAddr(srv), 0, 0)
		DeferCleanup(router.close)
		cfg := routesConfig(natsAddr(srv))
		cfg.RegisterInterval = config.Duration(300 * time.Millisecond)
		r, _ := runRoutes(cfg)
		Eventually(router.count).Should(BeNumerically(">=", 5))
		Expect(r.Interval()).To(Equal(300 * time.Millisecond))
	})

	It("sends tls_port and server_cert_domain_san for a TLS backend, and the optional fields when configured", func() {
		router := newFakeRouter("nats://"+natsAddr(srv), 0, 0)
		DeferCleanup(router.close)
		cfg := routesConfig(natsAddr(srv))
		cfg.Port, cfg.TLSPort, cfg.ServerCertDomainSAN = 0, 8443, "iron-api.service.cf.internal"
		cfg.AvailabilityZone, cfg.Protocol = "z1", "http2"
		runRoutes(cfg)
		Eventually(router.count).Should(BeNumerically(">=", 1))
		body := router.registered()[0].body
		Expect(keys(body)).To(ConsistOf("host", "tls_port", "server_cert_domain_san", "uris", "private_instance_id", "tags",
			"availability_zone", "protocol"))
		Expect(body["tls_port"]).To(BeEquivalentTo(8443))
		Expect(body["server_cert_domain_san"]).To(Equal("iron-api.service.cf.internal"))
	})

	It("re-registers at once when router.start arrives, adopting its interval", func() {
		router := newFakeRouter("nats://"+natsAddr(srv), 0, 0)
		DeferCleanup(router.close)
		r, _ := runRoutes(routesConfig(natsAddr(srv))) // 20s: no heartbeat during the test
		Eventually(router.count).Should(Equal(1))
		Consistently(router.count, 700*time.Millisecond).Should(Equal(1))
		sent := time.Now()
		router.start(5)
		Eventually(router.count, 2*time.Second).Should(Equal(2))
		Expect(router.registered()[1].at.Sub(sent)).To(BeNumerically("<", 500*time.Millisecond))
		Expect(r.Interval()).To(Equal(5 * time.Second))
	})

	It("publishes router.unregister with the same body when stopped", func() {
		router := newFakeRouter("nats://"+natsAddr(srv), 0, 0)
		DeferCleanup(router.close)
		_, stop := runRoutes(routesConfig(natsAddr(srv)))
		Eventually(router.count).Should(Equal(1))
		stop()
		Eventually(router.unregistered).Should(HaveLen(1))
		Expect(router.unregistered()[0].raw).To(Equal(router.registered()[0].raw))
	})

	It("resumes registering after a NATS restart", func() {
		port := natsPort(srv)
		router := newFakeRouter("nats://"+natsAddr(srv), 1, 30)
		DeferCleanup(router.close)
		runRoutes(routesConfig(natsAddr(srv)))
		Eventually(router.count).Should(BeNumerically(">=", 1))
		srv.Shutdown()
		srv.WaitForShutdown()
		time.Sleep(500 * time.Millisecond)
		before := router.count()
		srv = startNATS(natsOpts{port: port})
		DeferCleanup(srv.Shutdown)
		Eventually(router.count, 15*time.Second).Should(BeNumerically(">=", before+2))
	})

	It("uses any of several NATS servers, skipping one that is down", func() {
		router := newFakeRouter("nats://"+natsAddr(srv), 1, 30)
		DeferCleanup(router.close)
		runRoutes(routesConfig(freeAddr(), natsAddr(srv)))
		Eventually(router.count).Should(BeNumerically(">=", 2))
	})

	It("authenticates with a user and password", func() {
		auth := startNATS(natsOpts{user: "nats", pass: "nats-password"})
		DeferCleanup(auth.Shutdown)
		router := newFakeRouter("nats://"+natsAddr(auth), 1, 30, nats.UserInfo("nats", "nats-password"))
		DeferCleanup(router.close)
		cfg := routesConfig(natsAddr(auth))
		cfg.NATS.User, cfg.NATS.Password = "nats", "nats-password"
		runRoutes(cfg)
		Eventually(router.count).Should(BeNumerically(">=", 1))
	})

	Describe("over mutual TLS (nats-tls)", func() {
		var (
			ca     *testCA
			tlsSrv *natsserver.Server
			client pemPair
		)

		BeforeEach(func() {
			ca = newCA()
			server := ca.issue("nats.service.cf.internal", x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.0.1"))
			client = ca.issue("iron-registrar", x509.ExtKeyUsageClientAuth)
			tlsSrv = startNATS(natsOpts{tls: ca.serverTLS(server)})
			DeferCleanup(tlsSrv.Shutdown)
		})

		routerOpts := func(p pemPair) []nats.Option {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM([]byte(ca.pem))
			cert := must(tlsKeyPair(p))
			return []nats.Option{nats.Secure(tlsClientConfig(pool, cert))}
		}

		It("registers with a client certificate", func() {
			router := newFakeRouter("tls://"+natsAddr(tlsSrv), 1, 30, routerOpts(ca.issue("gorouter", x509.ExtKeyUsageClientAuth))...)
			DeferCleanup(router.close)
			cfg := routesConfig(natsAddr(tlsSrv))
			cfg.NATS.TLS = config.NATSTLS{Enabled: true, CACert: ca.pem, ClientCert: client.cert, ClientKey: client.key,
				ServerName: "nats.service.cf.internal"}
			_, stop := runRoutes(cfg)
			Eventually(router.count).Should(BeNumerically(">=", 2))
			stop()
			Eventually(router.unregistered).Should(HaveLen(1))
		})

		It("gets nowhere without a client certificate, or trusting another CA", func() {
			router := newFakeRouter("tls://"+natsAddr(tlsSrv), 1, 30, routerOpts(ca.issue("gorouter", x509.ExtKeyUsageClientAuth))...)
			DeferCleanup(router.close)
			cfg := routesConfig(natsAddr(tlsSrv))
			cfg.NATS.TLS = config.NATSTLS{Enabled: true, CACert: ca.pem}
			runRoutes(cfg)
			other := newCA()
			cfg.NATS.TLS = config.NATSTLS{Enabled: true, CACert: other.pem, ClientCert: client.cert, ClientKey: client.key}
			runRoutes(cfg)
			Consistently(router.count, 2*time.Second).Should(Equal(0))
		})
	})

	It("derives a stable private_instance_id when none is configured, the same in every process", func() {
		cfg := routesConfig(natsAddr(srv))
		cfg.PrivateInstanceID = ""
		a := registrar.NewRoutes(cfg, registrar.RoutesOptions{}).Message().PrivateInstanceID
		Expect(a).To(MatchRegexp(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`))
		Expect(registrar.NewRoutes(cfg, registrar.RoutesOptions{}).Message().PrivateInstanceID).To(Equal(a))
		cfg.Host = "10.0.16.6"
		Expect(registrar.NewRoutes(cfg, registrar.RoutesOptions{}).Message().PrivateInstanceID).NotTo(Equal(a))
	})

	It("stops the whole registrar when the routes loop cannot start", func() {
		f := false
		c := config.Registrar{Marketplace: config.RegistrarMarketplace{Enabled: &f}, Routes: routesConfig(natsAddr(srv))}
		c.Routes.NATS.TLS = config.NATSTLS{Enabled: true, CACert: "not a certificate"}
		err := registrar.New(c, registrar.Options{}).Run(context.Background())
		Expect(err).To(MatchError(ContainSubstring("routes.nats.tls.ca_cert")))
	})

	It("unregisters once for the deregister errand", func() {
		router := newFakeRouter("nats://"+natsAddr(srv), 0, 0)
		DeferCleanup(router.close)
		r := registrar.NewRoutes(routesConfig(natsAddr(srv)), registrar.RoutesOptions{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		Expect(r.Unregister(ctx)).To(Succeed())
		Eventually(router.unregistered).Should(HaveLen(1))
		Expect(router.count()).To(Equal(0))
	})
})
