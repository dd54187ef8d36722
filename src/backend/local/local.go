// Package local runs tasks as processes on the runner's machine, each in a fresh working
// directory, the way a hosted IronWorker ran a zip code package: the payload, config,
// task id and directory are given as files, environment variables and the legacy
// -payload/-config/-id/-d arguments.
//
// A task is its main process and everything it spawns. When the main process exits the
// rest is killed, as a container would end with its main process. Tasks die with the
// runner (the main process gets SIGKILL when the runner does), so after a runner restart
// Status answers Gone and the task ends `killed`; nothing is adopted.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ironcf/ironworker-release/src/backend"
)

// Config is the local backend's part of the runner config.
type Config struct {
	// WorkRoot holds one directory per running task. Required.
	WorkRoot string
	// MaxLogBytes bounds the output kept per task (stdout and stderr together); the rest
	// is dropped after a "[log truncated after N bytes]" line. Default 1 MiB.
	MaxLogBytes int64
	// DefaultMemoryMB applies when a task asks for no limit; 0 means unlimited.
	DefaultMemoryMB int
	// MemoryLimiter: auto (cgroup v2 if usable, else prlimit, else none), cgroup2,
	// prlimit or none. Default auto.
	MemoryLimiter string
	// CgroupParent is a delegated cgroup v2 directory for task cgroups; empty means the
	// runner's own cgroup if it delegates the memory controller.
	CgroupParent string
	// KeepDirs leaves task directories in place after the task, for debugging.
	KeepDirs bool
	// KillGrace is how long a cancelled task gets between SIGTERM and SIGKILL. Default 10s.
	KillGrace time.Duration
	// MaxUnpackedBytes and MaxFiles bound what one code package may unpack to.
	// Defaults 1 GiB and 100000.
	MaxUnpackedBytes int64
	MaxFiles         int
	// Path is the PATH workers get. Default the usual system directories.
	Path string
}

const (
	defaultMaxLogBytes = 1 << 20
	defaultKillGrace   = 10 * time.Second
	defaultMaxUnpacked = 1 << 30
	defaultMaxFiles    = 100000
	defaultPath        = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// drainTimeout is how long output is still read after the task ended, in case
	// something that escaped the kill keeps a pipe open.
	drainTimeout = 2 * time.Second

	payloadFile = "__payload__"
	configFile  = "__config__"
	legacyEntry = "__runner__.sh"
)

// Backend is the local backend.
type Backend struct {
	cfg  Config
	mem  memLimiter
	boot string

	mu    sync.Mutex
	tasks map[backend.Ref]*task
}

var _ backend.Backend = (*Backend)(nil)

// New checks the config, creates the work root and picks the memory limiter.
func New(cfg Config) (*Backend, error) {
	if cfg.WorkRoot == "" {
		return nil, errors.New("local backend: work root not set")
	}
	root, err := filepath.Abs(cfg.WorkRoot)
	if err != nil {
		return nil, err
	}
	cfg.WorkRoot = filepath.Clean(root)
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = defaultMaxLogBytes
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = defaultKillGrace
	}
	if cfg.MaxUnpackedBytes <= 0 {
		cfg.MaxUnpackedBytes = defaultMaxUnpacked
	}
	if cfg.MaxFiles <= 0 {
		cfg.MaxFiles = defaultMaxFiles
	}
	if cfg.Path == "" {
		cfg.Path = defaultPath
	}
	if cfg.DefaultMemoryMB < 0 {
		return nil, errors.New("local backend: default memory limit must not be negative")
	}
	if err := os.MkdirAll(cfg.WorkRoot, 0o700); err != nil {
		return nil, fmt.Errorf("local backend: work root: %w", err)
	}
	mem, err := detectLimiter(cfg.MemoryLimiter, cfg.CgroupParent)
	if err != nil {
		return nil, fmt.Errorf("local backend: %w", err)
	}
	return &Backend{cfg: cfg, mem: mem, boot: bootID(), tasks: map[backend.Ref]*task{}}, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "local" }

// Limiter says how memory limits are enforced here, and why, for the runner's start-up log.
func (b *Backend) Limiter() string { return b.mem.String() }

// LimiterKind is cgroup2, prlimit or none.
func (b *Backend) LimiterKind() string { return b.mem.kind }

