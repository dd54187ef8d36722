// Package diego runs IronWorker tasks as Cloud Foundry tasks on Diego, through the Cloud
// Controller v3 API (go-cfclient) with a UAA client, and reads their output from Log
// Cache.
//
// Each code revision becomes one CF app that is staged but never started: a Docker-image
// code gets a docker-lifecycle app (the diego_docker feature flag must be on), a zip
// code a buildpack app whose uploaded bits are staged into a droplet. App guids are kept
// in an AppCache (in memory in iron-runner: a cold cache re-finds an app by its name,
// which is derived from the code revision) and re-created when deleted behind our back.
//
// Each IronWorker task becomes one CF task on its code's app, named <prefix>-<task id>.
// CF tasks take no environment of their own and a command of at most 4096 characters,
// so the command is a short launcher (see LauncherCommand): it writes the payload and
// config into the task directory, inline when they fit, otherwise fetched from the API
// with a task-scoped credential using curl or wget, and runs the worker exactly as the
// local backend does (PAYLOAD_FILE, CONFIG_FILE, TASK_ID, TASK_DIR and the -payload,
// -config, -id, -d arguments).
//
// Before creating a CF task Start looks it up by name, so a restarted runner (or one
// that took over an expired lease) follows the existing task instead of starting a
// second one. The states of all followed tasks are read with one list call per poll;
// CF tasks have no timeout, so Spec.Timeout and Cancel cancel the CF task. Every CC,
// UAA and Log Cache request has a timeout, 429s hold back every later request to that
// host until Retry-After, and failures of CC are retried, never turned into task
// failures.
//
// A docker image needs a POSIX /bin/sh (CF itself runs tasks with /bin/sh -c) and, for
// payloads or configs too big to inline in the command (about 3 KiB together) or not
// valid UTF-8, curl or wget able to reach the API.
package diego

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	logcache "code.cloudfoundry.org/go-log-cache/v3"
	"github.com/cloudfoundry/go-cfclient/v3/client"
	cfconfig "github.com/cloudfoundry/go-cfclient/v3/config"
	"github.com/cloudfoundry/go-cfclient/v3/resource"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/config"
)

// AppCache remembers the CF app of each code revision. iron-runner uses a
// MemoryAppCache (it has no database; on a miss ensureApp finds the app by name, one CC
// list call per code revision and process); a shared implementation would only save
// that call. Keys are CodeRevisionKey values.
type AppCache interface {
	// Get returns the app guid cached for a code revision; ok is false when none is.
	Get(ctx context.Context, codeRevision string) (appGUID string, ok bool, err error)
	// Put records the app guid of a code revision, replacing any earlier one.
	Put(ctx context.Context, codeRevision, appGUID string) error
	// Delete forgets a code revision's app (it was deleted behind our back).
	Delete(ctx context.Context, codeRevision string) error
}

// CodeRevisionKey is the AppCache key of a spec's code revision in a space.
func CodeRevisionKey(spec backend.Spec, spaceGUID string) string {
	return fmt.Sprintf("%s/%d@%s", spec.CodeID, spec.CodeRev, spaceGUID)
}

// MemoryAppCache is an AppCache in memory.
type MemoryAppCache struct {
	mu sync.Mutex
	m  map[string]string
}

func NewMemoryAppCache() *MemoryAppCache { return &MemoryAppCache{m: map[string]string{}} }

func (c *MemoryAppCache) Get(_ context.Context, k string) (string, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok, nil
}

func (c *MemoryAppCache) Put(_ context.Context, k, v string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[k] = v
	return nil
}

func (c *MemoryAppCache) Delete(_ context.Context, k string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
	return nil
}

// Options are the parts of a diego backend that are not config.
type Options struct {
	// AppCache defaults to a MemoryAppCache.
	AppCache AppCache
	Logger   *slog.Logger
	// LogGrace is how long after a task ended its last log lines are waited for in Log
	// Cache before the final read (loggregator delivers with a small delay). Default 2s.
	LogGrace time.Duration
	// Transport is the base HTTP transport (tests); default a clone of
	// http.DefaultTransport honouring SkipSSLValidation.
	Transport http.RoundTripper
}

