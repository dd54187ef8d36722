package config

import (
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Diego configures the runner's diego backend: every IronWorker task becomes a Cloud
// Foundry task, through the Cloud Controller v3 API, authenticated as a UAA client.
type Diego struct {
	// APIURL is the Cloud Controller URL (https://api.<system domain>). UAA and Log
	// Cache are discovered from its root links.
	APIURL string `json:"api_url"`
	// ClientID and ClientSecret are the UAA client (client_credentials grant). It needs
	// cloud_controller.admin, or cloud_controller.read/write plus SpaceDeveloper in the
	// space(s), and logs.admin or doppler.firehose for Log Cache, unless CC grants it.
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	// Org and Space are where code apps and tasks live. Projects made by the service
	// broker may get a space of their own in Org (created on demand).
	Org   string `json:"org"`
	Space string `json:"space"`
	// ProjectSpacePrefix, when set, runs the tasks of projects made by the service
	// broker in a space of their own, <prefix><project id> (created on demand in Org),
	// so that tenants are separated by CF spaces and space quotas; other projects use
	// Space. Empty: every task runs in Space.
	ProjectSpacePrefix string `json:"project_space_prefix,omitempty"`
	// Buildpacks stage zip codes; empty means CF detects one. Stack is the stack to
	// stage on; empty means CC's default.
	Buildpacks []string `json:"buildpacks,omitempty"`
	Stack      string   `json:"stack,omitempty"`
	// SkipSSLValidation turns off TLS verification of CC, UAA and Log Cache (lab
	// foundations with self-signed certificates only).
	SkipSSLValidation bool `json:"skip_ssl_validation,omitempty"`
	// LauncherSkipSSLValidation makes the in-container launcher fetch payloads from the
	// API without verifying its certificate (curl -k / wget --no-check-certificate).
	LauncherSkipSSLValidation bool `json:"launcher_skip_ssl_validation,omitempty"`
	// PollInterval is how often the state of all followed CF tasks is read (one list
	// call per poll) and their logs collected from Log Cache. Default 2s.
	PollInterval Duration `json:"poll_interval,omitempty"`
	// RequestTimeout bounds every single CC, UAA and Log Cache request. Default 30s.
	RequestTimeout Duration `json:"request_timeout,omitempty"`
	// StagingTimeout bounds uploading and staging a zip code into a droplet. Default 15m.
	StagingTimeout Duration `json:"staging_timeout,omitempty"`
	// DefaultMemoryMB and DefaultDiskMB apply to tasks whose code or plan sets none;
	// zero leaves CC's defaults.
	DefaultMemoryMB int `json:"default_memory_mb,omitempty"`
	DefaultDiskMB   int `json:"default_disk_mb,omitempty"`
	// AppNamePrefix prefixes the CF app of each code revision and the CF task of each
	// IronWorker task. Default "iw".
	AppNamePrefix string `json:"app_name_prefix,omitempty"`
}

func (d *Diego) ApplyDefaults() {
	if d.PollInterval == 0 {
		d.PollInterval = Duration(2 * time.Second)
	}
	if d.RequestTimeout == 0 {
		d.RequestTimeout = Duration(30 * time.Second)
	}
	if d.StagingTimeout == 0 {
		d.StagingTimeout = Duration(15 * time.Minute)
	}
	if d.AppNamePrefix == "" {
		d.AppNamePrefix = "iw"
	}
}

// Validate checks a defaulted Diego config on its own.
func (d Diego) Validate() error {
	var p problems
	d.validate(&p, "diego")
	return p.err("iron-runner")
}

var namePrefixPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,15}$`)

func (d Diego) validate(p *problems, prefix string) {
	u, err := url.Parse(d.APIURL)
	if d.APIURL == "" {
		p.add(prefix+".api_url", "required: the Cloud Controller URL, e.g. https://api.sys.example.com")
	} else if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add(prefix+".api_url", "must be an http(s) URL, got %q", d.APIURL)
	}
	if d.ClientID == "" {
		p.add(prefix+".client_id", "required: the UAA client the runner authenticates as")
	}
	if d.ClientSecret == "" {
		p.add(prefix+".client_secret", "required")
	}
	if strings.TrimSpace(d.Org) == "" {
		p.add(prefix+".org", "required: the CF org for code apps and tasks")
	}
	if strings.TrimSpace(d.Space) == "" {
		p.add(prefix+".space", "required: the CF space for code apps and tasks")
	}
	if d.ProjectSpacePrefix != "" && (strings.TrimSpace(d.ProjectSpacePrefix) != d.ProjectSpacePrefix || len(d.ProjectSpacePrefix) > 64) {
		p.add(prefix+".project_space_prefix", "at most 64 characters, no leading or trailing space, got %q", d.ProjectSpacePrefix)
	}
	for i, b := range d.Buildpacks {
		if strings.TrimSpace(b) == "" {
			p.add(prefix+".buildpacks["+itoa(i)+"]", "must not be empty")
		}
	}
	if v := d.PollInterval.Std(); v < 10*time.Millisecond || v > 5*time.Minute {
		p.add(prefix+".poll_interval", "must be from 10ms to 5m, got %s", v)
	}
	if v := d.RequestTimeout.Std(); v < time.Second {
		p.add(prefix+".request_timeout", "must be at least 1s, got %s", v)
	}
	if v := d.StagingTimeout.Std(); v < time.Second {
		p.add(prefix+".staging_timeout", "must be at least 1s, got %s", v)
	}
	if d.DefaultMemoryMB < 0 {
		p.add(prefix+".default_memory_mb", "must not be negative")
	}
	if d.DefaultDiskMB < 0 {
		p.add(prefix+".default_disk_mb", "must not be negative")
	}
	if !namePrefixPattern.MatchString(d.AppNamePrefix) {
		p.add(prefix+".app_name_prefix", "must be 1-16 lowercase letters, digits or dashes, got %q", d.AppNamePrefix)
	}
}