type task struct {
	ref     backend.Ref
	pr      procRef
	spec    backend.Spec
	memMB   int
	limited bool // a memory limit was applied
	cmd     *exec.Cmd
	log     *taskLog
	cg      *taskCgroup
	done    chan struct{}
	grace   time.Duration

	mu        sync.Mutex
	exited    bool // main process ended (not yet reaped while this is being set)
	cancelled bool
	timedOut  bool
	stopping  bool
	timer     *time.Timer
	result    backend.Result
}

var taskIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// Start implements backend.Backend.
func (b *Backend) Start(ctx context.Context, spec backend.Spec, sink backend.LogSink) (backend.Ref, error) {
	if !taskIDPattern.MatchString(spec.TaskID) || strings.Trim(spec.TaskID, ".") == "" {
		return "", fmt.Errorf("local backend: unusable task id %q", spec.TaskID)
	}
	if spec.Archive == nil {
		if spec.Image != "" {
			return "", fmt.Errorf("%w: the local backend runs zip code packages only and cannot run Docker image %q (code %q rev %d); use the diego backend for image codes",
				backend.ErrUnsupportedCode, spec.Image, spec.CodeName, spec.CodeRev)
		}
		return "", badCode("code %q rev %d has neither a zip package nor an image", spec.CodeName, spec.CodeRev)
	}
	env, err := b.environ(spec)
	if err != nil {
		return "", err
	}
	memMB := spec.MemoryMB
	if memMB <= 0 {
		memMB = b.cfg.DefaultMemoryMB
	}

	dir, err := b.makeTaskDir(spec.TaskID)
	if err != nil {
		return "", err
	}
	env = withTaskEnv(env, spec, dir)
	ok := false
	defer func() {
		if !ok && !b.cfg.KeepDirs {
			os.RemoveAll(dir)
		}
	}()

	zf, size, err := fetchArchive(ctx, spec.Archive, b.cfg.WorkRoot, b.cfg.MaxUnpackedBytes+1<<20)
	if err != nil {
		return "", err
	}
	err = unzipInto(ctx, zf, size, dir, unzipLimits{maxBytes: b.cfg.MaxUnpackedBytes, maxFiles: b.cfg.MaxFiles})
	zf.Close()
	if err != nil {
		return "", err
	}
	for name, content := range map[string]string{payloadFile: spec.Payload, configFile: spec.Config} {
		p := filepath.Join(dir, name)
		os.Remove(p) // the zip may have had one; ours wins
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return "", fmt.Errorf("write %s: %w", name, err)
		}
	}
	script, err := entryScript(spec, dir)
	if err != nil {
		return "", err
	}
	args := []string{
		"-payload", filepath.Join(dir, payloadFile),
		"-config", filepath.Join(dir, configFile),
		"-id", spec.TaskID,
		"-d", dir,
	}
	argv := append([]string{"/bin/sh", "-c", script, "sh"}, args...)

	t := &task{spec: spec, memMB: memMB, done: make(chan struct{}), grace: b.cfg.KillGrace}
	// Own process group: Cancel and the end of the main process reach everything it
	// spawned. Pdeathsig: the main process dies with the runner instead of running on
	// with nobody to collect its output (a restarted runner then finds it Gone).
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if memMB > 0 {
		switch b.mem.kind {
		case LimiterCgroup2:
			cg, err := newTaskCgroup(b.mem.cgParent, filepath.Base(dir), int64(memMB)<<20)
			if err != nil {
				return "", fmt.Errorf("local backend: %w", err)
			}
			t.cg = cg
			attr.UseCgroupFD = true
			attr.CgroupFD = int(cg.fd.Fd())
			t.limited = true
		case LimiterPrlimit:
			argv = append([]string{b.mem.prlimit, "--data=" + strconv.FormatInt(int64(memMB)<<20, 10), "--"}, argv...)
			t.limited = true
		}
	}
	defer func() {
		if !ok && t.cg != nil {
			t.cg.remove()
		}
	}()
	if err := ctx.Err(); err != nil {
		return "", err
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		return "", err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return "", err
	}
	cmd := &exec.Cmd{Path: argv[0], Args: argv, Dir: dir, Env: env, Stdout: outW, Stderr: errW, SysProcAttr: attr}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if t.cg != nil {
		t.cg.closeFD()
	}
	if err != nil {
		outR.Close()
		errR.Close()
		return "", fmt.Errorf("local backend: start task process: %w", err)
	}
	ok = true
	t.cmd = cmd
	st, err := readStat(cmd.Process.Pid)
	if err != nil { // cannot happen: the child is not reaped yet
		st.start = 0
	}
	t.pr = procRef{Boot: b.boot, PID: cmd.Process.Pid, Start: st.start, Dir: dir}
	if t.cg != nil {
		t.pr.Cgroup = t.cg.path
	}
	t.ref = t.pr.encode()
	t.log = newTaskLog(sink, b.cfg.MaxLogBytes)

	b.mu.Lock()
	b.tasks[t.ref] = t
	b.mu.Unlock()

	var readers sync.WaitGroup
	readers.Add(2)
	go pump(&readers, outR, backend.Stdout, t.log)
	go pump(&readers, errR, backend.Stderr, t.log)
	go b.supervise(t, outR, errR, &readers)
	if spec.Timeout > 0 {
		t.mu.Lock()
		t.timer = time.AfterFunc(spec.Timeout, func() { t.stop(func() { t.timedOut = true }) })
		t.mu.Unlock()
	}
	return t.ref, nil
}

