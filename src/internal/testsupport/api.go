package testsupport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/ironcf/ironworker-release/src/api"
	"github.com/ironcf/ironworker-release/src/broker"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/store"
)

// API is a live iron-api (handlers on a loopback httptest server) on its own database,
// with one project and its token ready.
type API struct {
	DB        *Database
	Store     *store.Store
	Server    *httptest.Server
	Limits    config.Limits
	ProjectID string
	Token     string
	// RunnerName and RunnerSecret are the runner credential of /internal/v1.
	RunnerName   string
	RunnerSecret string
	// Waker is the API's queue listener (LISTEN on the test database).
	Waker *store.QueueWaker
}

// The runner credential every harness API accepts.
const (
	TestRunnerName   = "test-runner"
	TestRunnerSecret = "test-runner-secret-0123456789"
)

// StartAPI creates a database, migrates it and serves the API. limits may be zero
// values (defaults apply).
func StartAPI(limits config.Limits, opts ...Option) (*API, error) {
	db, err := NewDatabase()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	st, err := store.Open(ctx, db.URL, NewSealer(), store.Options{MaxOpenConns: 20, Logger: quietLogger()})
	if err != nil {
		db.Drop()
		return nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		db.Drop()
		return nil, err
	}
	cfg := config.API{Limits: limits}
	cfg.Runner.Credentials = []config.RunnerCredential{{Name: TestRunnerName, Secret: TestRunnerSecret}}
	cfg.ApplyDefaults()
	waker := store.NewQueueWaker(db.URL, quietLogger())
	st.WakeLocally(waker) // this process's long-polls wake at commit, not on the NOTIFY's return
	serverOpts := api.Options{Store: st, Limits: cfg.Limits, Logger: quietLogger(),
		Runner: api.RunnerOptions{Config: cfg.Runner, Waker: waker}}
	for _, o := range opts {
		o(st, &serverOpts)
	}
	_, handler := api.NewServer(serverOpts)
	a := &API{DB: db, Store: st, Server: httptest.NewServer(handler), Limits: cfg.Limits,
		RunnerName: TestRunnerName, RunnerSecret: TestRunnerSecret, Waker: waker}
	a.ProjectID, a.Token, err = a.NewProject("test project")
	if err != nil {
		a.Stop()
		return nil, err
	}
	return a, nil
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(io.Discard, nil))
}

// NewProject makes another project, returning its id and token.
func (a *API) NewProject(name string) (string, string, error) {
	p, token, err := a.Store.CreateProject(context.Background(), name)
	return p.ID, token, err
}

// Stop closes the server and the store and drops the database.
func (a *API) Stop() {
	if a.Server != nil {
		a.Server.Close()
	}
	if a.Waker != nil {
		a.Waker.Close()
	}
	if a.Store != nil {
		a.Store.Close()
	}
	if a.DB != nil {
		a.DB.Drop()
	}
}

// Project is the base path of the ready project: /2/projects/<id>.
func (a *API) Project() string { return "/2/projects/" + a.ProjectID }

// Response is a finished HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic value (numbers stay json.Number so tests can
// assert integers are integers).
func (r Response) JSON() map[string]any {
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		panic(fmt.Sprintf("response is not a JSON object (%v): %s", err, r.Body))
	}
	return v
}

// Do sends a request with the ready project's token in the Authorization header.
// body may be nil, a string, []byte, or anything else (JSON-encoded).
func (a *API) Do(method, path string, body any) Response {
	return a.DoAs(a.Token, method, path, body, nil)
}

// DoAs sends a request with the given token (none when empty) and extra headers.
func (a *API) DoAs(token, method, path string, body any, header http.Header) Response {
	var rd io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
		contentType = "application/json"
	case []byte:
		rd = bytes.NewReader(b)
		contentType = "application/json"
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			panic(err)
		}
		rd = bytes.NewReader(raw)
		contentType = "application/json"
	}
	req, err := http.NewRequest(method, a.Server.URL+path, rd)
	if err != nil {
		panic(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "OAuth "+token)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// Option adjusts the server a harness API serves.
type Option func(st *store.Store, o *api.Options)

// WithBroker serves the Open Service Broker under /v2 with cfg (defaults applied here;
// set Enabled, credentials, service, plans and external_api as the test needs).
func WithBroker(cfg config.Broker, logger *slog.Logger) Option {
	return func(st *store.Store, o *api.Options) {
		full := config.API{Broker: cfg}
		full.ApplyDefaults()
		if logger == nil {
			logger = quietLogger()
		}
		o.Broker = broker.New(st, full.Broker, logger).Handler()
	}
}
