package registrar

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ironcf/ironworker-release/src/config"
)

// RegistryMessage is the body of router.register and router.unregister, with the fields
// gorouter reads (see cf-reference.md section 4.1).
type RegistryMessage struct {
	Host                string            `json:"host"`
	Port                int               `json:"port,omitempty"`
	TLSPort             int               `json:"tls_port,omitempty"`
	ServerCertDomainSAN string            `json:"server_cert_domain_san,omitempty"`
	URIs                []string          `json:"uris"`
	PrivateInstanceID   string            `json:"private_instance_id"`
	Tags                map[string]string `json:"tags,omitempty"`
	AvailabilityZone    string            `json:"availability_zone,omitempty"`
	Protocol            string            `json:"protocol,omitempty"`
}

// RouterGreeting is gorouter's router.start message and its router.greet reply.
type RouterGreeting struct {
	ID                               string   `json:"id"`
	Hosts                            []string `json:"hosts"`
	MinimumRegisterIntervalInSeconds int      `json:"minimumRegisterIntervalInSeconds"`
	PruneThresholdInSeconds          int      `json:"pruneThresholdInSeconds"`
}

// RoutesOptions tune the route registrar; zero values get defaults.
type RoutesOptions struct {
	Logger *slog.Logger
	// GreetTimeout bounds waiting for a router.greet reply. Default 2s.
	GreetTimeout time.Duration
	// OnRegister is called after each router.register publish (metrics).
	OnRegister func()
	// OnError is called for each failed publish or connection problem (metrics).
	OnError func(error)
}

// Routes registers the API's routes with gorouter over NATS.
type Routes struct {
	cfg  config.RegistrarRoutes
	opts RoutesOptions
	log  *slog.Logger
	msg  RegistryMessage

	mu       sync.Mutex
	interval time.Duration // current heartbeat interval
	wake     chan wakeReason
}

type wakeReason int

const (
	wakeConnected wakeReason = iota
	wakeRouterStart
)

// NewRoutes makes a route registrar.
func NewRoutes(cfg config.RegistrarRoutes, opts RoutesOptions) *Routes {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.GreetTimeout <= 0 {
		opts.GreetTimeout = 2 * time.Second
	}
	if opts.OnRegister == nil {
		opts.OnRegister = func() {}
	}
	if opts.OnError == nil {
		opts.OnError = func(error) {}
	}
	id := cfg.PrivateInstanceID
	if id == "" {
		id = stableInstanceID(cfg)
	}
	return &Routes{
		cfg: cfg, opts: opts, log: opts.Logger, interval: cfg.RegisterInterval.Std(),
		wake: make(chan wakeReason, 4),
		msg: RegistryMessage{Host: cfg.Host, Port: cfg.Port, TLSPort: cfg.TLSPort, ServerCertDomainSAN: cfg.ServerCertDomainSAN,
			URIs: cfg.URIs, PrivateInstanceID: id, Tags: cfg.Tags, AvailabilityZone: cfg.AvailabilityZone, Protocol: cfg.Protocol},
	}
}

// Message is what is published.
func (r *Routes) Message() RegistryMessage { return r.msg }

// Interval is the current heartbeat interval.
func (r *Routes) Interval() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.interval
}

// stableInstanceID derives a private_instance_id from the backend address, so that
// every process for this instance (the long-running loop, a restart, the deregister
// errand) sends the same one: gorouter only removes an endpoint on router.unregister
// when host, port and private_instance_id all match.
func stableInstanceID(cfg config.RegistrarRoutes) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("iron-registrar\x00%s\x00%d\x00%d", cfg.Host, cfg.Port, cfg.TLSPort)))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x50 // version 5 style (name-based, SHA)
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// applyGreeting sets the interval from gorouter's numbers: the configured interval or
// gorouter's minimum, whichever is shorter, and at most a third of the prune threshold.
func (r *Routes) applyGreeting(g RouterGreeting) {
	iv := r.cfg.RegisterInterval.Std()
	if g.MinimumRegisterIntervalInSeconds > 0 {
		iv = min(iv, time.Duration(g.MinimumRegisterIntervalInSeconds)*time.Second)
	}
	if g.PruneThresholdInSeconds > 0 {
		iv = min(iv, time.Duration(g.PruneThresholdInSeconds)*time.Second/3)
	}
	r.mu.Lock()
	changed := iv != r.interval
	r.interval = iv
	r.mu.Unlock()
	if changed {
		r.log.Info("register interval set from gorouter", "interval", iv.String(), "router", g.ID,
			"minimum_register_interval_s", g.MinimumRegisterIntervalInSeconds, "prune_threshold_s", g.PruneThresholdInSeconds)
	}
}