// Backend is the diego backend.
type Backend struct {
	cfg            config.Diego
	opts           Options
	log            *slog.Logger
	cf             *client.Client
	lc             *logcache.Client
	lcInit         sync.Mutex  // see lcRead
	lcReady        atomic.Bool // see lcRead
	requestTimeout time.Duration
	poll           time.Duration
	orgGUID        string

	spaceMu sync.Mutex
	spaces  map[string]string // name → guid

	appMu    sync.Mutex
	appLocks map[string]*sync.Mutex

	mu       sync.Mutex
	follows  map[string]*follow // by CF task guid
	wake     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	loopDone chan struct{}
}

var _ backend.Backend = (*Backend)(nil)

// ErrDockerDisabled: the foundation refuses docker-lifecycle apps.
var ErrDockerDisabled = errors.New("the Cloud Foundry feature flag diego_docker is disabled, so Docker image codes cannot run on this foundation (an operator can enable it with `cf enable-feature-flag diego_docker`)")

// New connects to Cloud Controller (discovering UAA and Log Cache from its root),
// resolves the configured org and space, and starts the state poller. cfg must have
// been defaulted and validated. Close stops the poller.
func New(ctx context.Context, cfg config.Diego, opts Options) (*Backend, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.AppCache == nil {
		opts.AppCache = NewMemoryAppCache()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LogGrace <= 0 {
		opts.LogGrace = 2 * time.Second
	}
	base := opts.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		if cfg.SkipSSLValidation {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // lab foundations, by explicit config
		}
		base = t
	}
	rt := cfg.RequestTimeout.Std()
	cfOpts := []cfconfig.Option{
		cfconfig.ClientCredentials(cfg.ClientID, cfg.ClientSecret),
		cfconfig.HttpClient(&http.Client{Transport: newGate(base)}),
		cfconfig.RequestTimeout(rt),
		cfconfig.UserAgent("iron-runner diego backend"),
	}
	if cfg.SkipSSLValidation {
		cfOpts = append(cfOpts, cfconfig.SkipTLSValidation())
	}
	// config.New reads the API root (UAA discovery) without a context; its HTTP client
	// has the request timeout.
	cc, err := cfconfig.New(strings.TrimRight(cfg.APIURL, "/"), cfOpts...)
	if err != nil {
		return nil, fmt.Errorf("diego backend: Cloud Controller at %s: %w", cfg.APIURL, err)
	}
	cf, err := client.New(cc)
	if err != nil {
		return nil, fmt.Errorf("diego backend: %w", err)
	}
	b := &Backend{
		cfg: cfg, opts: opts, log: opts.Logger, cf: cf, requestTimeout: rt, poll: cfg.PollInterval.Std(),
		spaces: map[string]string{}, appLocks: map[string]*sync.Mutex{}, follows: map[string]*follow{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), loopDone: make(chan struct{}),
	}
	var root *resource.Root
	if err := b.call(ctx, func(ctx context.Context) (err error) { root, err = cf.Root.Get(ctx); return err }); err != nil {
		return nil, fmt.Errorf("diego backend: read the Cloud Controller root: %w", err)
	}
	lcURL := root.Links.LogCache.Href
	if lcURL == "" {
		return nil, fmt.Errorf("diego backend: Cloud Controller at %s names no Log Cache", cfg.APIURL)
	}
	b.lc = logcache.NewClient(lcURL, logcache.WithHTTPClient(cf.HTTPAuthClient()))
	var org *resource.Organization
	err = b.call(ctx, func(ctx context.Context) (err error) {
		opts := client.NewOrganizationListOptions()
		opts.Names.EqualTo(cfg.Org)
		org, err = cf.Organizations.Single(ctx, opts)
		return err
	})
	if err != nil {
		if errors.Is(err, client.ErrExactlyOneResultNotReturned) {
			return nil, fmt.Errorf("diego backend: org %q not found (or not visible to UAA client %q)", cfg.Org, cfg.ClientID)
		}
		return nil, fmt.Errorf("diego backend: look up org %q: %w", cfg.Org, err)
	}
	b.orgGUID = org.GUID
	if _, err := b.spaceGUID(ctx, cfg.Space); err != nil {
		return nil, err
	}
	go b.pollLoop()
	return b, nil
}

