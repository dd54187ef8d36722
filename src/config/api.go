package config

import (
	"encoding/base64"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// API is the configuration of the iron-api job.
type API struct {
	// ListenAddress is host:port for the IronWorker API, broker and runner protocol.
	ListenAddress string     `json:"listen_address"`
	Database      Database   `json:"database"`
	Limits        Limits     `json:"limits"`
	Scheduler     Scheduler  `json:"scheduler"`
	Runner        RunnerAPI  `json:"runner"`
	Broker        Broker     `json:"broker"`
	Encryption    Encryption `json:"encryption"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level"`
	// ShutdownTimeout bounds the graceful drain of in-flight requests on SIGTERM.
	ShutdownTimeout Duration `json:"shutdown_timeout"`
}

// Limits are the platform-wide caps on what app developers may send.
type Limits struct {
	MaxCodeSizeBytes          int64 `json:"max_code_size_bytes"`
	MaxPayloadBytes           int   `json:"max_payload_bytes"`
	MaxConfigBytes            int   `json:"max_config_bytes"`
	MaxRequestBytes           int64 `json:"max_request_bytes"`
	MaxTaskTimeoutSeconds     int   `json:"max_task_timeout_seconds"`
	DefaultTaskTimeoutSeconds int   `json:"default_task_timeout_seconds"`
	MaxDelaySeconds           int   `json:"max_delay_seconds"`
	MaxRetries                int   `json:"max_retries"`
	MaxTasksPerRequest        int   `json:"max_tasks_per_request"`
	// MaxTaskLogBytes caps the log kept per task; output beyond it is dropped after a
	// single truncation note. Default 10 MiB.
	MaxTaskLogBytes int64 `json:"max_task_log_bytes"`
	// TasksPerSecond limits task creation per project (POST /tasks, the webhook, retry)
	// on each API instance: a token bucket refilled at this rate, holding TasksBurst
	// tasks. Over the limit: 429 with Retry-After. 0 (default) = unlimited.
	TasksPerSecond float64 `json:"tasks_per_second"`
	// TasksBurst defaults to the larger of max_tasks_per_request and tasks_per_second,
	// so that one full batch can always pass.
	TasksBurst int `json:"tasks_burst"`
}

// Scheduler controls the schedule firer that every API instance runs; one instance at a
// time leads through a PostgreSQL advisory lock.
type Scheduler struct {
	Enabled *bool `json:"enabled,omitempty"`
	// Interval is how often the leader looks for due schedules.
	Interval Duration `json:"interval"`
	// BatchSize is how many due schedules one pass fires per transaction.
	BatchSize int `json:"batch_size"`
}

func (s Scheduler) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// RunnerAPI configures the runner protocol under /internal/v1 and the lease reaper.
type RunnerAPI struct {
	// Credentials are what runners authenticate with (HTTP basic name:secret, or the
	// secret as a Bearer token). Several may be listed so that secrets can rotate. With
	// none, the runner protocol refuses every request.
	Credentials []RunnerCredential `json:"credentials"`
	// LeaseWait caps how long a lease request long-polls for work.
	LeaseWait Duration `json:"lease_wait"`
	// LeaseDuration is how long a lease lasts without a heartbeat.
	LeaseDuration Duration `json:"lease_duration"`
	// ReaperInterval is how often the reaper leader looks for expired leases.
	ReaperInterval Duration `json:"reaper_interval"`
	// MaxLeaseAttempts: a task that never started and lost this many leases ends killed.
	MaxLeaseAttempts int `json:"max_lease_attempts"`
	// ExternalURL is this API's base URL as seen from Cloud Foundry app containers
	// (e.g. https://iron.apps.example.com, the route of iron-api). The diego backend's
	// CF tasks fetch their payload and config from ExternalURL + /internal/v1/tasks/<id>/input.
	// Empty: the URL the runner used to reach the API (fine when that is the same route).
	ExternalURL string `json:"external_url,omitempty"`
}

type RunnerCredential struct {
	Name string `json:"name"`
	// Secret is at least 16 characters.
	Secret string `json:"secret"`
}

// Encryption holds the AES-256 keys for secrets at rest (code env_vars and config,
// registry credentials). New data is sealed with ActiveKey; older keys stay listed until
// `iron-api admin rotate-keys` has re-sealed everything with the active one.
type Encryption struct {
	ActiveKey string          `json:"active_key"`
	Keys      []EncryptionKey `json:"keys"`
}

type EncryptionKey struct {
	Label string `json:"label"`
	// Secret is 32 bytes, base64-encoded.
	Secret string `json:"secret"`
}

// LoadAPI reads, defaults and validates the iron-api config file.
func LoadAPI(path string) (API, error) {
	var c API
	if err := loadStrict(path, &c); err != nil {
		return API{}, err
	}
	c.ApplyDefaults()
	return c, c.Validate()
}

func (c *API) ApplyDefaults() {
	if c.ListenAddress == "" {
		c.ListenAddress = "0.0.0.0:8080"
	}
	c.Database.applyDefaults()
	l := &c.Limits
	setDefault64(&l.MaxCodeSizeBytes, 100<<20)
	setDefault(&l.MaxPayloadBytes, 64<<10)
	setDefault(&l.MaxConfigBytes, 64<<10)
	setDefault64(&l.MaxRequestBytes, 8<<20)
	setDefault(&l.MaxTaskTimeoutSeconds, 3600)
	setDefault(&l.DefaultTaskTimeoutSeconds, l.MaxTaskTimeoutSeconds)
	setDefault(&l.MaxDelaySeconds, 7*24*3600)
	setDefault(&l.MaxRetries, 10)
	setDefault(&l.MaxTasksPerRequest, 1000)
	setDefault64(&l.MaxTaskLogBytes, 10<<20)
	if l.TasksPerSecond > 0 && l.TasksBurst == 0 {
		l.TasksBurst = l.MaxTasksPerRequest
		if r := int(l.TasksPerSecond); r > l.TasksBurst {
			l.TasksBurst = r
		}
	}
	if c.Scheduler.Interval == 0 {
		c.Scheduler.Interval = Duration(time.Second)
	}
	setDefault(&c.Scheduler.BatchSize, 500)
	if c.Runner.LeaseWait == 0 {
		c.Runner.LeaseWait = Duration(20 * time.Second)
	}
	if c.Runner.LeaseDuration == 0 {
		c.Runner.LeaseDuration = Duration(30 * time.Second)
	}
	if c.Runner.ReaperInterval == 0 {
		c.Runner.ReaperInterval = Duration(5 * time.Second)
	}
	setDefault(&c.Runner.MaxLeaseAttempts, 5)
	c.Broker.applyDefaults()
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(20 * time.Second)
	}
}

