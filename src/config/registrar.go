package config

import (
	"net"
	"net/url"
	"strings"
	"time"
)

// Registrar is the configuration of the iron-registrar job: it advertises the service in
// Cloud Foundry (the broker and its plans in the marketplace) and registers the API's
// route(s) with the gorouters over NATS.
type Registrar struct {
	// ListenAddress is host:port for /healthz and /metrics; empty serves neither.
	ListenAddress string `json:"listen_address,omitempty"`
	// LogLevel is debug, info, warn or error.
	LogLevel    string               `json:"log_level,omitempty"`
	CF          RegistrarCF          `json:"cf"`
	Marketplace RegistrarMarketplace `json:"marketplace"`
	Routes      RegistrarRoutes      `json:"routes"`
}

// RegistrarCF is how the registrar reaches Cloud Controller: a UAA client with
// cloud_controller.admin (global brokers, plan visibility and orgs are admin matters).
type RegistrarCF struct {
	APIURL            string   `json:"api_url"`
	ClientID          string   `json:"client_id"`
	ClientSecret      string   `json:"client_secret"`
	SkipSSLValidation bool     `json:"skip_ssl_validation,omitempty"`
	RequestTimeout    Duration `json:"request_timeout,omitempty"`
}

// RegistrarMarketplace is what Cloud Controller should show.
type RegistrarMarketplace struct {
	// Enabled defaults to true.
	Enabled *bool `json:"enabled,omitempty"`
	// Interval is how often Cloud Controller is re-checked. Default 5m.
	Interval Duration `json:"interval,omitempty"`
	// JobTimeout bounds waiting for one CC job (broker create, update, delete). Default 5m.
	JobTimeout Duration        `json:"job_timeout,omitempty"`
	Broker     RegistrarBroker `json:"broker"`
	// DefaultVisibility applies to catalog plans not listed in Plans: public (default),
	// admin or organization (then DefaultOrgs).
	DefaultVisibility string   `json:"default_visibility,omitempty"`
	DefaultOrgs       []string `json:"default_orgs,omitempty"`
	// Plans sets the visibility of single plans by name.
	Plans []RegistrarPlan `json:"plans,omitempty"`
	// Diego, when given, is the org and space the runner's diego backend uses; they are
	// created when missing (with the space quota, when given).
	Diego *RegistrarDiego `json:"diego,omitempty"`
}

func (m RegistrarMarketplace) IsEnabled() bool { return m.Enabled == nil || *m.Enabled }

