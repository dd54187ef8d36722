// Package registrar is iron-registrar: it advertises the IronWorker service in Cloud
// Foundry. Two loops run side by side:
//
//   - marketplace: makes Cloud Controller match the config (the service broker with its
//     URL and credentials, each plan's visibility, the diego backend's org, space and
//     space quota), re-checking on an interval; a pass that finds everything right
//     only reads;
//   - routes: registers the API's routes with gorouter over NATS (router.greet at start,
//     router.register on the interval, at once on router.start, router.unregister on
//     shutdown).
//
// Deregister (the BOSH errand) undoes both.
package registrar

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ironcf/ironworker-release/src/config"
)

// Options tune a Registrar; zero values get defaults.
type Options struct {
	Logger      *slog.Logger
	Marketplace MarketplaceOptions
	Routes      RoutesOptions
	// MaxRetryWait caps the backoff between failed marketplace passes (never longer than
	// the interval). Default 1m.
	MaxRetryWait time.Duration
}

// Registrar runs the enabled loops and serves /healthz and /metrics.
type Registrar struct {
	cfg  config.Registrar
	opts Options
	log  *slog.Logger

	Marketplace *Marketplace
	Routes      *Routes

	reg         *prometheus.Registry
	lastSuccess *prometheus.GaugeVec
	errorsTotal *prometheus.CounterVec
	passes      *prometheus.CounterVec

	mu     sync.Mutex
	status map[string]*loopStatus
}

type loopStatus struct {
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	healthy     bool
}

const (
	loopMarketplace = "marketplace"
	loopRoutes      = "routes"
)

// New makes a registrar for a validated config.
func New(cfg config.Registrar, opts Options) *Registrar {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxRetryWait <= 0 {
		opts.MaxRetryWait = time.Minute
	}
	r := &Registrar{cfg: cfg, opts: opts, log: opts.Logger, reg: prometheus.NewRegistry(), status: map[string]*loopStatus{}}
	r.lastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "iron_registrar_last_success_timestamp_seconds",
		Help: "Unix time of the last successful marketplace pass or route registration."}, []string{"loop"})
	r.errorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iron_registrar_errors_total",
		Help: "Failed marketplace passes and failed NATS operations."}, []string{"loop"})
	r.passes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iron_registrar_successes_total",
		Help: "Successful marketplace passes and router.register messages."}, []string{"loop"})
	r.reg.MustRegister(r.lastSuccess, r.errorsTotal, r.passes)
	if cfg.Marketplace.IsEnabled() {
		mo := opts.Marketplace
		if mo.Logger == nil {
			mo.Logger = opts.Logger.With("loop", loopMarketplace)
		}
		r.Marketplace = NewMarketplace(cfg, mo)
		r.status[loopMarketplace] = &loopStatus{healthy: true}
		r.errorsTotal.WithLabelValues(loopMarketplace)
		r.passes.WithLabelValues(loopMarketplace)
	}
	if cfg.Routes.IsEnabled() {
		ro := opts.Routes
		if ro.Logger == nil {
			ro.Logger = opts.Logger.With("loop", loopRoutes)
		}
		onReg, onErr := ro.OnRegister, ro.OnError
		ro.OnRegister = func() {
			r.succeeded(loopRoutes)
			if onReg != nil {
				onReg()
			}
		}
		ro.OnError = func(err error) {
			r.failed(loopRoutes, err)
			if onErr != nil {
				onErr(err)
			}
		}
		r.Routes = NewRoutes(cfg.Routes, ro)
		r.status[loopRoutes] = &loopStatus{healthy: true}
		r.errorsTotal.WithLabelValues(loopRoutes)
		r.passes.WithLabelValues(loopRoutes)
	}
	return r
}

func (r *Registrar) succeeded(loop string) {
	now := time.Now()
	r.lastSuccess.WithLabelValues(loop).Set(float64(now.UnixNano()) / 1e9)
	r.passes.WithLabelValues(loop).Inc()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status[loop]
	st.LastSuccess, st.healthy = &now, true
}

func (r *Registrar) failed(loop string, err error) {
	now := time.Now()
	r.errorsTotal.WithLabelValues(loop).Inc()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status[loop]
	st.LastError, st.LastErrorAt, st.healthy = err.Error(), &now, false
}

// Handler serves /healthz (200 while every loop's latest attempt succeeded, else 503,
// with each loop's status as JSON) and /metrics.
func (r *Registrar) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		healthy := true
		out := map[string]loopStatus{}
		for k, v := range r.status {
			healthy = healthy && v.healthy
			out[k] = *v
		}
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	return mux
}

// PassOnce runs one marketplace pass and records its outcome.
func (r *Registrar) PassOnce(ctx context.Context) error {
	err := r.Marketplace.Pass(ctx)
	if err != nil {
		r.failed(loopMarketplace, err)
		r.log.Error("marketplace pass failed", "loop", loopMarketplace, "error", err.Error())
		return err
	}
	r.succeeded(loopMarketplace)
	return nil
}

// Run runs the enabled loops until ctx ends. On the way out the routes are unregistered
// (Run returns after that).
// A routes loop that cannot start at all (e.g. unusable TLS material) stops both loops
// and its error is returned.
func (r *Registrar) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var routesErr error
	if r.Routes != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if routesErr = r.Routes.Run(ctx); routesErr != nil {
				r.failed(loopRoutes, routesErr)
				cancel()
			}
		}()
	}
	if r.Marketplace != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.marketplaceLoop(ctx)
		}()
	}
	wg.Wait()
	return routesErr
}

func (r *Registrar) marketplaceLoop(ctx context.Context) {
	interval := r.cfg.Marketplace.Interval.Std()
	backoff := time.Second
	for {
		wait := interval
		if err := r.PassOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = min(backoff, interval, r.opts.MaxRetryWait)
			backoff = min(backoff*2, r.opts.MaxRetryWait)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Deregister is the errand: remove plan visibility and delete the broker (when the
// marketplace is enabled), then unregister the routes (when enabled). The marketplace
// goes first because it may refuse (service instances exist): the routes then stay, so
// that apps bound to those instances keep reaching the API.
func (r *Registrar) Deregister(ctx context.Context, purge bool) error {
	if r.Marketplace != nil {
		if err := r.Marketplace.Deregister(ctx, purge); err != nil {
			if r.Routes != nil {
				return fmt.Errorf("%w (routes left registered)", err)
			}
			return err
		}
	}
	if r.Routes != nil {
		return r.Routes.Unregister(ctx)
	}
	return nil
}