func (r *Routes) natsOptions() ([]nats.Option, []string, error) {
	c := r.cfg.NATS
	maxWait := c.MaxReconnectWait.Std()
	opts := []nats.Option{
		nats.Name("iron-registrar"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.Timeout(c.ConnectTimeout.Std()),
		nats.PingInterval(20 * time.Second),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			// Exponential backoff from 50ms, capped, with up to 20% jitter.
			d := time.Duration(float64(50*time.Millisecond) * math.Pow(2, float64(min(attempts, 20))))
			d = min(d, maxWait)
			return d + time.Duration(mrand.Int64N(int64(d)/5+1))
		}),
		nats.ConnectHandler(func(*nats.Conn) { r.log.Info("connected to NATS"); r.poke(wakeConnected) }),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			r.log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			r.poke(wakeConnected)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				r.log.Warn("disconnected from NATS", "error", err.Error())
				r.opts.OnError(err)
			}
		}),
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	scheme := "nats://"
	if c.TLS.Enabled {
		scheme = "tls://"
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(c.TLS.CACert)) {
			return nil, nil, errors.New("routes.nats.tls.ca_cert: no PEM certificate found")
		}
		tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName}
		if c.TLS.ClientCert != "" {
			cert, err := tls.X509KeyPair([]byte(c.TLS.ClientCert), []byte(c.TLS.ClientKey))
			if err != nil {
				return nil, nil, fmt.Errorf("routes.nats.tls.client_cert/client_key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(tc))
	}
	var urls []string
	for _, s := range c.Servers {
		urls = append(urls, scheme+s)
	}
	return opts, urls, nil
}

func (r *Routes) poke(w wakeReason) {
	select {
	case r.wake <- w:
	default:
	}
}

func (r *Routes) connect() (*nats.Conn, error) {
	opts, urls, err := r.natsOptions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %v: %w", r.cfg.NATS.Servers, err)
	}
	return nc, nil
}

func (r *Routes) greet(nc *nats.Conn) {
	msg, err := nc.Request("router.greet", nil, r.opts.GreetTimeout)
	if err != nil {
		r.log.Info("no router.greet reply; keeping the configured interval", "error", err.Error(), "interval", r.Interval().String())
		return
	}
	var g RouterGreeting
	if err := json.Unmarshal(msg.Data, &g); err != nil {
		r.log.Warn("unreadable router.greet reply", "error", err.Error())
		return
	}
	r.applyGreeting(g)
}

func (r *Routes) publish(nc *nats.Conn, subject string) error {
	body, err := json.Marshal(r.msg)
	if err != nil {
		return err
	}
	if err := nc.Publish(subject, body); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

func (r *Routes) register(nc *nats.Conn) {
	if !nc.IsConnected() {
		return // re-registered on reconnect
	}
	if err := r.publish(nc, "router.register"); err != nil {
		r.log.Warn("register failed", "error", err.Error())
		r.opts.OnError(err)
		return
	}
	r.opts.OnRegister()
	r.log.Debug("registered", "uris", r.msg.URIs)
}

// Run registers until ctx ends, then publishes router.unregister (flushed) and closes
// the connection.
func (r *Routes) Run(ctx context.Context) error {
	nc, err := r.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.Subscribe("router.start", func(m *nats.Msg) {
		var g RouterGreeting
		if err := json.Unmarshal(m.Data, &g); err != nil {
			r.log.Warn("unreadable router.start", "error", err.Error())
			return
		}
		r.log.Info("router.start received; re-registering now", "router", g.ID)
		r.applyGreeting(g)
		r.poke(wakeRouterStart)
	})
	if err != nil {
		return fmt.Errorf("subscribe router.start: %w", err)
	}
	defer sub.Unsubscribe()
	// The first greet and register happen on the wake from the connect handler (nats.go
	// calls it for the first connection too, whether at once or after retries).
	timer := time.NewTimer(r.Interval())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			r.unregister(nc)
			return nil
		case w := <-r.wake:
			if w == wakeConnected {
				r.greet(nc)
			}
			r.register(nc)
		case <-timer.C:
			r.register(nc)
		}
		timer.Reset(r.Interval())
	}
}

func (r *Routes) unregister(nc *nats.Conn) {
	if err := r.publish(nc, "router.unregister"); err != nil {
		r.log.Error("unregister failed", "error", err.Error())
		r.opts.OnError(err)
		return
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		r.log.Error("unregister not flushed", "error", err.Error())
		r.opts.OnError(err)
		return
	}
	r.log.Info("unregistered routes", "uris", r.msg.URIs)
}

// Unregister connects, publishes router.unregister once and waits until NATS has it
// (or ctx ends): the deregister errand.
func (r *Routes) Unregister(ctx context.Context) error {
	nc, err := r.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("unregister routes: NATS %v not reachable: %w", r.cfg.NATS.Servers, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := r.publish(nc, "router.unregister"); err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("unregister routes: %w", err)
	}
	r.log.Info("unregistered routes", "uris", r.msg.URIs)
	return nil
}
