// Package fakecf is a stateful fake Cloud Foundry for tests: one httptest server that
// answers the subset of the Cloud Controller v3 API the project uses (root links, orgs,
// spaces, apps, packages with bits upload, builds, droplets, tasks, feature flags, jobs,
// service brokers, service plans and their visibility), UAA's /oauth/token (client
// credentials) and Log Cache's read API, with the documented shapes and status codes
// (see ../../../../../shared/cf-reference.md section 3).
//
// It runs tasks for real: a task's command is executed by /bin/sh -c in a fresh
// temporary directory (holding the droplet's unpacked bits for buildpack apps, as
// /home/vcap/app would), its stdout and stderr lines become Log Cache envelopes with
// source type APP/TASK/<task name>, and its exit status becomes the task's state.
//
// Requests are validated strictly, as Cloud Controller does: unknown fields and wrong
// types are 422 CF-UnprocessableEntity, unknown query parameters are 400
// CF-BadQueryParameter, a missing or expired bearer token is 401 CF-InvalidAuthToken.
// Tests can make it answer 429 with Retry-After (Throttle) and inspect every request
// (Requests).
package fakecf

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a fake foundation. Zero values get the defaults noted.
type Options struct {
	// ClientID and ClientSecret are the UAA client that may get tokens.
	// Default "iron-runner" / "iron-runner-secret".
	ClientID     string
	ClientSecret string
	// TokenTTL is the expires_in of issued tokens; the fake refuses a token after it.
	// Default 1h.
	TokenTTL time.Duration
	// DiegoDockerDisabled starts the fake with the diego_docker feature flag off. CF's
	// default is off; the fake's is on so that docker tests need no set-up (an operator
	// would have run `cf enable-feature-flag diego_docker`). SetFeatureFlag changes it.
	DiegoDockerDisabled bool
	// StagingTime is how long a build stays STAGING. Default 50ms.
	StagingTime time.Duration
	// PendingTime is how long a task stays PENDING before its process starts. Default 20ms.
	PendingTime time.Duration
	// KillGrace is how long a cancelled task's process gets between SIGTERM and SIGKILL.
	// Default 1s.
	KillGrace time.Duration
	// Env is added to every task process's environment (after the app's variables).
	Env []string
}

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string
	Query  string
	Time   time.Time
	Status int
	// Early is set for a request that arrived before the Retry-After of an earlier 429.
	Early bool
}

// Server is a fake Cloud Foundry. All its URLs (CC, UAA, login, Log Cache) are URL.
type Server struct {
	URL string

	opts Options
	srv  *httptest.Server
	mux  *http.ServeMux

	mu         sync.Mutex
	requests   []Request
	throttle   int
	outage     int
	retryAfter time.Duration
	notBefore  time.Time
	tokens     map[string]time.Time
	issued     int
	seq        int

	orgs        map[string]*org
	spaces      map[string]*space
	apps        map[string]*app
	packages    map[string]*pkg
	builds      map[string]*build
	droplets    map[string]*droplet
	tasks       map[string]*task
	flags       map[string]*flag
	jobs        map[string]*job
	brokers     map[string]*broker
	offerings   map[string]*offering
	plans       map[string]*plan
	envelopes   map[string][]envelope // by source id
	lastEnvTime int64
	workDir     string
	closed      bool
	failNextJob string
	running     sync.WaitGroup
}

