// Package client holds Go clients of iron-api. runner.go is the runner protocol
// (/internal/v1) that iron-runner speaks: lease, heartbeat, log, progress, complete and
// the code archive download; report.go its batched reports (many heartbeats, completions
// and progress reports in one request) and the Reporter that coalesces concurrent calls
// into them.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrLeaseLost matches every 409: the lease is no longer the task's (another runner
	// took it, or the reaper gave it back), or the task has already finished. Stop
	// reporting on the task.
	ErrLeaseLost = errors.New("lease lost")
	// ErrTaskFinished matches a 409 that says the task already ended (HTTPError.Status
	// tells how); it also matches ErrLeaseLost.
	ErrTaskFinished = errors.New("task already finished")
	// ErrNotFound matches a 404 (no such task, or no archive).
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized matches a 401: the runner credential was refused.
	ErrUnauthorized = errors.New("runner credential refused")
)

// HTTPError is a response other than 2xx.
type HTTPError struct {
	Method, Path string
	Code         int
	Msg          string
	// Status is the task's final status, on a 409 for a finished task.
	Status string
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("%s %s: HTTP %d", e.Method, e.Path, e.Code)
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrLeaseLost:
		return e.Code == http.StatusConflict
	case ErrTaskFinished:
		return e.Code == http.StatusConflict && e.Status != ""
	case ErrNotFound:
		return e.Code == http.StatusNotFound
	case ErrUnauthorized:
		return e.Code == http.StatusUnauthorized
	}
	return false
}