// Close stops the poller. Running CF tasks go on; another backend can adopt them.
func (b *Backend) Close() {
	b.stopOnce.Do(func() { close(b.stop) })
	<-b.loopDone
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "diego" }

// spaceGUID finds a space of the org by name, creating it when missing.
func (b *Backend) spaceGUID(ctx context.Context, name string) (string, error) {
	b.spaceMu.Lock()
	defer b.spaceMu.Unlock()
	if g, ok := b.spaces[name]; ok {
		return g, nil
	}
	var guid string
	err := b.call(ctx, func(ctx context.Context) error {
		opts := client.NewSpaceListOptions()
		opts.Names.EqualTo(name)
		opts.OrganizationGUIDs.EqualTo(b.orgGUID)
		list, err := b.cf.Spaces.ListAll(ctx, opts)
		if err != nil {
			return err
		}
		if len(list) > 0 {
			guid = list[0].GUID
			return nil
		}
		sp, err := b.cf.Spaces.Create(ctx, resource.NewSpaceCreate(name, b.orgGUID))
		if err != nil && isUniqueness(err) { // another runner made it meanwhile
			sp, err = b.cf.Spaces.First(ctx, opts)
		}
		if err != nil {
			return err
		}
		guid = sp.GUID
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("diego backend: space %q in org %q: %w", name, b.cfg.Org, err)
	}
	b.spaces[name] = guid
	return guid, nil
}

// taskName is the CF task's name for an IronWorker task.
func (b *Backend) taskName(taskID string) string { return b.cfg.AppNamePrefix + "-" + taskID }

var taskIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// Ref layout: diego:<task guid>/<app guid>/<task name>.
func makeRef(taskGUID, appGUID, name string) backend.Ref {
	return backend.Ref("diego:" + taskGUID + "/" + appGUID + "/" + name)
}

func parseRef(ref backend.Ref) (taskGUID, appGUID, name string, err error) {
	rest, ok := strings.CutPrefix(string(ref), "diego:")
	parts := strings.SplitN(rest, "/", 3)
	if !ok || len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", fmt.Errorf("diego backend: %q is not a diego task reference", ref)
	}
	return parts[0], parts[1], parts[2], nil
}

// Start implements backend.Backend.
func (b *Backend) Start(ctx context.Context, spec backend.Spec, sink backend.LogSink) (backend.Ref, error) {
	if !taskIDPattern.MatchString(spec.TaskID) {
		return "", fmt.Errorf("diego backend: unusable task id %q", spec.TaskID)
	}
	docker := spec.Archive == nil
	if docker && spec.Image == "" {
		return "", fmt.Errorf("%w: code %q rev %d has neither a zip package nor an image", backend.ErrBadCode, spec.CodeName, spec.CodeRev)
	}
	script, err := userScript(spec)
	if err != nil {
		return "", err
	}
	spaceName := spec.Space
	if spaceName == "" {
		spaceName = b.cfg.Space
	}
	spaceGUID, err := b.spaceGUID(ctx, spaceName)
	if err != nil {
		return "", err
	}
	name := b.taskName(spec.TaskID)

	// Adoption: the task may already exist (a previous runner started it).
	if spec.FirstLease {
		// Nobody can have started it.
	} else if t, err := b.findTask(ctx, name, spaceGUID); err != nil {
		return "", err
	} else if t != nil {
		b.log.Info("adopting existing CF task", "task_id", spec.TaskID, "cf_task", t.GUID, "state", t.State)
		f := b.followTask(t, sink, spec.Timeout)
		return f.ref, nil
	}

	command, fetch, err := LauncherCommand(Launch{
		TaskID: spec.TaskID, Docker: docker, UserScript: script, Payload: spec.Payload, Config: spec.Config,
		InputURL: spec.InputURL, InputToken: spec.InputToken, Insecure: b.cfg.LauncherSkipSSLValidation,
	})
	if err != nil {
		if errors.Is(err, ErrCommandTooLong) && spec.InputURL != "" {
			return "", fmt.Errorf("%w: %v", backend.ErrBadCode, err)
		}
		return "", fmt.Errorf("diego backend: %w", err)
	}
	b.log.Debug("launching CF task", "task_id", spec.TaskID, "command_bytes", len(command), "fetches_input", fetch)

	for attempt := 0; ; attempt++ {
		appGUID, err := b.ensureApp(ctx, spec, spaceGUID)
		if err != nil {
			return "", err
		}
		t, err := b.createTask(ctx, spec, appGUID, spaceGUID, name, command)
		if err != nil && resource.IsResourceNotFoundError(err) && attempt == 0 {
			// The app was deleted behind our back: forget it and make a new one.
			b.log.Warn("CF app of code revision vanished; re-creating it", "code_id", spec.CodeID, "rev", spec.CodeRev, "app", appGUID)
			if derr := b.opts.AppCache.Delete(ctx, CodeRevisionKey(spec, spaceGUID)); derr != nil {
				return "", fmt.Errorf("diego backend: app cache: %w", derr)
			}
			continue
		}
		if err != nil {
			if dockerDisabled(err) {
				return "", fmt.Errorf("%w: %w", backend.ErrUnsupportedCode, ErrDockerDisabled)
			}
			return "", fmt.Errorf("diego backend: create CF task for task %s: %w", spec.TaskID, err)
		}
		f := b.followTask(t, sink, spec.Timeout)
		return f.ref, nil
	}
}