func (c API) Validate() error {
	var p problems
	if _, _, err := net.SplitHostPort(c.ListenAddress); err != nil {
		p.add("listen_address", "must be host:port, got %q", c.ListenAddress)
	}
	c.Database.validate(&p, "database")
	l := c.Limits
	positive := map[string]int64{
		"limits.max_code_size_bytes":          l.MaxCodeSizeBytes,
		"limits.max_payload_bytes":            int64(l.MaxPayloadBytes),
		"limits.max_config_bytes":             int64(l.MaxConfigBytes),
		"limits.max_request_bytes":            l.MaxRequestBytes,
		"limits.max_task_timeout_seconds":     int64(l.MaxTaskTimeoutSeconds),
		"limits.default_task_timeout_seconds": int64(l.DefaultTaskTimeoutSeconds),
		"limits.max_delay_seconds":            int64(l.MaxDelaySeconds),
		"limits.max_tasks_per_request":        int64(l.MaxTasksPerRequest),
		"limits.max_task_log_bytes":           l.MaxTaskLogBytes,
		"scheduler.batch_size":                int64(c.Scheduler.BatchSize),
	}
	for name, v := range positive {
		if v < 1 {
			p.add(name, "must be positive, got %d", v)
		}
	}
	if l.TasksPerSecond < 0 {
		p.add("limits.tasks_per_second", "must not be negative (0 = unlimited)")
	}
	if l.TasksBurst < 0 || (l.TasksPerSecond > 0 && l.TasksBurst < 1) {
		p.add("limits.tasks_burst", "must be positive when limits.tasks_per_second is set, got %d", l.TasksBurst)
	}
	if l.MaxRetries < 0 {
		p.add("limits.max_retries", "must not be negative")
	}
	if l.DefaultTaskTimeoutSeconds > l.MaxTaskTimeoutSeconds {
		p.add("limits.default_task_timeout_seconds", "must not exceed limits.max_task_timeout_seconds (%d)", l.MaxTaskTimeoutSeconds)
	}
	if c.Scheduler.Interval.Std() < 10*time.Millisecond {
		p.add("scheduler.interval", "must be at least 10ms")
	}
	validateRunner(&p, c.Runner)
	validateBroker(&p, c.Broker)
	validateEncryption(&p, c.Encryption)
	if !validLogLevel(c.LogLevel) {
		p.add("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return p.err("iron-api")
}

func validateRunner(p *problems, r RunnerAPI) {
	seen := map[string]bool{}
	for i, cred := range r.Credentials {
		if cred.Name == "" || len(cred.Name) > 64 || strings.ContainsAny(cred.Name, ": ") {
			p.add(indexed("runner.credentials", i, "name"), "required, at most 64 characters, no colon or space")
		}
		if seen[cred.Name] {
			p.add(indexed("runner.credentials", i, "name"), "duplicate name %q", cred.Name)
		}
		seen[cred.Name] = true
		if len(cred.Secret) < 16 {
			p.add(indexed("runner.credentials", i, "secret"), "must be at least 16 characters")
		}
	}
	if w := r.LeaseWait.Std(); w < time.Second || w > 5*time.Minute {
		p.add("runner.lease_wait", "must be from 1s to 5m, got %s", w)
	}
	if d := r.LeaseDuration.Std(); d < time.Second {
		p.add("runner.lease_duration", "must be at least 1s, got %s", d)
	}
	if r.ReaperInterval.Std() < 10*time.Millisecond {
		p.add("runner.reaper_interval", "must be at least 10ms")
	}
	if r.MaxLeaseAttempts < 1 {
		p.add("runner.max_lease_attempts", "must be positive, got %d", r.MaxLeaseAttempts)
	}
	if r.ExternalURL != "" {
		u, err := url.Parse(r.ExternalURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			p.add("runner.external_url", "must be an http(s) URL without query, fragment or credentials, e.g. https://iron.apps.example.com, got %q", r.ExternalURL)
		}
	}
}

func validateEncryption(p *problems, e Encryption) {
	if len(e.Keys) == 0 {
		p.add("encryption.keys", "at least one key is required")
	}
	seen := map[string]bool{}
	for i, k := range e.Keys {
		if k.Label == "" || len(k.Label) > 64 {
			p.add(indexed("encryption.keys", i, "label"), "required, at most 64 characters")
		}
		if seen[k.Label] {
			p.add(indexed("encryption.keys", i, "label"), "duplicate label %q", k.Label)
		}
		seen[k.Label] = true
		raw, err := base64.StdEncoding.DecodeString(k.Secret)
		if err != nil || len(raw) != 32 {
			p.add(indexed("encryption.keys", i, "secret"), "must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)")
		}
	}
	if e.ActiveKey == "" {
		p.add("encryption.active_key", "required: the label of the key that seals new data")
	} else if !seen[e.ActiveKey] {
		p.add("encryption.active_key", "%q is not the label of any encryption.keys entry", e.ActiveKey)
	}
}

func indexed(list string, i int, field string) string {
	return list + "[" + itoa(i) + "]." + field
}

func itoa(i int) string { return strconv.Itoa(i) }

func setDefault(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

func setDefault64(v *int64, d int64) {
	if *v == 0 {
		*v = d
	}
}

// Broker configures the Open Service Broker API under /v2 (Cloud Controller's view of
// the service: `cf marketplace`, create-service, bind-service).
type Broker struct {
	Enabled bool `json:"enabled"`
	// Username and Password are the HTTP basic credentials Cloud Controller sends.
	Username string        `json:"username"`
	Password string        `json:"password"`
	Service  BrokerService `json:"service"`
	Plans    []BrokerPlan  `json:"plans"`
	// ExternalAPI is where apps reach the IronWorker API; it goes into bind credentials.
	ExternalAPI ExternalAPI `json:"external_api"`
	// PurgeAfter is how long a deprovisioned project stays disabled (its cancelled tasks
	// readable by the runners that held them) before it is deleted.
	PurgeAfter Duration `json:"purge_after"`
}

// BrokerService is the one service of the catalog. ID is a stable GUID.
type BrokerService struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	Description      string   `json:"description"`
	Tags             []string `json:"tags"`
	DisplayName      string   `json:"display_name"`
	ProviderName     string   `json:"provider_name"`
	DocumentationURL string   `json:"documentation_url"`
	SupportURL       string   `json:"support_url"`
	ImageURL         string   `json:"image_url"`
	LongDescription  string   `json:"long_description"`
}

// BrokerPlan is an operator-defined plan. ID is a stable GUID.
type BrokerPlan struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	// Free defaults to true.
	Free        *bool      `json:"free,omitempty"`
	DisplayName string     `json:"display_name"`
	Bullets     []string   `json:"bullets"`
	Quotas      PlanQuotas `json:"quotas"`
}

func (p BrokerPlan) IsFree() bool { return p.Free == nil || *p.Free }

// PlanQuotas are a plan's limits; a missing one is unlimited (the platform-wide limits
// still apply).
type PlanQuotas struct {
	// MaxConcurrency caps the project's tasks running at once; more wait queued.
	MaxConcurrency    *int `json:"max_concurrency,omitempty"`
	MaxTimeoutSeconds *int `json:"max_timeout_seconds,omitempty"`
	MaxPayloadBytes   *int `json:"max_payload_bytes,omitempty"`
	MaxQueuedTasks    *int `json:"max_queued_tasks,omitempty"`
	MaxSchedules      *int `json:"max_schedules,omitempty"`
	// AllowedPriorities lists the priorities (0-2) the plan runs; a task asking for
	// another runs at priority 0, as on hosted IronWorker. Empty = all.
	AllowedPriorities []int `json:"allowed_priorities,omitempty"`
}

// ExternalAPI is the IronWorker API's public address as apps see it.
type ExternalAPI struct {
	// Scheme is https (default) or http.
	Scheme string `json:"scheme"`
	Host   string `json:"host"`
	// Port defaults to 443 for https and 80 for http.
	Port int `json:"port"`
}

func (b *Broker) applyDefaults() {
	if b.Service.Name == "" {
		b.Service.Name = "ironworker"
	}
	if b.Service.Description == "" {
		b.Service.Description = "IronWorker-compatible serverless tasks: upload code, queue and schedule tasks"
	}
	if b.Service.DisplayName == "" {
		b.Service.DisplayName = "IronWorker"
	}
	if b.ExternalAPI.Scheme == "" {
		b.ExternalAPI.Scheme = "https"
	}
	if b.ExternalAPI.Port == 0 {
		if b.ExternalAPI.Scheme == "http" {
			b.ExternalAPI.Port = 80
		} else {
			b.ExternalAPI.Port = 443
		}
	}
	if b.PurgeAfter == 0 {
		b.PurgeAfter = Duration(10 * time.Minute)
	}
}

func validateBroker(p *problems, b Broker) {
	if !b.Enabled {
		return
	}
	if b.Username == "" || strings.Contains(b.Username, ":") {
		p.add("broker.username", "required, without a colon")
	}
	if len(b.Password) < 8 {
		p.add("broker.password", "must be at least 8 characters")
	}
	if b.Service.ID == "" {
		p.add("broker.service.id", "required: a stable GUID")
	}
	if !cliName(b.Service.Name) {
		p.add("broker.service.name", "must be lowercase letters, digits and dashes, got %q", b.Service.Name)
	}
	if len(b.Plans) == 0 {
		p.add("broker.plans", "at least one plan is required")
	}
	ids := map[string]bool{b.Service.ID: true}
	names := map[string]bool{}
	for i, plan := range b.Plans {
		if plan.ID == "" {
			p.add(indexed("broker.plans", i, "id"), "required: a stable GUID")
		} else if ids[plan.ID] {
			p.add(indexed("broker.plans", i, "id"), "duplicate id %q (plan and service ids must all differ)", plan.ID)
		}
		ids[plan.ID] = true
		if !cliName(plan.Name) {
			p.add(indexed("broker.plans", i, "name"), "must be lowercase letters, digits and dashes, got %q", plan.Name)
		} else if names[plan.Name] {
			p.add(indexed("broker.plans", i, "name"), "duplicate name %q", plan.Name)
		}
		names[plan.Name] = true
		if plan.Description == "" {
			p.add(indexed("broker.plans", i, "description"), "required")
		}
		q := plan.Quotas
		for field, v := range map[string]*int{"max_concurrency": q.MaxConcurrency, "max_timeout_seconds": q.MaxTimeoutSeconds,
			"max_payload_bytes": q.MaxPayloadBytes, "max_queued_tasks": q.MaxQueuedTasks, "max_schedules": q.MaxSchedules} {
			if v != nil && *v < 1 {
				p.add(indexed("broker.plans", i, "quotas."+field), "must be positive (leave it out for unlimited), got %d", *v)
			}
		}
		if len(q.AllowedPriorities) > 0 {
			has0 := false
			for _, pr := range q.AllowedPriorities {
				if pr < 0 || pr > 2 {
					p.add(indexed("broker.plans", i, "quotas.allowed_priorities"), "priorities are 0, 1 or 2, got %d", pr)
				}
				has0 = has0 || pr == 0
			}
			if !has0 {
				p.add(indexed("broker.plans", i, "quotas.allowed_priorities"), "must include 0, the priority that other requests fall back to")
			}
		}
	}
	e := b.ExternalAPI
	if e.Scheme != "https" && e.Scheme != "http" {
		p.add("broker.external_api.scheme", "must be https or http, got %q", e.Scheme)
	}
	if e.Host == "" || strings.ContainsAny(e.Host, "/: ") {
		p.add("broker.external_api.host", "required: the API's public host name (no scheme, port or path)")
	}
	if e.Port < 1 || e.Port > 65535 {
		p.add("broker.external_api.port", "must be from 1 to 65535, got %d", e.Port)
	}
	if b.PurgeAfter.Std() < 0 {
		p.add("broker.purge_after", "must not be negative")
	}
}

// cliName tells whether s is a catalog name as the cf CLI expects it.
func cliName(s string) bool {
	if s == "" || len(s) > 50 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}
