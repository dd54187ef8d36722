package config

import (
	"encoding/base64"
	"net"
	"strconv"
	"time"
)

// API is the configuration of the iron-api job.
type API struct {
	// ListenAddress is host:port for the IronWorker API, broker and runner protocol.
	ListenAddress string     `json:"listen_address"`
	Database      Database   `json:"database"`
	Limits        Limits     `json:"limits"`
	Scheduler     Scheduler  `json:"scheduler"`
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
	if c.Scheduler.Interval == 0 {
		c.Scheduler.Interval = Duration(time.Second)
	}
	setDefault(&c.Scheduler.BatchSize, 500)
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
		"scheduler.batch_size":                int64(c.Scheduler.BatchSize),
	}
	for name, v := range positive {
		if v < 1 {
			p.add(name, "must be positive, got %d", v)
		}
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
	validateEncryption(&p, c.Encryption)
	if !validLogLevel(c.LogLevel) {
		p.add("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return p.err("iron-api")
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
