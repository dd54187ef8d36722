package config

import (
	"net"
	"net/url"
	"strings"
	"time"
)

// Runner is the configuration of the iron-runner job.
type Runner struct {
	// APIURL is where the runner reaches iron-api's runner protocol (/internal/v1).
	APIURL string `json:"api_url"`
	// Credential is one of the API's runner.credentials.
	Credential RunnerCredential `json:"credential"`
	// RunnerID names this runner in task rows and logs; default the host name.
	RunnerID string `json:"runner_id,omitempty"`
	// Slots is how many tasks this runner runs at once.
	Slots int `json:"slots"`
	// LeaseBatch caps how many tasks one lease request takes (at most the free slots).
	LeaseBatch int `json:"lease_batch"`
	// LeaseWait is how long a lease request long-polls for work (the API caps it too).
	LeaseWait Duration `json:"lease_wait"`
	// HeartbeatInterval is how often a running task's lease is extended; it must stay
	// well under the API's runner.lease_duration (the runner also heartbeats at a third
	// of the time a lease has left, whichever is sooner).
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	// DrainTimeout is how long a SIGTERM waits for running tasks before handing the rest
	// back (local backend: stopped and ended killed, retried by their code's policy;
	// diego: left running for another runner to adopt).
	DrainTimeout Duration `json:"drain_timeout"`
	// RequestTimeout bounds each runner protocol request (a lease gets its wait on top).
	RequestTimeout Duration `json:"request_timeout"`
	// ListenAddress serves /healthz and /metrics; empty turns that off.
	ListenAddress string `json:"listen_address"`
	// Logs tunes how task output is forwarded to the API.
	Logs RunnerLogs `json:"logs"`
	// Backend is where tasks run.
	Backend RunnerBackend `json:"backend"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level"`
}

// RunnerLogs tunes the forwarding of task output into the task log.
type RunnerLogs struct {
	// FlushInterval is how often buffered output is sent.
	FlushInterval Duration `json:"flush_interval"`
	// BatchBytes sends at once when this much output is buffered.
	BatchBytes int `json:"batch_bytes"`
	// BufferBytes bounds the output buffered per task while the API is slow; beyond it
	// output is dropped (and the log says how much).
	BufferBytes int `json:"buffer_bytes"`
}

// RunnerBackend picks and configures the backend.
type RunnerBackend struct {
	// Type is local (default), diego or noop (benchmarks: every task completes at once).
	Type  string       `json:"type"`
	Local LocalBackend `json:"local"`
	Diego *Diego       `json:"diego,omitempty"`
}

// LocalBackend configures the local backend (tasks as processes on the runner's machine).
type LocalBackend struct {
	// WorkDir holds one directory per running task.
	WorkDir string `json:"work_dir"`
	// MaxLogBytes bounds the output kept per task; default 1 MiB.
	MaxLogBytes int64 `json:"max_log_bytes"`
	// MemoryMB is the default memory limit of a task; 0 = unlimited.
	MemoryMB int `json:"memory_mb"`
	// MemoryLimiter is auto (default), cgroup2, prlimit or none.
	MemoryLimiter string `json:"memory_limiter"`
	// CgroupParent is a delegated cgroup v2 directory for task cgroups.
	CgroupParent string `json:"cgroup_parent,omitempty"`
	// KillGrace is the time between SIGTERM and SIGKILL on cancel/timeout; default 10s.
	KillGrace Duration `json:"kill_grace"`
	// MaxUnpackedBytes and MaxFiles bound an unpacked code package.
	MaxUnpackedBytes int64 `json:"max_unpacked_bytes"`
	MaxFiles         int   `json:"max_files"`
	// KeepDirs leaves task directories behind (debugging).
	KeepDirs bool `json:"keep_dirs,omitempty"`
	// Path is the PATH workers get.
	Path string `json:"path,omitempty"`
}

// LoadRunner reads, defaults and validates the iron-runner config file.
func LoadRunner(path string) (Runner, error) {
	var c Runner
	if err := loadStrict(path, &c); err != nil {
		return Runner{}, err
	}
	c.ApplyDefaults()
	return c, c.Validate()
}