// findTask looks a CF task up by name in a space; nil when there is none.
func (b *Backend) findTask(ctx context.Context, name, spaceGUID string) (*resource.Task, error) {
	var found *resource.Task
	err := b.call(ctx, func(ctx context.Context) error {
		opts := client.NewTaskListOptions()
		opts.Names.EqualTo(name)
		opts.SpaceGUIDs.EqualTo(spaceGUID)
		list, _, err := b.cf.Tasks.List(ctx, opts)
		if err != nil {
			return err
		}
		found = nil
		for _, t := range list {
			if strings.EqualFold(t.Name, name) {
				found = t
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("diego backend: look up CF task %s: %w", name, err)
	}
	return found, nil
}

// createTask creates the CF task. A create whose answer was lost (timeout, connection
// reset) is not blindly repeated: the task is looked up by name first.
func (b *Backend) createTask(ctx context.Context, spec backend.Spec, appGUID, spaceGUID, name, command string) (*resource.Task, error) {
	req := resource.NewTaskCreateWithCommand(command).WithName(name)
	mem, disk := spec.MemoryMB, spec.DiskMB
	if mem <= 0 {
		mem = b.cfg.DefaultMemoryMB
	}
	if disk <= 0 {
		disk = b.cfg.DefaultDiskMB
	}
	if mem > 0 {
		req.WithMemoryInMB(mem)
	}
	if disk > 0 {
		req.WithDiskInMB(disk)
	}
	md := resource.NewMetadata().WithLabel("ironworker.io", "task-id", labelValue(spec.TaskID))
	if spec.ProjectID != "" {
		md.WithLabel("ironworker.io", "project-id", labelValue(spec.ProjectID))
	}
	if spec.CodeID != "" {
		md.WithLabel("ironworker.io", "code-id", labelValue(spec.CodeID))
	}
	if spec.ScheduleID != "" {
		md.WithLabel("ironworker.io", "schedule-id", labelValue(spec.ScheduleID))
	}
	req.Metadata = md
	var t *resource.Task
	sent := false
	err := b.call(ctx, func(ctx context.Context) error {
		if sent {
			existing, err := b.findTask(ctx, name, spaceGUID)
			if err != nil {
				return err
			}
			if existing != nil {
				t = existing
				return nil
			}
		}
		sent = true
		var err error
		t, err = b.cf.Tasks.Create(ctx, appGUID, req)
		if err != nil && resource.IsRateLimitExceededError(err) {
			sent = false // refused before anything was created
		}
		return err
	})
	return t, err
}

var labelInvalid = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

func labelValue(s string) string {
	s = labelInvalid.ReplaceAllString(s, "_")
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.Trim(s, "_.-")
}
