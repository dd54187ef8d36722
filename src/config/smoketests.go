package config

import (
	"net/url"
	"regexp"
	"strings"
	"time"
)

// SmokeTests is the configuration of the smoke-tests errand (src/cmd/smoke-tests): it
// provisions a service instance through iron-api's broker, binds it, uploads a tiny zip
// code, queues a task, waits for it to complete, reads its log and cleans up.
type SmokeTests struct {
	// Broker is iron-api's Open Service Broker (HTTP basic auth).
	Broker SmokeTestsBroker `json:"broker"`
	// APIURL, when set, is the IronWorker API base URL used instead of the one in the
	// binding's credentials (e.g. when the errand VM cannot resolve the public route).
	APIURL string `json:"api_url,omitempty"`
	// ServiceName and PlanName pick the catalog entry; empty: the first service and its
	// first plan.
	ServiceName string `json:"service_name,omitempty"`
	PlanName    string `json:"plan_name,omitempty"`
	// OrganizationGUID and SpaceGUID go into the provision request (the broker records
	// them; no Cloud Foundry is called).
	OrganizationGUID string `json:"organization_guid"`
	SpaceGUID        string `json:"space_guid"`
	// CodeName prefixes the uploaded code's name (a random suffix is added).
	CodeName string `json:"code_name"`
	// Stack is the code's stack (diego backend); empty: the backend's default.
	Stack string `json:"stack,omitempty"`
	// TaskTimeout bounds waiting for the task to complete (staging included on diego).
	TaskTimeout Duration `json:"task_timeout"`
	// RequestTimeout bounds each HTTP request.
	RequestTimeout Duration `json:"request_timeout"`
	// PollInterval is how often the task is read while waiting.
	PollInterval Duration `json:"poll_interval"`
	// SkipSSLValidation turns off TLS verification of the broker and the API.
	SkipSSLValidation bool `json:"skip_ssl_validation,omitempty"`
}

// SmokeTestsBroker is where and how the errand reaches the broker.
type SmokeTestsBroker struct {
	// URL is the broker's base URL (the errand appends /v2/...).
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// LoadSmokeTests reads, defaults and validates the smoke-tests config file.
func LoadSmokeTests(path string) (SmokeTests, error) {
	var c SmokeTests
	if err := loadStrict(path, &c); err != nil {
		return SmokeTests{}, err
	}
	c.ApplyDefaults()
	return c, c.Validate()
}

func (c *SmokeTests) ApplyDefaults() {
	if c.OrganizationGUID == "" {
		c.OrganizationGUID = "00000000-0000-4000-8000-5a0be7e57000"
	}
	if c.SpaceGUID == "" {
		c.SpaceGUID = "00000000-0000-4000-8000-5a0be7e57001"
	}
	if c.CodeName == "" {
		c.CodeName = "ironworker-smoke-test"
	}
	if c.TaskTimeout == 0 {
		c.TaskTimeout = Duration(5 * time.Minute)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = Duration(30 * time.Second)
	}
	if c.PollInterval == 0 {
		c.PollInterval = Duration(time.Second)
	}
}

var smokeCodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$`)

func httpURL(p *problems, prop, raw, example string) {
	u, err := url.Parse(raw)
	if raw == "" {
		p.add(prop, "required, e.g. %s", example)
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.add(prop, "must be an http(s) URL, got %q", raw)
	}
}

func (c SmokeTests) Validate() error {
	var p problems
	httpURL(&p, "broker.url", c.Broker.URL, "http://iron-api.service.internal:8080")
	if c.Broker.Username == "" || strings.Contains(c.Broker.Username, ":") {
		p.add("broker.username", "required, without a colon (iron-api's broker.username)")
	}
	if c.Broker.Password == "" {
		p.add("broker.password", "required (iron-api's broker.password)")
	}
	if c.APIURL != "" {
		httpURL(&p, "api_url", c.APIURL, "https://iron.sys.example.com")
	}
	if strings.TrimSpace(c.OrganizationGUID) == "" {
		p.add("organization_guid", "must not be blank")
	}
	if strings.TrimSpace(c.SpaceGUID) == "" {
		p.add("space_guid", "must not be blank")
	}
	if !smokeCodeName.MatchString(c.CodeName) {
		p.add("code_name", "must be 1-101 letters, digits, dots, dashes or underscores, got %q", c.CodeName)
	}
	if v := c.TaskTimeout.Std(); v < time.Second {
		p.add("task_timeout", "must be at least 1s, got %s", v)
	}
	if v := c.RequestTimeout.Std(); v < 100*time.Millisecond {
		p.add("request_timeout", "must be at least 100ms, got %s", v)
	}
	if v := c.PollInterval.Std(); v < 10*time.Millisecond || v > time.Minute {
		p.add("poll_interval", "must be from 10ms to 1m, got %s", v)
	}
	return p.err("smoke-tests")
}
