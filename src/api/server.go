// Package api is iron-api's HTTP surface: the IronWorker v2 API under /2/, health and
// metrics. Wire formats live here; storage is package store.
package api

import (
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/store"
)

// Server holds what the handlers need.
type Server struct {
	store   *store.Store
	limits  config.Limits
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time
	// saveHook replaces saveCode in uploadCode (fuzz tests: parsing without a store).
	saveHook func(c *gin.Context, st store.CodeSettings, archive io.Reader)
	// taskRate limits task creation per project (limits.go); nil = unlimited.
	taskRate *taskLimiter
	// tokens caches token lookups (auth.go).
	tokens *tokenCache
	// quotas caches the quotas that queueTasks checks batches against (quota.go).
	quotas *quotaCache
}

// Options configure NewServer.
type Options struct {
	Store  *store.Store
	Limits config.Limits
	Logger *slog.Logger
	// Registerer receives the API's Prometheus metrics; nil = a private registry.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Broker is the Open Service Broker API (package broker, basic auth included),
	// mounted under /v2/; nil = not served.
	Broker http.Handler
	// Runner configures the runner protocol under /internal/v1 (see internal.go).
	Runner RunnerOptions
}

// NewServer builds the gin engine with every route.
func NewServer(opts Options) (*Server, http.Handler) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	reg, gath := opts.Registerer, opts.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gath = r, r
	}
	s := &Server{store: opts.Store, limits: opts.Limits, log: logger, now: time.Now}
	s.metrics = newMetrics(reg, opts.Store)
	s.taskRate = newTaskLimiter(opts.Limits.TasksPerSecond, opts.Limits.TasksBurst, time.Now)
	s.tokens = newTokenCache(tokenCacheTTL, time.Now)
	s.quotas = newQuotaCache(quotaCacheTTL, time.Now)
	if opts.Store != nil && opts.Limits.MaxTaskLogBytes > 0 {
		// The runner's log appends store at most this much per task (store/tasklogs_cap.go).
		opts.Store.SetMaxTaskLogBytes(opts.Limits.MaxTaskLogBytes)
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(s.recoverJSON(), s.observe(), s.limitBody())
	r.NoRoute(func(c *gin.Context) { abortMsg(c, http.StatusNotFound, "Not found") })
	r.NoMethod(func(c *gin.Context) { abortMsg(c, http.StatusMethodNotAllowed, "Method not allowed") })

	r.GET("/healthz", s.healthz)
	r.GET("/metrics", gin.WrapH(metricsHandler(gath)))
	if opts.Broker != nil {
		// OSB lives under /v2/..., the IronWorker API under /2/...: no collision, and
		// no token middleware on the broker (it does its own basic auth).
		r.Any("/v2/*osbpath", gin.WrapH(opts.Broker))
	}

	s.mountInternal(r, opts.Runner)
	s.mountTaskInput(r, opts.Runner) // internal_input.go: diego task input

	p := r.Group("/2/projects/:project_id", s.authenticate())
	p.GET("", s.getProject)
	p.POST("/credentials", s.setCredentials)

	p.GET("/codes", s.listCodes)
	p.POST("/codes", s.uploadCode)
	p.GET("/codes/:code_id", s.getCode)
	p.DELETE("/codes/:code_id", s.deleteCode)
	p.GET("/codes/:code_id/revisions", s.listCodeRevisions)
	p.GET("/codes/:code_id/download", s.downloadCode)
	p.GET("/codes/:code_id/stats", s.codeStats)
	p.POST("/codes/:code_id/pause_task_queue", s.pauseCode)
	p.POST("/codes/:code_id/resume_task_queue", s.resumeCode)
	p.POST("/codes/:code_id/cancel_all", s.cancelAllTasks)

	p.GET("/tasks", s.listTasks)
	p.POST("/tasks", s.queueTasks)
	p.POST("/tasks/webhook", s.webhook)
	p.GET("/tasks/:task_id", s.getTask)
	p.GET("/tasks/:task_id/log", s.taskLog)
	p.GET("/tasks/:task_id/outlog", s.taskOutlog)
	p.POST("/tasks/:task_id/cancel", s.cancelTask)
	p.POST("/tasks/:task_id/progress", s.setProgress)
	p.POST("/tasks/:task_id/retry", s.retryTask)

	p.GET("/schedules", s.listSchedules)
	p.POST("/schedules", s.createSchedules)
	p.GET("/schedules/:schedule_id", s.getSchedule)
	p.PUT("/schedules/:schedule_id", s.updateSchedule)
	p.POST("/schedules/:schedule_id/cancel", s.cancelSchedule)
	return s, r
}