// RunnerOptions tune a RunnerClient; zero values take the defaults.
type RunnerOptions struct {
	// HTTPClient sends the requests (default: a client with its own transport that
	// keeps up to 64 idle connections).
	HTTPClient *http.Client
	// Timeout bounds each attempt of a call (default 30s); a lease attempt gets its wait
	// on top, an archive download ArchiveTimeout instead.
	Timeout time.Duration
	// ArchiveTimeout bounds a whole archive download, body included (default 10m).
	ArchiveTimeout time.Duration
	// MaxAttempts bounds the attempts of a retried call (default 5).
	MaxAttempts int
	// Backoff is the first pause between attempts (default 200ms), doubled each time up
	// to MaxBackoff (default 5s).
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// RunnerClient speaks the runner protocol. It is safe for concurrent use.
type RunnerClient struct {
	base         *url.URL
	name, secret string
	http         *http.Client
	opts         RunnerOptions
}

// NewRunnerClient makes a client of the API at baseURL (e.g. https://iron.example.com)
// that authenticates with HTTP basic name:secret (name empty: Bearer secret).
func NewRunnerClient(baseURL, name, secret string, opts RunnerOptions) (*RunnerClient, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("runner client: invalid API URL %q", baseURL)
	}
	if secret == "" {
		return nil, errors.New("runner client: a secret is required")
	}
	if opts.HTTPClient == nil {
		// Keep a connection per concurrent call (the default keeps 2 idle per host, so
		// a runner with many tasks would connect anew for most calls).
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		opts.HTTPClient = &http.Client{Transport: t}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.ArchiveTimeout <= 0 {
		opts.ArchiveTimeout = 10 * time.Minute
	}
	defaultRetries(&opts.MaxAttempts, &opts.Backoff, &opts.MaxBackoff)
	return &RunnerClient{base: u, name: name, secret: secret, http: opts.HTTPClient, opts: opts}, nil
}

// LeaseRequest asks for work.
type LeaseRequest struct {
	// RunnerID names this runner in the task rows (default: the credential name).
	RunnerID string
	// MaxTasks is how many tasks to take at most (default 1, at most 100).
	MaxTasks int
	// Wait is how long to long-poll for a first task (capped by the API's lease_wait);
	// 0 asks without waiting.
	Wait time.Duration
}

// Lease is one leased task: report on it with LeaseID until Complete. Heartbeat well
// before ExpiresAt (e.g. every third of the lease's duration): once it has passed the
// reaper may give the task to another runner.
type Lease struct {
	LeaseID   string    `json:"lease_id"`
	ExpiresAt time.Time `json:"expires_at"`
	// Attempt counts the leases of this task, this one included.
	Attempt int `json:"attempt"`
	// Adopt: a previous holder started the task under BackendRef and it may still run
	// there; adopt it (backend Status/Attach) instead of starting it again.
	Adopt      bool   `json:"adopt"`
	BackendRef string `json:"backend_ref,omitempty"`
	// Cancel: the user cancelled the task while no runner held it, and it may still
	// run under BackendRef. Adopt it only to stop it (backend Cancel), then Complete
	// with StatusCancelled.
	Cancel bool       `json:"cancel"`
	Task   LeasedTask `json:"task"`
	// LeaseDuration is how long the API extends a lease per heartbeat (the lease
	// response's lease_duration_seconds); 0 when the API did not say.
	LeaseDuration time.Duration `json:"-"`
}

// LeasedTask is what a runner needs to run a task.
type LeasedTask struct {
	ID             string `json:"id"`
	ProjectID      string `json:"project_id"`
	CodeID         string `json:"code_id"`
	CodeName       string `json:"code_name"`
	CodeRev        int    `json:"code_rev"`
	CodeRevisionID string `json:"code_revision_id"`
	// Status is preparing, running for an adopted task that had started, or
	// cancelled for a Cancel lease.
	Status   string `json:"status"`
	Image    string `json:"image,omitempty"`
	Command  string `json:"command,omitempty"`
	Runtime  string `json:"runtime,omitempty"`
	Stack    string `json:"stack,omitempty"`
	FileName string `json:"file_name,omitempty"`
	// HasArchive tells whether the code has a zip (OpenArchive).
	HasArchive     bool              `json:"has_archive"`
	ArchiveSize    int64             `json:"archive_size,omitempty"`
	ArchiveMD5     string            `json:"archive_md5,omitempty"`
	ArchivePath    string            `json:"archive_path,omitempty"`
	EnvVars        map[string]string `json:"env_vars"`
	Config         *string           `json:"config"`
	Payload        string            `json:"payload"`
	Timeout        int               `json:"timeout"` // seconds
	Priority       int               `json:"priority"`
	Cluster        string            `json:"cluster"`
	Label          string            `json:"label"`
	ScheduleID     string            `json:"schedule_id,omitempty"`
	RetryCount     int               `json:"retry_count"`
	Retries        int               `json:"retries"`
	RetriesDelay   int               `json:"retries_delay"`
	OriginalTaskID string            `json:"original_task_id,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
	StartTime      *time.Time        `json:"start_time,omitempty"`
}

// Lease long-polls for up to MaxTasks tasks; an empty result after the wait is normal.
// It is not retried: a lost answer leaves tasks leased that the reaper gives back when
// the lease expires, so the caller should just ask again.
func (c *RunnerClient) Lease(ctx context.Context, req LeaseRequest) ([]Lease, error) {
	body := map[string]any{"wait_seconds": req.Wait.Seconds()}
	if req.RunnerID != "" {
		body["runner_id"] = req.RunnerID
	}
	if req.MaxTasks > 0 {
		body["max_tasks"] = req.MaxTasks
	}
	var out struct {
		Leases        []Lease  `json:"leases"`
		LeaseDuration *float64 `json:"lease_duration_seconds"`
	}
	err := c.call(ctx, call{method: http.MethodPost, path: "/internal/v1/lease", body: body, out: &out,
		timeout: c.opts.Timeout + req.Wait, retry: retryNever})
	if err != nil {
		return nil, err
	}
	if out.LeaseDuration != nil && *out.LeaseDuration > 0 {
		d := time.Duration(*out.LeaseDuration * float64(time.Second))
		for i := range out.Leases {
			out.Leases[i].LeaseDuration = d
		}
	}
	return out.Leases, nil
}

// Runner-reported task states for Heartbeat.
const (
	StatePreparing = "preparing"
	StateRunning   = "running"
)

// HeartbeatRequest extends a lease and reports on the task.
type HeartbeatRequest struct {
	LeaseID string `json:"lease_id"`
	// State is StateRunning once the task runs (status running, start_time set), or
	// StatePreparing; empty means running when BackendRef is set.
	State string `json:"state,omitempty"`
	// BackendRef is the backend's reference of the started task; Adoptable (default
	// true with a ref) says whether another runner can adopt it if this lease expires.
	BackendRef string `json:"backend_ref,omitempty"`
	Adoptable  *bool  `json:"adoptable,omitempty"`
}

// HeartbeatResponse tells the holder what to do.
type HeartbeatResponse struct {
	// Cancel: the user cancelled the task; stop it, then Complete (it stays cancelled).
	Cancel    bool      `json:"cancel"`
	Status    string    `json:"status"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Heartbeat extends the lease (retried on connection errors and 5xx). ErrLeaseLost
// means the task is no longer this runner's.
func (c *RunnerClient) Heartbeat(ctx context.Context, taskID string, req HeartbeatRequest) (HeartbeatResponse, error) {
	var out HeartbeatResponse
	err := c.call(ctx, call{method: http.MethodPost, path: taskPath(taskID, "heartbeat"), body: req, out: &out, retry: retryAlways})
	return out, err
}

// Log streams, for AppendLog.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// AppendLog adds output to the task's log (readable through the API at once). Only a
// 503 is retried: other failures may have stored the chunk already.
func (c *RunnerClient) AppendLog(ctx context.Context, taskID, leaseID, stream string, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	q := url.Values{"lease_id": {leaseID}, "stream": {stream}}
	return c.call(ctx, call{method: http.MethodPost, path: taskPath(taskID, "log"), query: q, raw: data, retry: retryUnavailable})
}

// Progress sets percent and/or msg (nil leaves one as it is); cancel reports that the
// user cancelled the task.
func (c *RunnerClient) Progress(ctx context.Context, taskID, leaseID string, percent *int, msg *string) (cancel bool, err error) {
	body := map[string]any{"lease_id": leaseID}
	if percent != nil {
		body["percent"] = *percent
	}
	if msg != nil {
		body["msg"] = *msg
	}
	var out struct {
		Cancel bool `json:"cancel"`
	}
	err = c.call(ctx, call{method: http.MethodPost, path: taskPath(taskID, "progress"), body: body, out: &out, retry: retryAlways})
	return out.Cancel, err
}

// Final statuses for Complete.
const (
	StatusComplete  = "complete"
	StatusError     = "error"
	StatusTimeout   = "timeout"
	StatusKilled    = "killed"
	StatusCancelled = "cancelled"
)

// CompleteRequest reports how a task ended.
type CompleteRequest struct {
	LeaseID  string `json:"lease_id"`
	Status   string `json:"status"`
	ExitCode *int   `json:"exit_code,omitempty"`
	// Msg becomes the task's msg (for error: the last line of stderr).
	Msg      string        `json:"msg,omitempty"`
	Duration time.Duration `json:"-"`
	// NoRetry asks the API not to apply the code's retries policy: retrying cannot help
	// (the backend refused the code). An API that does not know the flag ignores it.
	NoRetry bool `json:"no_retry,omitempty"`
}

// CompleteResponse is the task's recorded end: Status differs from the request's when
// the user cancelled the task first. RetryTaskID is the retry queued by the code's
// retries policy, if any.
type CompleteResponse struct {
	Status      string `json:"status"`
	RetryTaskID string `json:"retry_task_id"`
}

// MarshalJSON sends Duration as duration_ms.
func (r CompleteRequest) MarshalJSON() ([]byte, error) {
	type plain CompleteRequest
	return json.Marshal(struct {
		plain
		DurationMS int64 `json:"duration_ms,omitempty"`
	}{plain(r), r.Duration.Milliseconds()})
}

// Complete ends the task. It is idempotent and retried on connection errors and 5xx.
// ErrTaskFinished means it had already ended otherwise (e.g. killed by the reaper).
func (c *RunnerClient) Complete(ctx context.Context, taskID string, req CompleteRequest) (CompleteResponse, error) {
	var out CompleteResponse
	err := c.call(ctx, call{method: http.MethodPost, path: taskPath(taskID, "complete"), body: req, out: &out, retry: retryAlways})
	return out, err
}

// Release hands the task back to the queue at once (a draining runner): a task not
// started yet is simply queued again, one running under an adoptable BackendRef is
// queued for adoption by the next runner. ErrLeaseLost (409) also when the task runs
// without an adoptable ref or was cancelled: complete it instead.
func (c *RunnerClient) Release(ctx context.Context, taskID, leaseID string) error {
	return c.call(ctx, call{method: http.MethodPost, path: taskPath(taskID, "release"), body: map[string]string{"lease_id": leaseID},
		retry: retryAlways})
}

// InputToken is a task-scoped credential for the task's own container (diego): GET
// URL+"/payload" and URL+"/config" with `Authorization: Bearer <Token>`.
type InputToken struct {
	URL   string `json:"url"`
	Token string `json:"token"`
	// BrokerInstance: the task's project was made by the service broker.
	BrokerInstance bool `json:"broker_instance"`
}

// InputToken asks for a new input credential for a held task (retried on connection
// errors and 5xx; a token nobody received is harmless). ErrLeaseLost when the task is no
// longer this lease's (or was cancelled).
func (c *RunnerClient) InputToken(ctx context.Context, taskID, leaseID string) (InputToken, error) {
	var out InputToken
	err := c.call(ctx, call{method: http.MethodPost, path: taskPath(taskID, "input-token"), body: map[string]string{"lease_id": leaseID},
		out: &out, retry: retryAlways})
	if err == nil && (out.URL == "" || out.Token == "") {
		err = fmt.Errorf("POST %s: the API answered no url or token", taskPath(taskID, "input-token"))
	}
	return out, err
}

// SetLogCursor records how far the backend's own log of the task (Log Cache) has been
// appended to the task log (call it once those lines were sent). Retried on connection
// errors and 5xx. ErrLeaseLost when the task is no longer this lease's.
func (c *RunnerClient) SetLogCursor(ctx context.Context, taskID, leaseID, cursor string) error {
	return c.call(ctx, call{method: http.MethodPost, path: taskPath(taskID, "log-cursor"),
		body: map[string]string{"lease_id": leaseID, "cursor": cursor}, retry: retryAlways})
}

// LogCursor reads the last cursor recorded with SetLogCursor for a task this lease now
// holds ("" when none).
func (c *RunnerClient) LogCursor(ctx context.Context, taskID, leaseID string) (string, error) {
	var out struct {
		Cursor string `json:"cursor"`
	}
	err := c.call(ctx, call{method: http.MethodGet, path: taskPath(taskID, "log-cursor"), query: url.Values{"lease_id": {leaseID}},
		out: &out, retry: retryAlways})
	return out.Cursor, err
}

// Archive is an open code archive download.
type Archive struct {
	io.ReadCloser
	Size int64  // -1 when unknown
	MD5  string // hex, when the API knows it
}

// OpenArchive starts downloading the zip of the task's code revision; the caller reads
// and closes it. ArchiveTimeout bounds the whole download. Retried until the response
// starts. ErrNotFound: the code has no archive.
func (c *RunnerClient) OpenArchive(ctx context.Context, taskID, leaseID string) (*Archive, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ArchiveTimeout)
	var resp *http.Response
	err := c.call(ctx, call{method: http.MethodGet, path: taskPath(taskID, "archive"), query: url.Values{"lease_id": {leaseID}},
		retry: retryAlways, timeout: -1, keep: &resp})
	if err != nil {
		cancel()
		return nil, err
	}
	return &Archive{ReadCloser: &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}, Size: resp.ContentLength,
		MD5: resp.Header.Get("X-Archive-MD5")}, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func taskPath(taskID, action string) string {
	return "/internal/v1/tasks/" + url.PathEscape(taskID) + "/" + action
}

type retryPolicy int

const (
	retryNever       retryPolicy = iota
	retryUnavailable             // a 503 only: the server did nothing
	retryAlways                  // idempotent: connection errors, 502, 503, 504
)

type call struct {
	method, path string
	query        url.Values
	body         any    // JSON-encoded
	raw          []byte // sent as is (application/octet-stream)
	out          any
	retry        retryPolicy
	// timeout per attempt: 0 = the client's Timeout, -1 = none (ctx only).
	timeout time.Duration
	// keep receives the open response of a 2xx instead of decoding it into out.
	keep **http.Response
}

func (c *RunnerClient) call(ctx context.Context, cl call) error {
	var payload []byte
	contentType := ""
	switch {
	case cl.raw != nil:
		payload, contentType = cl.raw, "application/octet-stream"
	case cl.body != nil:
		var err error
		if payload, err = json.Marshal(cl.body); err != nil {
			return fmt.Errorf("%s %s: encode body: %w", cl.method, cl.path, err)
		}
		contentType = "application/json"
	}
	u := *c.base
	u.Path += cl.path
	u.RawQuery = cl.query.Encode()
	backoff := c.opts.Backoff
	for attempt := 1; ; attempt++ {
		retryable, err := c.attempt(ctx, cl, u.String(), payload, contentType)
		if err == nil || !retryable || attempt >= c.opts.MaxAttempts || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// attempt sends one request; retryable tells whether the failure is worth another try
// under cl.retry.
func (c *RunnerClient) attempt(ctx context.Context, cl call, target string, payload []byte, contentType string) (retryable bool, err error) {
	timeout := cl.timeout
	if timeout == 0 {
		timeout = c.opts.Timeout
	}
	actx, cancel := ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		actx, cancel = context.WithTimeout(ctx, timeout)
	}
	keepOpen := false
	defer func() {
		if !keepOpen {
			cancel()
		}
	}()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, cl.method, target, rd)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", cl.method, cl.path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.name != "" {
		req.SetBasicAuth(c.name, c.secret)
	} else {
		req.Header.Set("Authorization", "Bearer "+c.secret)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// A connection error: retry when the call is idempotent, or when the request
		// provably never left (dial failure).
		var opErr *net.OpError
		dialFailed := errors.As(err, &opErr) && opErr.Op == "dial"
		retry := ctx.Err() == nil && (cl.retry == retryAlways || (cl.retry == retryUnavailable && dialFailed))
		return retry, fmt.Errorf("%s %s: %w", cl.method, cl.path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if cl.keep != nil {
			keepOpen = true
			*cl.keep = resp
			return false, nil
		}
		defer resp.Body.Close()
		if cl.out == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			return false, nil
		}
		if err := json.NewDecoder(resp.Body).Decode(cl.out); err != nil {
			return cl.retry == retryAlways, fmt.Errorf("%s %s: decode response: %w", cl.method, cl.path, err)
		}
		return false, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	se := &HTTPError{Method: cl.method, Path: cl.path, Code: resp.StatusCode}
	var body struct {
		Msg    string `json:"msg"`
		Status string `json:"status"`
	}
	if json.Unmarshal(raw, &body) == nil {
		se.Msg, se.Status = body.Msg, body.Status
	} else {
		se.Msg = strings.TrimSpace(string(raw))
	}
	switch resp.StatusCode {
	case http.StatusServiceUnavailable:
		return cl.retry != retryNever, se
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return cl.retry == retryAlways, se
	}
	return false, se
}

// String shows the lease for logs (never the payload or config).
func (l Lease) String() string {
	return "lease " + l.LeaseID + " of task " + l.Task.ID + " (attempt " + strconv.Itoa(l.Attempt) + ")"
}

// defaultRetries fills in the retry defaults that are not set: 5 attempts, backoff from
// 200ms up to 5s.
func defaultRetries(attempts *int, backoff, maxBackoff *time.Duration) {
	if *attempts <= 0 {
		*attempts = 5
	}
	if *backoff <= 0 {
		*backoff = 200 * time.Millisecond
	}
	if *maxBackoff <= 0 {
		*maxBackoff = 5 * time.Second
	}
}