// RegistrarBroker is the broker as Cloud Controller should know it: iron-api's /v2
// endpoint and its basic-auth credentials (iron-api's broker.username/password).
type RegistrarBroker struct {
	// Name defaults to "ironworker".
	Name string `json:"name,omitempty"`
	// URL is the broker's base URL (Cloud Controller appends /v2/...).
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// RegistrarPlan is one plan's visibility: public, admin (admins only) or organization
// (the orgs named in Orgs).
type RegistrarPlan struct {
	Name       string   `json:"name"`
	Visibility string   `json:"visibility"`
	Orgs       []string `json:"orgs,omitempty"`
}

type RegistrarDiego struct {
	Org        string               `json:"org"`
	Space      string               `json:"space"`
	SpaceQuota *RegistrarSpaceQuota `json:"space_quota,omitempty"`
}

// RegistrarSpaceQuota is a space quota of the diego org applied to the diego space. A
// missing limit is unlimited.
type RegistrarSpaceQuota struct {
	Name                 string `json:"name"`
	TotalMemoryInMB      *int   `json:"total_memory_in_mb,omitempty"`
	PerProcessMemoryInMB *int   `json:"per_process_memory_in_mb,omitempty"`
	TotalInstances       *int   `json:"total_instances,omitempty"`
	PerAppTasks          *int   `json:"per_app_tasks,omitempty"`
}

// RegistrarRoutes is the route registration with gorouter over NATS.
type RegistrarRoutes struct {
	// Enabled defaults to true.
	Enabled *bool         `json:"enabled,omitempty"`
	NATS    RegistrarNATS `json:"nats"`
	// RegisterInterval is the longest time between two router.register messages;
	// gorouter's minimumRegisterIntervalInSeconds (from router.greet/router.start) is
	// used when shorter. Default 20s (gorouter prunes after 120s by default).
	RegisterInterval Duration `json:"register_interval,omitempty"`
	// Host and Port (or TLSPort with ServerCertDomainSAN) are where gorouter reaches
	// this API instance; URIs are the routes (e.g. iron.sys.example.com).
	Host                string            `json:"host"`
	Port                int               `json:"port,omitempty"`
	TLSPort             int               `json:"tls_port,omitempty"`
	ServerCertDomainSAN string            `json:"server_cert_domain_san,omitempty"`
	URIs                []string          `json:"uris"`
	Tags                map[string]string `json:"tags,omitempty"`
	// PrivateInstanceID identifies this instance to gorouter (e.g. BOSH spec.id). It must
	// be the same for the running registrar and the deregister errand, since gorouter
	// unregisters only a matching one. Default: a UUID derived from host and ports.
	PrivateInstanceID string `json:"private_instance_id,omitempty"`
	AvailabilityZone  string `json:"availability_zone,omitempty"`
	// Protocol is http1 or http2; empty leaves gorouter's default.
	Protocol string `json:"protocol,omitempty"`
}

func (r RegistrarRoutes) IsEnabled() bool { return r.Enabled == nil || *r.Enabled }

// RegistrarNATS is the NATS cluster (cf-deployment's nats-tls link, or plain nats).
type RegistrarNATS struct {
	// Servers are host:port addresses.
	Servers  []string `json:"servers"`
	User     string   `json:"user,omitempty"`
	Password string   `json:"password,omitempty"`
	TLS      NATSTLS  `json:"tls"`
	// ConnectTimeout bounds one connection attempt. Default 5s.
	ConnectTimeout Duration `json:"connect_timeout,omitempty"`
	// MaxReconnectWait caps the exponential reconnect backoff. Default 10s.
	MaxReconnectWait Duration `json:"max_reconnect_wait,omitempty"`
}

// NATSTLS is mutual TLS to NATS: PEM contents (as BOSH renders certificates).
type NATSTLS struct {
	Enabled    bool   `json:"enabled,omitempty"`
	CACert     string `json:"ca_cert,omitempty"`
	ClientCert string `json:"client_cert,omitempty"`
	ClientKey  string `json:"client_key,omitempty"`
	// ServerName overrides the name verified in the server certificate.
	ServerName string `json:"server_name,omitempty"`
}

// LoadRegistrar reads, defaults and validates the iron-registrar config file.
func LoadRegistrar(path string) (Registrar, error) {
	var c Registrar
	if err := loadStrict(path, &c); err != nil {
		return Registrar{}, err
	}
	c.ApplyDefaults()
	return c, c.Validate()
}

func (c *Registrar) ApplyDefaults() {
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.CF.RequestTimeout == 0 {
		c.CF.RequestTimeout = Duration(30 * time.Second)
	}
	m := &c.Marketplace
	if m.Interval == 0 {
		m.Interval = Duration(5 * time.Minute)
	}
	if m.JobTimeout == 0 {
		m.JobTimeout = Duration(5 * time.Minute)
	}
	if m.Broker.Name == "" {
		m.Broker.Name = "ironworker"
	}
	if m.DefaultVisibility == "" {
		m.DefaultVisibility = "public"
	}
	r := &c.Routes
	if r.RegisterInterval == 0 {
		r.RegisterInterval = Duration(20 * time.Second)
	}
	if r.NATS.ConnectTimeout == 0 {
		r.NATS.ConnectTimeout = Duration(5 * time.Second)
	}
	if r.NATS.MaxReconnectWait == 0 {
		r.NATS.MaxReconnectWait = Duration(10 * time.Second)
	}
}

func (c Registrar) Validate() error {
	var p problems
	if c.ListenAddress != "" {
		if _, _, err := net.SplitHostPort(c.ListenAddress); err != nil {
			p.add("listen_address", "must be host:port, got %q", c.ListenAddress)
		}
	}
	if !validLogLevel(c.LogLevel) {
		p.add("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	m, r := c.Marketplace, c.Routes
	if !m.IsEnabled() && !r.IsEnabled() {
		p.add("marketplace.enabled", "marketplace and routes are both disabled: nothing to do")
	}
	if m.IsEnabled() {
		c.validateCF(&p)
		c.validateMarketplace(&p)
	}
	if r.IsEnabled() {
		c.validateRoutes(&p)
	}
	return p.err("iron-registrar")
}

func (c Registrar) validateCF(p *problems) {
	cf := c.CF
	u, err := url.Parse(cf.APIURL)
	if cf.APIURL == "" {
		p.add("cf.api_url", "required: the Cloud Controller URL, e.g. https://api.sys.example.com")
	} else if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add("cf.api_url", "must be an http(s) URL, got %q", cf.APIURL)
	}
	if cf.ClientID == "" {
		p.add("cf.client_id", "required: a UAA client with cloud_controller.admin")
	}
	if cf.ClientSecret == "" {
		p.add("cf.client_secret", "required")
	}
	if cf.RequestTimeout.Std() < time.Second {
		p.add("cf.request_timeout", "must be at least 1s, got %s", cf.RequestTimeout.Std())
	}
}

func validVisibility(p *problems, prop, vis string, orgs []string) {
	switch vis {
	case "public", "admin":
		if len(orgs) > 0 {
			p.add(prop, "orgs are only for visibility organization")
		}
	case "organization":
		if len(orgs) == 0 {
			p.add(prop, "visibility organization needs at least one org")
		}
		for _, o := range orgs {
			if strings.TrimSpace(o) == "" {
				p.add(prop, "org names must not be empty")
			}
		}
	default:
		p.add(prop, "visibility must be public, admin or organization, got %q", vis)
	}
}

func (c Registrar) validateMarketplace(p *problems) {
	m := c.Marketplace
	if m.Interval.Std() < 100*time.Millisecond {
		p.add("marketplace.interval", "must be at least 100ms, got %s", m.Interval.Std())
	}
	if m.JobTimeout.Std() < time.Second {
		p.add("marketplace.job_timeout", "must be at least 1s, got %s", m.JobTimeout.Std())
	}
	b := m.Broker
	if strings.TrimSpace(b.Name) == "" {
		p.add("marketplace.broker.name", "must not be blank")
	}
	u, err := url.Parse(b.URL)
	if b.URL == "" {
		p.add("marketplace.broker.url", "required: where Cloud Controller reaches iron-api's broker, e.g. https://iron.sys.example.com")
	} else if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add("marketplace.broker.url", "must be an http(s) URL, got %q", b.URL)
	}
	if b.Username == "" || strings.Contains(b.Username, ":") {
		p.add("marketplace.broker.username", "required, without a colon (iron-api's broker.username)")
	}
	if len(b.Password) < 8 {
		p.add("marketplace.broker.password", "must be at least 8 characters (iron-api's broker.password)")
	}
	validVisibility(p, "marketplace.default_visibility", m.DefaultVisibility, m.DefaultOrgs)
	names := map[string]bool{}
	for i, pl := range m.Plans {
		if pl.Name == "" {
			p.add(indexed("marketplace.plans", i, "name"), "required")
		} else if names[pl.Name] {
			p.add(indexed("marketplace.plans", i, "name"), "duplicate plan %q", pl.Name)
		}
		names[pl.Name] = true
		validVisibility(p, indexed("marketplace.plans", i, "visibility"), pl.Visibility, pl.Orgs)
	}
	if d := m.Diego; d != nil {
		if strings.TrimSpace(d.Org) == "" {
			p.add("marketplace.diego.org", "required: the diego backend's org")
		}
		if strings.TrimSpace(d.Space) == "" {
			p.add("marketplace.diego.space", "required: the diego backend's space")
		}
		if q := d.SpaceQuota; q != nil {
			if strings.TrimSpace(q.Name) == "" {
				p.add("marketplace.diego.space_quota.name", "required")
			}
			for field, v := range map[string]*int{"total_memory_in_mb": q.TotalMemoryInMB, "per_process_memory_in_mb": q.PerProcessMemoryInMB,
				"total_instances": q.TotalInstances, "per_app_tasks": q.PerAppTasks} {
				if v != nil && *v < 0 {
					p.add("marketplace.diego.space_quota."+field, "must not be negative (leave it out for unlimited), got %d", *v)
				}
			}
		}
	}
}

func (c Registrar) validateRoutes(p *problems) {
	r := c.Routes
	if len(r.NATS.Servers) == 0 {
		p.add("routes.nats.servers", "at least one host:port is required")
	}
	for i, s := range r.NATS.Servers {
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			p.add("routes.nats.servers["+itoa(i)+"]", "must be host:port, got %q", s)
		}
	}
	if t := r.NATS.TLS; t.Enabled {
		if t.CACert == "" {
			p.add("routes.nats.tls.ca_cert", "required with tls.enabled")
		}
		if (t.ClientCert == "") != (t.ClientKey == "") {
			p.add("routes.nats.tls.client_cert", "client_cert and client_key go together")
		}
	}
	if r.NATS.ConnectTimeout.Std() < 100*time.Millisecond {
		p.add("routes.nats.connect_timeout", "must be at least 100ms, got %s", r.NATS.ConnectTimeout.Std())
	}
	if r.NATS.MaxReconnectWait.Std() < 10*time.Millisecond {
		p.add("routes.nats.max_reconnect_wait", "must be at least 10ms, got %s", r.NATS.MaxReconnectWait.Std())
	}
	if v := r.RegisterInterval.Std(); v < 10*time.Millisecond || v > 60*time.Second {
		p.add("routes.register_interval", "must be from 10ms to 60s (well under gorouter's prune threshold), got %s", v)
	}
	if r.Host == "" {
		p.add("routes.host", "required: the address gorouter reaches this instance at")
	}
	if r.Port == 0 && r.TLSPort == 0 {
		p.add("routes.port", "give port or tls_port")
	}
	if r.Port < 0 || r.Port > 65535 {
		p.add("routes.port", "must be from 1 to 65535, got %d", r.Port)
	}
	if r.TLSPort < 0 || r.TLSPort > 65535 {
		p.add("routes.tls_port", "must be from 1 to 65535, got %d", r.TLSPort)
	}
	if r.TLSPort != 0 && r.ServerCertDomainSAN == "" {
		p.add("routes.server_cert_domain_san", "required with tls_port (gorouter verifies the backend certificate against it)")
	}
	if len(r.URIs) == 0 {
		p.add("routes.uris", "at least one route is required, e.g. iron.sys.example.com")
	}
	for i, u := range r.URIs {
		if u == "" || strings.Contains(u, "://") || strings.ContainsAny(u, " ") {
			p.add("routes.uris["+itoa(i)+"]", "must be a host name with an optional path, without scheme, got %q", u)
		}
	}
	switch r.Protocol {
	case "", "http1", "http2":
	default:
		p.add("routes.protocol", "must be http1 or http2, got %q", r.Protocol)
	}
}