// New starts a fake foundation. Close it when done.
func New(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = "iron-runner"
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "iron-runner-secret"
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = time.Hour
	}
	if opts.StagingTime <= 0 {
		opts.StagingTime = 50 * time.Millisecond
	}
	if opts.PendingTime <= 0 {
		opts.PendingTime = 20 * time.Millisecond
	}
	if opts.KillGrace <= 0 {
		opts.KillGrace = time.Second
	}
	dir, err := os.MkdirTemp("", "fakecf-")
	if err != nil {
		panic(err)
	}
	s := &Server{
		opts: opts, tokens: map[string]time.Time{},
		orgs: map[string]*org{}, spaces: map[string]*space{}, apps: map[string]*app{},
		packages: map[string]*pkg{}, builds: map[string]*build{}, droplets: map[string]*droplet{},
		tasks: map[string]*task{}, flags: map[string]*flag{}, jobs: map[string]*job{},
		brokers: map[string]*broker{}, offerings: map[string]*offering{}, plans: map[string]*plan{},
		envelopes: map[string][]envelope{}, workDir: dir,
	}
	now := time.Now().UTC()
	for name, enabled := range map[string]bool{
		"diego_docker":                         !opts.DiegoDockerDisabled,
		"task_creation":                        true,
		"space_scoped_private_broker_creation": true,
		"service_instance_creation":            true,
		"app_scaling":                          true,
	} {
		s.flags[name] = &flag{name: name, enabled: enabled, updated: now}
	}
	s.mux = http.NewServeMux()
	s.routes()
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server and kills every task process still running.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for _, t := range s.tasks {
		if t.proc != nil {
			t.proc.kill()
		}
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.running.Wait()
	os.RemoveAll(s.workDir)
}

// ClientID and ClientSecret are the UAA client credentials the fake accepts.
func (s *Server) ClientID() string     { return s.opts.ClientID }
func (s *Server) ClientSecret() string { return s.opts.ClientSecret }

// Throttle makes the next n rate-limited requests (everything under /v3 and UAA's
// /oauth/token; the root and Log Cache are exempt, as in CF) answer 429 with
// Retry-After: the whole seconds of retryAfter (at least 1).
func (s *Server) Throttle(n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = n
	s.retryAfter = retryAfter
}

// Outage makes the next n requests to Cloud Controller (everything under /v3) fail as
// when CC is down behind the gorouter: 502 with a plain-text body.
func (s *Server) Outage(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = n
}

// Requests is a copy of the request log, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ResetRequests empties the request log.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// CountRequests counts logged requests with this method (empty: any) whose path
// starts with prefix and whose raw query contains queryContains (empty: any).
func (s *Server) CountRequests(method, prefix, queryContains string) int {
	n := 0
	for _, r := range s.Requests() {
		if (method == "" || r.Method == method) && strings.HasPrefix(r.Path, prefix) && strings.Contains(r.Query, queryContains) {
			n++
		}
	}
	return n
}

