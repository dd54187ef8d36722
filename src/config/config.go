// Package config holds one struct per job, exactly what the job's BOSH template renders.
// Every struct is loaded strictly (unknown keys are refused) and validated on load, with
// errors that name the offending property.
package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Duration is a time.Duration written as a Go duration string ("1s", "500ms") or as a
// number of seconds, so BOSH properties can use either form.
type Duration time.Duration

func (d Duration) Std() time.Duration { return time.Duration(d) }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q (use e.g. \"30s\", \"5m\")", s)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("invalid duration %s (use e.g. \"30s\" or a number of seconds)", string(b))
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// loadStrict reads a YAML or JSON file into out, refusing keys the struct does not have.
func loadStrict(path string, out any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config %s: %w", path, err)
	}
	if err := yaml.UnmarshalStrict(raw, out); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	return nil
}

// problems collects validation failures, each naming its property.
type problems []string

func (p *problems) add(property, format string, args ...any) {
	*p = append(*p, property+": "+fmt.Sprintf(format, args...))
}

func (p problems) err(job string) error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("invalid %s config:\n  %s", job, strings.Join(p, "\n  "))
}

// Database is how a job reaches PostgreSQL: a URL, or its parts (as the BOSH `database`
// link from postgres-release provides them).
type Database struct {
	URL      string `json:"url,omitempty"`
	Host     string `json:"host,omitempty"`
	Port     int    `json:"port,omitempty"`
	Name     string `json:"name,omitempty"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// SSLMode is one of disable, require, verify-ca, verify-full.
	SSLMode     string `json:"sslmode,omitempty"`
	SSLRootCert string `json:"sslrootcert,omitempty"`
	SSLCert     string `json:"sslcert,omitempty"`
	SSLKey      string `json:"sslkey,omitempty"`
	// MaxOpenConns bounds the connection pool.
	MaxOpenConns   int      `json:"max_open_conns,omitempty"`
	ConnectTimeout Duration `json:"connect_timeout,omitempty"`
}

func (d *Database) applyDefaults() {
	if d.Port == 0 {
		d.Port = 5432
	}
	if d.SSLMode == "" {
		d.SSLMode = "disable"
	}
	if d.MaxOpenConns == 0 {
		d.MaxOpenConns = 20
	}
	if d.ConnectTimeout == 0 {
		d.ConnectTimeout = Duration(10 * time.Second)
	}
}

func (d Database) validate(p *problems, prefix string) {
	if d.URL != "" {
		u, err := url.Parse(d.URL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			p.add(prefix+".url", "must be a postgres:// URL")
		}
		if d.Host != "" || d.Name != "" || d.User != "" {
			p.add(prefix+".url", "give either url or host/name/user, not both")
		}
		return
	}
	if d.Host == "" {
		p.add(prefix+".host", "required (or give %s.url)", prefix)
	}
	if d.Name == "" {
		p.add(prefix+".name", "required (or give %s.url)", prefix)
	}
	if d.User == "" {
		p.add(prefix+".user", "required (or give %s.url)", prefix)
	}
	if d.Port < 1 || d.Port > 65535 {
		p.add(prefix+".port", "must be 1-65535, got %d", d.Port)
	}
	switch d.SSLMode {
	case "disable", "require", "verify-ca", "verify-full":
	default:
		p.add(prefix+".sslmode", "must be disable, require, verify-ca or verify-full, got %q", d.SSLMode)
	}
	if d.MaxOpenConns < 1 {
		p.add(prefix+".max_open_conns", "must be at least 1")
	}
}

// DSN is the lib/pq connection string.
func (d Database) DSN() string {
	timeout := int(d.ConnectTimeout.Std().Seconds())
	if timeout < 1 {
		timeout = 10
	}
	if d.URL != "" {
		u, err := url.Parse(d.URL)
		if err != nil {
			return d.URL
		}
		q := u.Query()
		if q.Get("connect_timeout") == "" {
			q.Set("connect_timeout", fmt.Sprint(timeout))
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	kv := []string{
		"host=" + quoteDSN(d.Host),
		fmt.Sprintf("port=%d", d.Port),
		"dbname=" + quoteDSN(d.Name),
		"user=" + quoteDSN(d.User),
		"sslmode=" + d.SSLMode,
		fmt.Sprintf("connect_timeout=%d", timeout),
	}
	if d.Password != "" {
		kv = append(kv, "password="+quoteDSN(d.Password))
	}
	for k, v := range map[string]string{"sslrootcert": d.SSLRootCert, "sslcert": d.SSLCert, "sslkey": d.SSLKey} {
		if v != "" {
			kv = append(kv, k+"="+quoteDSN(v))
		}
	}
	return strings.Join(kv, " ")
}

func quoteDSN(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func validLogLevel(level string) bool {
	switch level {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}