func (c *Runner) ApplyDefaults() {
	setDefault(&c.Slots, 4)
	setDefault(&c.LeaseBatch, c.Slots)
	if c.LeaseWait == 0 {
		c.LeaseWait = Duration(20 * time.Second)
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = Duration(10 * time.Second)
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = Duration(60 * time.Second)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = Duration(30 * time.Second)
	}
	if c.Logs.FlushInterval == 0 {
		c.Logs.FlushInterval = Duration(500 * time.Millisecond)
	}
	setDefault(&c.Logs.BatchBytes, 64<<10)
	setDefault(&c.Logs.BufferBytes, 4<<20)
	if c.Backend.Type == "" {
		c.Backend.Type = "local"
	}
	l := &c.Backend.Local
	setDefault64(&l.MaxLogBytes, 1<<20)
	if l.MemoryLimiter == "" {
		l.MemoryLimiter = "auto"
	}
	if l.KillGrace == 0 {
		l.KillGrace = Duration(10 * time.Second)
	}
	setDefault64(&l.MaxUnpackedBytes, 1<<30)
	setDefault(&l.MaxFiles, 100000)
	if c.Backend.Diego != nil {
		c.Backend.Diego.ApplyDefaults()
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

func (c Runner) Validate() error {
	var p problems
	u, err := url.Parse(c.APIURL)
	if c.APIURL == "" {
		p.add("api_url", "required: the iron-api URL, e.g. https://iron.sys.example.com")
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.add("api_url", "must be an http(s) URL, got %q", c.APIURL)
	}
	if strings.ContainsAny(c.Credential.Name, ": ") || len(c.Credential.Name) > 64 {
		p.add("credential.name", "at most 64 characters, no colon or space")
	}
	if len(c.Credential.Secret) < 16 {
		p.add("credential.secret", "required, at least 16 characters (one of the API's runner.credentials)")
	}
	if len(c.RunnerID) > 128 {
		p.add("runner_id", "at most 128 characters")
	}
	if c.Slots < 1 || c.Slots > 1000 {
		p.add("slots", "must be from 1 to 1000, got %d", c.Slots)
	}
	if c.LeaseBatch < 1 || c.LeaseBatch > 100 {
		p.add("lease_batch", "must be from 1 to 100, got %d", c.LeaseBatch)
	}
	if w := c.LeaseWait.Std(); w < 0 || w > 5*time.Minute {
		p.add("lease_wait", "must be from 0 to 5m, got %s", w)
	}
	if h := c.HeartbeatInterval.Std(); h < 50*time.Millisecond || h > 5*time.Minute {
		p.add("heartbeat_interval", "must be from 50ms to 5m, got %s", h)
	}
	if c.DrainTimeout.Std() < 0 {
		p.add("drain_timeout", "must not be negative")
	}
	if c.RequestTimeout.Std() < 100*time.Millisecond {
		p.add("request_timeout", "must be at least 100ms")
	}
	if c.ListenAddress != "" {
		if _, _, err := net.SplitHostPort(c.ListenAddress); err != nil {
			p.add("listen_address", "must be host:port (or empty to serve nothing), got %q", c.ListenAddress)
		}
	}
	if c.Logs.FlushInterval.Std() < 10*time.Millisecond {
		p.add("logs.flush_interval", "must be at least 10ms")
	}
	if c.Logs.BatchBytes < 1 || c.Logs.BatchBytes > 8<<20 {
		p.add("logs.batch_bytes", "must be from 1 to 8 MiB, got %d", c.Logs.BatchBytes)
	}
	if c.Logs.BufferBytes < c.Logs.BatchBytes {
		p.add("logs.buffer_bytes", "must be at least logs.batch_bytes (%d), got %d", c.Logs.BatchBytes, c.Logs.BufferBytes)
	}
	switch c.Backend.Type {
	case "local":
		l := c.Backend.Local
		if l.WorkDir == "" {
			p.add("backend.local.work_dir", "required: a directory for the tasks' working directories")
		}
		if l.MaxLogBytes < 1 {
			p.add("backend.local.max_log_bytes", "must be positive, got %d", l.MaxLogBytes)
		}
		if l.MemoryMB < 0 {
			p.add("backend.local.memory_mb", "must not be negative")
		}
		switch l.MemoryLimiter {
		case "auto", "cgroup2", "prlimit", "none":
		default:
			p.add("backend.local.memory_limiter", "must be auto, cgroup2, prlimit or none, got %q", l.MemoryLimiter)
		}
		if l.KillGrace.Std() < 0 {
			p.add("backend.local.kill_grace", "must not be negative")
		}
		if l.MaxUnpackedBytes < 1 {
			p.add("backend.local.max_unpacked_bytes", "must be positive")
		}
		if l.MaxFiles < 1 {
			p.add("backend.local.max_files", "must be positive")
		}
		if c.Backend.Diego != nil {
			p.add("backend.diego", "given, but backend.type is local")
		}
	case "diego":
		if c.Backend.Diego == nil {
			p.add("backend.diego", "required when backend.type is diego")
		} else {
			c.Backend.Diego.validate(&p, "backend.diego")
		}
	case "noop":
	default:
		p.add("backend.type", "must be local, diego or noop, got %q", c.Backend.Type)
	}
	if !validLogLevel(c.LogLevel) {
		p.add("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return p.err("iron-runner")
}