// Count counts logged requests with this method and exactly this path.
func (s *Server) Count(method, path string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// TokensIssued is how many access tokens UAA issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// SetFeatureFlag sets a feature flag as an admin would.
func (s *Server) SetFeatureFlag(name string, enabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flags[name]
	if f == nil {
		f = &flag{name: name}
		s.flags[name] = f
	}
	f.enabled = enabled
	f.updated = time.Now().UTC()
}

// CreateOrgAndSpace creates an org and a space in it (reusing existing ones by name)
// and returns their guids.
func (s *Server) CreateOrgAndSpace(orgName, spaceName string) (orgGUID, spaceGUID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var o *org
	for _, x := range s.orgs {
		if x.name == orgName {
			o = x
		}
	}
	if o == nil {
		o = &org{meta: s.newMeta(), name: orgName}
		s.orgs[o.guid] = o
	}
	for _, x := range s.spaces {
		if x.name == spaceName && x.org == o.guid {
			return o.guid, x.guid
		}
	}
	sp := &space{meta: s.newMeta(), name: spaceName, org: o.guid}
	s.spaces[sp.guid] = sp
	return o.guid, sp.guid
}

// DeleteApp removes an app and everything of it, as `cf delete` behind our back would.
func (s *Server) DeleteApp(guid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteAppLocked(guid)
}

// ---- plumbing ----

type meta struct {
	guid    string
	created time.Time
	updated time.Time
}

func (s *Server) newMeta() meta {
	now := time.Now().UTC().Truncate(time.Second)
	return meta{guid: newGUID(), created: now, updated: now}
}

func newGUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func (s *Server) link(path string) map[string]any { return map[string]any{"href": s.URL + path} }

// statusRecorder remembers the status for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	rec := &statusRecorder{ResponseWriter: w}
	limited := strings.HasPrefix(r.URL.Path, "/v3/") || r.URL.Path == "/oauth/token"

	s.mu.Lock()
	idx := len(s.requests)
	entry := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Time: now}
	if limited && now.Before(s.notBefore) {
		entry.Early = true
	}
	throttled := false
	var retry int
	if limited && s.throttle > 0 {
		s.throttle--
		throttled = true
		retry = int(math.Ceil(s.retryAfter.Seconds()))
		if retry < 1 {
			retry = 1
		}
		s.notBefore = now.Add(time.Duration(retry) * time.Second)
	}
	down := false
	if !throttled && s.outage > 0 && strings.HasPrefix(r.URL.Path, "/v3/") {
		s.outage--
		down = true
	}
	s.requests = append(s.requests, entry)
	s.mu.Unlock()

	defer func() {
		s.mu.Lock()
		if idx < len(s.requests) {
			s.requests[idx].Status = rec.status
		}
		s.mu.Unlock()
	}()

	if throttled {
		rec.Header().Set("Retry-After", strconv.Itoa(retry))
		rec.Header().Set("X-RateLimit-Limit", "2000")
		rec.Header().Set("X-RateLimit-Remaining", "0")
		rec.Header().Set("X-RateLimit-Reset", strconv.FormatInt(now.Add(time.Duration(retry)*time.Second).Unix(), 10))
		if r.URL.Path == "/oauth/token" {
			writeJSON(rec, http.StatusTooManyRequests, map[string]any{"error": "rate_limited", "error_description": "Rate limit exceeded"})
			return
		}
		cfError(rec, http.StatusTooManyRequests, 10013, "CF-RateLimitExceeded", "Rate Limit Exceeded")
		return
	}
	if down {
		rec.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rec.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(rec, "502 Bad Gateway: Registered endpoint failed to handle the request.\n")
		return
	}
	needsAuth := (strings.HasPrefix(r.URL.Path, "/v3/") || strings.HasPrefix(r.URL.Path, "/api/v1/read")) && r.URL.Path != "/v3"
	if needsAuth && !s.authorized(r) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			writeJSON(rec, http.StatusUnauthorized, map[string]any{"error": "unauthorized"})
			return
		}
		cfError(rec, http.StatusUnauthorized, 1000, "CF-InvalidAuthToken", "Invalid Auth Token")
		return
	}
	s.mux.ServeHTTP(rec, r)
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	typ, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(typ, "bearer") {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[tok]
	return ok && time.Now().Before(exp)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// cfError writes Cloud Controller's v3 error body.
func cfError(w http.ResponseWriter, status, code int, title, detail string) {
	writeJSON(w, status, map[string]any{"errors": []map[string]any{{"code": code, "title": title, "detail": detail}}})
}

func notFound(w http.ResponseWriter, what string) {
	cfError(w, http.StatusNotFound, 10010, "CF-ResourceNotFound", what+" not found")
}

func unprocessable(w http.ResponseWriter, detail string) {
	cfError(w, http.StatusUnprocessableEntity, 10008, "CF-UnprocessableEntity", detail)
}

// decodeStrict reads a JSON body into v, refusing unknown fields and wrong types with
// 422 and malformed JSON with 400, as Cloud Controller's message validation does.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		cfError(w, http.StatusBadRequest, 1001, "CF-MessageParseError", "Request invalid due to parse error: "+err.Error())
		return false
	}
	var raw any
	if err := json.Unmarshal(body, &raw); err != nil {
		cfError(w, http.StatusBadRequest, 1001, "CF-MessageParseError", "Request invalid due to parse error: invalid request body")
		return false
	}
	if _, ok := raw.(map[string]any); !ok {
		cfError(w, http.StatusBadRequest, 1001, "CF-MessageParseError", "Request invalid due to parse error: body must be an object")
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := err.Error()
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			msg = fmt.Sprintf("%s must be a %s", te.Field, jsonTypeName(te.Type.Kind().String()))
		} else if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			msg = "Unknown field(s): " + strings.ReplaceAll(f, `"`, "'")
		}
		unprocessable(w, msg)
		return false
	}
	return true
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "int", "int64", "int32", "float64":
		return "integer"
	case "bool":
		return "boolean"
	case "slice":
		return "array"
	}
	return "object"
}

// listQuery checks a list request's query parameters against the allowed filters and
// returns them with page and per_page.
type listQuery struct {
	v       url.Values
	page    int
	perPage int
}

