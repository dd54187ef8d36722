package runner

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg             *prometheus.Registry
	slots           prometheus.Gauge
	slotsBusy       prometheus.Gauge
	leaseRequests   *prometheus.CounterVec // result: tasks, empty, error
	leases          *prometheus.CounterVec // kind: start, adopt
	leasesLost      prometheus.Counter
	outcomes        *prometheus.CounterVec // status
	backendErrors   *prometheus.CounterVec // op
	apiErrors       *prometheus.CounterVec // call
	logBytesSent    prometheus.Counter
	logBytesDropped prometheus.Counter
	taskDuration    prometheus.Histogram
	pickup          prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		slots: prometheus.NewGauge(prometheus.GaugeOpts{Name: "iron_runner_slots",
			Help: "Tasks this runner can run at once."}),
		slotsBusy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "iron_runner_slots_busy",
			Help: "Slots holding a leased task."}),
		leaseRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iron_runner_lease_requests_total",
			Help: "Lease requests by result (tasks, empty, error)."}, []string{"result"}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iron_runner_leases_total",
			Help: "Tasks leased, by kind (start: run it; adopt: take over a started task; cancel: stop a task cancelled while unheld)."}, []string{"kind"}),
		leasesLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "iron_runner_leases_lost_total",
			Help: "Leases lost while the task was held (409 from the API)."}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iron_runner_task_outcomes_total",
			Help: "Tasks ended by this runner, by final status as the API recorded it."}, []string{"status"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iron_runner_backend_errors_total",
			Help: "Backend failures (not task failures), by operation."}, []string{"op"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iron_runner_api_errors_total",
			Help: "Failed runner protocol calls (after the client's retries), by call."}, []string{"call"}),
		logBytesSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "iron_runner_log_bytes_sent_total",
			Help: "Task output forwarded to the API."}),
		logBytesDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "iron_runner_log_bytes_dropped_total",
			Help: "Task output dropped (buffer full or the API refused it)."}),
		taskDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "iron_runner_task_duration_seconds",
			Help: "Time from lease to completion.", Buckets: prometheus.ExponentialBuckets(0.01, 4, 10)}),
		pickup: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "iron_runner_start_seconds",
			Help: "Time from lease to the backend running the task.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
	}
	m.reg.MustRegister(m.slots, m.slotsBusy, m.leaseRequests, m.leases, m.leasesLost, m.outcomes, m.backendErrors,
		m.apiErrors, m.logBytesSent, m.logBytesDropped, m.taskDuration, m.pickup,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves /healthz (200 while leasing, 503 once draining or when the API has
// refused the last lease requests) and Prometheus /metrics.
func (r *Runner) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		h := r.Health()
		w.Header().Set("Content-Type", "application/json")
		if h.Status != "ok" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(h)
	})
	return mux
}

// Health is what /healthz answers.
type Health struct {
	Status    string `json:"status"` // ok, draining, api_unreachable, starting
	Backend   string `json:"backend"`
	Slots     int    `json:"slots"`
	SlotsBusy int    `json:"slots_busy"`
	LastError string `json:"last_error,omitempty"`
}

// Health reports the runner's state.
func (r *Runner) Health() Health {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := Health{Status: "ok", Backend: r.be.Name(), Slots: r.opts.Slots, SlotsBusy: r.busy, LastError: r.lastLeaseErr}
	switch {
	case r.draining:
		h.Status = "draining"
	case !r.started:
		h.Status = "starting"
	case r.leaseFailures >= 3:
		h.Status = "api_unreachable"
	}
	return h
}