func (b *Backend) makeTaskDir(taskID string) (string, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	dir := filepath.Join(b.cfg.WorkRoot, taskID+"-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("local backend: task directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { // whatever the umask
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// ownsDir tells whether dir is a task directory of this work root, so that a Ref read
// back from the database can never make us delete anything else.
func (b *Backend) ownsDir(dir string) bool {
	return filepath.Dir(dir) == b.cfg.WorkRoot && taskIDPattern.MatchString(filepath.Base(dir)) &&
		!strings.HasPrefix(filepath.Base(dir), ".")
}

func (b *Backend) environ(spec backend.Spec) ([]string, error) {
	env := []string{"PATH=" + b.cfg.Path, "LANG=C.UTF-8"}
	keys := make([]string, 0, len(spec.EnvVars))
	for k := range spec.EnvVars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := spec.EnvVars[k]
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, badCode("env_vars name %q is not a valid environment variable name", k)
		}
		if strings.ContainsRune(v, 0) {
			return nil, badCode("env_vars %q contains a NUL byte", k)
		}
		env = append(env, k+"="+v)
	}
	return env, nil
}

// withTaskEnv adds what IronWorker gives every worker. These come last so that an
// env_var of the same name cannot hide them (exec keeps the last duplicate).
func withTaskEnv(env []string, spec backend.Spec, dir string) []string {
	return append(env,
		"HOME="+dir,
		"TASK_ID="+spec.TaskID,
		"TASK_DIR="+dir,
		"PAYLOAD_FILE="+filepath.Join(dir, payloadFile),
		"CONFIG_FILE="+filepath.Join(dir, configFile),
	)
}

// entryScript is the /bin/sh -c script. The IronWorker arguments arrive as the
// script's positional parameters and are appended to the user's command with "$@", so
// `ruby worker.rb` runs as `ruby worker.rb -payload … -config … -id … -d …` without any
// quoting of ours meeting theirs.
func entryScript(spec backend.Spec, dir string) (string, error) {
	if cmd := strings.TrimRight(spec.Command, " \t\r\n;"); cmd != "" {
		return cmd + ` "$@"`, nil
	}
	name := spec.FileName
	if name == "" {
		if _, err := os.Lstat(filepath.Join(dir, legacyEntry)); err == nil {
			name = legacyEntry
		} else {
			return "", badCode("code %q rev %d has no command, and its zip has no %s to run", spec.CodeName, spec.CodeRev, legacyEntry)
		}
	}
	rel, err := entryPath(name)
	if err != nil || rel == "" {
		return "", badCode("code %q rev %d: file_name %q is not a file inside the package", spec.CodeName, spec.CodeRev, name)
	}
	if fi, err := os.Lstat(filepath.Join(dir, rel)); err != nil || !fi.Mode().IsRegular() {
		return "", badCode("code %q rev %d has no command, and its file_name %q is not in the zip", spec.CodeName, spec.CodeRev, name)
	}
	if strings.HasSuffix(rel, ".sh") {
		return "exec sh " + shellQuote(rel) + ` "$@"`, nil
	}
	return "exec ./" + shellQuote(rel) + ` "$@"`, nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func pump(wg *sync.WaitGroup, r *os.File, stream backend.Stream, l *taskLog) {
	defer wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			l.write(stream, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// supervise follows the task to its end and builds its Result.
func (b *Backend) supervise(t *task, outR, errR *os.File, readers *sync.WaitGroup) {
	pid := t.cmd.Process.Pid
	// Learn that the main process ended without reaping it: while it is a zombie its
	// pid (and so its process group id) cannot be reused, so killing the group is safe.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	t.mu.Lock()
	t.exited = true
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Unlock()
	signalGroup(pid, syscall.SIGKILL)
	if t.cg != nil {
		killCgroup(t.cg.path)
	}
	killMarkedUntilGone(t.pr.Dir)
	_ = t.cmd.Wait()

	deadline := time.Now().Add(drainTimeout)
	_ = outR.SetReadDeadline(deadline)
	_ = errR.SetReadDeadline(deadline)
	readers.Wait()
	outR.Close()
	errR.Close()

	res := b.result(t)
	if t.cg != nil {
		t.cg.remove()
	}
	if !b.cfg.KeepDirs {
		os.RemoveAll(t.pr.Dir)
	}
	t.mu.Lock()
	t.result = res
	t.mu.Unlock()
	close(t.done)
}

func (b *Backend) result(t *task) backend.Result {
	var res backend.Result
	ws, _ := t.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		res.ExitCode = 128 + int(ws.Signal())
		res.Signal = unix.SignalName(ws.Signal())
	} else {
		res.ExitCode = ws.ExitStatus()
	}
	last, tail := t.log.finish()
	res.LastStderrLine = last
	t.mu.Lock()
	res.Cancelled, res.TimedOut = t.cancelled, t.timedOut
	t.mu.Unlock()
	switch {
	case t.cg != nil:
		res.OOM = t.cg.oomKilled()
	case t.limited:
		res.OOM = res.ExitCode != 0 && !res.Cancelled && !res.TimedOut && looksLikeOOM(tail)
	}
	switch {
	case res.OOM:
		res.Msg = fmt.Sprintf("ERROR: WORKER RAM LIMIT EXCEEDED (%dM)", t.memMB)
	case res.TimedOut:
		res.Msg = fmt.Sprintf("task timed out after %s", t.spec.Timeout)
	case res.Cancelled:
		res.Msg = "task cancelled"
	case res.ExitCode == 0 && res.Signal == "":
	case last != "":
		res.Msg = last
	case res.Signal != "":
		res.Msg = "worker killed by signal " + res.Signal
	default:
		res.Msg = fmt.Sprintf("worker exited with status %d", res.ExitCode)
	}
	return res
}

// stop asks the task to end (SIGTERM to its process group) and forces it (SIGKILL to
// everything it spawned) after the grace period. mark records why, unless the task
// already ended on its own.
func (t *task) stop(mark func()) {
	t.mu.Lock()
	if t.exited || t.stopping {
		t.mu.Unlock()
		return
	}
	t.stopping = true
	mark()
	signalGroup(t.pr.PID, syscall.SIGTERM)
	t.mu.Unlock()
	go func() {
		select {
		case <-t.done:
			return
		case <-time.After(t.grace):
		}
		t.mu.Lock()
		if !t.exited {
			signalGroup(t.pr.PID, syscall.SIGKILL)
		}
		t.mu.Unlock()
		if t.cg != nil {
			killCgroup(t.cg.path)
		}
		killMarkedUntilGone(t.pr.Dir)
	}()
}

func (b *Backend) lookup(ref backend.Ref) *task {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tasks[ref]
}

// Wait implements backend.Backend.
func (b *Backend) Wait(ctx context.Context, ref backend.Ref) (backend.Result, error) {
	t := b.lookup(ref)
	if t == nil {
		return backend.Result{}, b.foreignErr(ref)
	}
	select {
	case <-t.done:
		b.mu.Lock()
		delete(b.tasks, ref)
		b.mu.Unlock()
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.result, nil
	case <-ctx.Done():
		return backend.Result{}, ctx.Err()
	}
}

// foreignErr answers Wait and Attach for a task this process did not start (or has
// already reported): it cannot be followed, only found running or not.
func (b *Backend) foreignErr(ref backend.Ref) error {
	pr, err := parseRef(ref)
	if err != nil {
		return err
	}
	if alive, detail := pr.leaderAlive(); alive {
		return fmt.Errorf("%w: %s, but its output went to a runner process that no longer exists", backend.ErrNotAdoptable, detail)
	} else {
		return fmt.Errorf("%w: %s", backend.ErrGone, detail)
	}
}

// Status implements backend.Backend.
func (b *Backend) Status(_ context.Context, ref backend.Ref) (backend.State, error) {
	if t := b.lookup(ref); t != nil {
		select {
		case <-t.done:
			t.mu.Lock()
			defer t.mu.Unlock()
			return backend.State{Phase: backend.Exited, Result: t.result,
				Detail: fmt.Sprintf("process %d exited with status %d", t.pr.PID, t.result.ExitCode)}, nil
		default:
			return backend.State{Phase: backend.Running, Detail: fmt.Sprintf("process %d is running", t.pr.PID)}, nil
		}
	}
	pr, err := parseRef(ref)
	if err != nil {
		return backend.State{}, err
	}
	if alive, detail := pr.leaderAlive(); alive {
		return backend.State{Phase: backend.Running, Detail: detail}, nil
	} else {
		return backend.State{Phase: backend.Gone, Detail: detail}, nil
	}
}

// Attach implements backend.Backend. Only tasks of this process can be attached: the
// output pipes of any other task died with the runner that started it.
func (b *Backend) Attach(_ context.Context, ref backend.Ref, sink backend.LogSink) error {
	if t := b.lookup(ref); t != nil {
		t.log.setSink(sink)
		return nil
	}
	return b.foreignErr(ref)
}

// Cancel implements backend.Backend.
func (b *Backend) Cancel(ctx context.Context, ref backend.Ref) error {
	if t := b.lookup(ref); t != nil {
		t.stop(func() { t.cancelled = true })
		select {
		case <-t.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	pr, err := parseRef(ref)
	if err != nil {
		return err
	}
	return b.cancelForeign(ctx, pr)
}

// cancelForeign stops what is left of a task started by another runner process on this
// machine and removes its directory and cgroup.
func (b *Backend) cancelForeign(ctx context.Context, pr procRef) error {
	if pr.Boot != b.boot {
		return nil // nothing of it can exist on this machine
	}
	if !b.ownsDir(pr.Dir) {
		// A runner on this machine with another work root started it (e.g. a second
		// runner job, or a runner whose work_dir changed). Its processes still carry the
		// exact marker TASK_DIR=<its directory>, which only that task's processes have:
		// stop them (the leader died with its runner; what it spawned did not), but
		// leave the directory alone, since a Ref must never make us delete anything
		// outside our own work root.
		if filepath.IsAbs(pr.Dir) && filepath.Clean(pr.Dir) == pr.Dir && taskIDPattern.MatchString(filepath.Base(pr.Dir)) {
			b.killMarked(ctx, pr.Dir)
		}
		return fmt.Errorf("local backend: reference names directory %q outside the work root %s", pr.Dir, b.cfg.WorkRoot)
	}
	if alive, _ := pr.leaderAlive(); alive {
		signalGroup(pr.PID, syscall.SIGTERM)
	}
	signalAll(taskProcesses(pr.Dir), syscall.SIGTERM)
	deadline := time.Now().Add(b.cfg.KillGrace)
	for time.Now().Before(deadline) {
		if alive, _ := pr.leaderAlive(); !alive && len(taskProcesses(pr.Dir)) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if alive, _ := pr.leaderAlive(); alive {
		signalGroup(pr.PID, syscall.SIGKILL)
	}
	killMarkedUntilGone(pr.Dir)
	if pr.Cgroup != "" && b.mem.kind == LimiterCgroup2 && filepath.Dir(pr.Cgroup) == b.mem.cgParent {
		killCgroup(pr.Cgroup)
		removeCgroup(pr.Cgroup)
	}
	if !b.cfg.KeepDirs {
		if err := os.RemoveAll(pr.Dir); err != nil {
			return fmt.Errorf("local backend: remove task directory: %w", err)
		}
	}
	return nil
}

// killMarkedUntilGone SIGKILLs every process carrying dir's task marker until a scan
// finds none (bounded to 2 s). One scan is not enough: signals land asynchronously, and
// a process caught mid-fork or mid-exec can be missed by a single pass over /proc.
func killMarkedUntilGone(dir string) {
	empty := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && empty < 2; {
		pids := taskProcesses(dir)
		if len(pids) == 0 {
			empty++
		} else {
			empty = 0
			signalAll(pids, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killMarked stops every process carrying dir's task marker: SIGTERM, then SIGKILL after
// the kill grace.
func (b *Backend) killMarked(ctx context.Context, dir string) {
	pids := taskProcesses(dir)
	if len(pids) == 0 {
		return
	}
	signalAll(pids, syscall.SIGTERM)
	deadline := time.Now().Add(b.cfg.KillGrace)
	for time.Now().Before(deadline) && len(taskProcesses(dir)) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	signalAll(taskProcesses(dir), syscall.SIGKILL)
}