func parseList(w http.ResponseWriter, r *http.Request, allowed ...string) (listQuery, bool) {
	q := r.URL.Query()
	ok := map[string]bool{"page": true, "per_page": true, "order_by": true, "label_selector": true, "created_ats": true, "updated_ats": true}
	for _, a := range allowed {
		ok[a] = true
	}
	var unknown []string
	for k := range q {
		if !ok[k] {
			unknown = append(unknown, "'"+k+"'")
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		cfError(w, http.StatusBadRequest, 10005, "CF-BadQueryParameter", "The query parameter is invalid: Unknown query parameter(s): "+strings.Join(unknown, ", "))
		return listQuery{}, false
	}
	lq := listQuery{v: q, page: 1, perPage: 50}
	if p := q.Get("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			cfError(w, http.StatusBadRequest, 10005, "CF-BadQueryParameter", "The query parameter is invalid: Page must be greater than 0")
			return listQuery{}, false
		}
		lq.page = n
	}
	if p := q.Get("per_page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 5000 {
			cfError(w, http.StatusBadRequest, 10005, "CF-BadQueryParameter", "The query parameter is invalid: Per page must be between 1 and 5000")
			return listQuery{}, false
		}
		lq.perPage = n
	}
	return lq, true
}

// in tells whether a filter (comma-separated list) admits value; an absent filter admits all.
func (lq listQuery) in(name, value string, fold bool) bool {
	if !lq.v.Has(name) {
		return true
	}
	for _, f := range strings.Split(lq.v.Get(name), ",") {
		if f == value || (fold && strings.EqualFold(f, value)) {
			return true
		}
	}
	return false
}

// page writes a paginated list response of already filtered, ordered resources.
func (s *Server) page(w http.ResponseWriter, r *http.Request, lq listQuery, resources []map[string]any) {
	total := len(resources)
	pages := (total + lq.perPage - 1) / lq.perPage
	if pages == 0 {
		pages = 1
	}
	from := (lq.page - 1) * lq.perPage
	to := from + lq.perPage
	if from > total {
		from = total
	}
	if to > total {
		to = total
	}
	href := func(p int) map[string]any {
		q := url.Values{}
		for k, v := range lq.v {
			q[k] = v
		}
		q.Set("page", strconv.Itoa(p))
		q.Set("per_page", strconv.Itoa(lq.perPage))
		return map[string]any{"href": s.URL + r.URL.Path + "?" + q.Encode()}
	}
	var next, prev any
	if lq.page < pages {
		next = href(lq.page + 1)
	}
	if lq.page > 1 {
		prev = href(lq.page - 1)
	}
	out := resources[from:to]
	if out == nil {
		out = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"pagination": map[string]any{
			"total_results": total, "total_pages": pages,
			"first": href(1), "last": href(pages), "next": next, "previous": prev,
		},
		"resources": out,
	})
}

func sortByCreated[T any](items []T, m func(T) meta) {
	sort.SliceStable(items, func(i, j int) bool {
		a, b := m(items[i]), m(items[j])
		if !a.created.Equal(b.created) {
			return a.created.Before(b.created)
		}
		return a.guid < b.guid
	})
}

func relationship(guid string) map[string]any {
	if guid == "" {
		return map[string]any{"data": nil}
	}
	return map[string]any{"data": map[string]any{"guid": guid}}
}

// toOne is the request shape {"data":{"guid":"…"}}.
type toOne struct {
	Data *struct {
		GUID string `json:"guid"`
	} `json:"data"`
}

func (t toOne) guid() string {
	if t.Data == nil {
		return ""
	}
	return t.Data.GUID
}

type metadataReq struct {
	Labels      map[string]*string `json:"labels,omitempty"`
	Annotations map[string]*string `json:"annotations,omitempty"`
}

func metadataOut(m *metadataReq) map[string]any {
	labels, ann := map[string]string{}, map[string]string{}
	if m != nil {
		for k, v := range m.Labels {
			if v != nil {
				labels[k] = *v
			}
		}
		for k, v := range m.Annotations {
			if v != nil {
				ann[k] = *v
			}
		}
	}
	return map[string]any{"labels": labels, "annotations": ann}
}
