package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Memory limiters, best first. cgroup v2 limits what the task really uses (RSS and page
// cache of everything it spawns) and tells an OOM kill apart from any other death;
// prlimit only caps each process's data segment and the OOM has to be recognised from
// the worker's own complaint; none enforces nothing.
const (
	LimiterAuto    = "auto"
	LimiterCgroup2 = "cgroup2"
	LimiterPrlimit = "prlimit"
	LimiterNone    = "none"
)

const cgroupRoot = "/sys/fs/cgroup"

type memLimiter struct {
	kind     string // cgroup2, prlimit or none
	cgParent string // cgroup2: directory under which task cgroups are created
	prlimit  string // prlimit: path of the binary
	why      string // what was found, for Limiter()
}

func (m memLimiter) String() string {
	switch m.kind {
	case LimiterCgroup2:
		return "cgroup2 (" + m.cgParent + ")"
	case LimiterPrlimit:
		return "prlimit RLIMIT_DATA (" + m.prlimit + "); " + m.why
	}
	return "none: " + m.why
}

func detectLimiter(mode, cgParent string) (memLimiter, error) {
	switch mode {
	case LimiterNone:
		return memLimiter{kind: LimiterNone, why: "disabled by configuration"}, nil
	case LimiterCgroup2:
		dir, err := prepareCgroupParent(cgParent)
		if err != nil {
			return memLimiter{}, fmt.Errorf("memory limiter cgroup2: %w", err)
		}
		return memLimiter{kind: LimiterCgroup2, cgParent: dir}, nil
	case LimiterPrlimit:
		p, err := exec.LookPath("prlimit")
		if err != nil {
			return memLimiter{}, fmt.Errorf("memory limiter prlimit: %w", err)
		}
		return memLimiter{kind: LimiterPrlimit, prlimit: p, why: "chosen by configuration"}, nil
	case LimiterAuto, "":
	default:
		return memLimiter{}, fmt.Errorf("memory limiter %q: want auto, cgroup2, prlimit or none", mode)
	}
	dir, cgErr := prepareCgroupParent(cgParent)
	if cgErr == nil {
		return memLimiter{kind: LimiterCgroup2, cgParent: dir}, nil
	}
	why := "cgroup v2 unusable: " + cgErr.Error()
	if p, err := exec.LookPath("prlimit"); err == nil {
		return memLimiter{kind: LimiterPrlimit, prlimit: p, why: why}, nil
	}
	return memLimiter{kind: LimiterNone, why: why + "; prlimit (util-linux) not found in PATH"}, nil
}

// prepareCgroupParent finds (and if needed creates) a cgroup v2 directory whose children
// can have memory.max. Without an explicit parent it only uses the runner's own cgroup
// when that already delegates the memory controller to its children, which in practice
// means the runner sits in a cgroup namespace root (a container of its own): cgroup v2
// forbids a non-root cgroup to both hold processes and distribute controllers, so an
// operator who wants limits elsewhere prepares a delegated parent (cgroup_parent).
func prepareCgroupParent(parent string) (string, error) {
	if parent == "" {
		own, err := ownCgroup()
		if err != nil {
			return "", err
		}
		if !isCgroup2(own) {
			return "", fmt.Errorf("%s is not a cgroup v2 mount (cgroup v1 or hybrid hierarchy)", own)
		}
		if !hasWord(readTrim(filepath.Join(own, "cgroup.subtree_control")), "memory") {
			return "", fmt.Errorf("the runner's cgroup %s does not delegate the memory controller; set cgroup_parent to a delegated cgroup", own)
		}
		parent = filepath.Join(own, "ironworker-local")
	}
	parent = filepath.Clean(parent)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	if !isCgroup2(parent) {
		return "", fmt.Errorf("%s is not on a cgroup v2 mount", parent)
	}
	if !hasWord(readTrim(filepath.Join(parent, "cgroup.controllers")), "memory") {
		return "", fmt.Errorf("memory controller not available in %s (enable it in the parent's cgroup.subtree_control)", parent)
	}
	sub := filepath.Join(parent, "cgroup.subtree_control")
	if !hasWord(readTrim(sub), "memory") {
		if err := os.WriteFile(sub, []byte("+memory"), 0); err != nil {
			return "", fmt.Errorf("enable memory controller in %s: %w", sub, err)
		}
	}
	return parent, nil
}

func ownCgroup() (string, error) {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(cgroupRoot, rest), nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

func isCgroup2(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// taskCgroup is one task's cgroup: the process is cloned straight into it
// (CLONE_INTO_CGROUP), so there is no moment at which it runs unlimited.
type taskCgroup struct {
	path string
	fd   *os.File
}

func newTaskCgroup(parent, name string, limitBytes int64) (*taskCgroup, error) {
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		return nil, fmt.Errorf("create task cgroup: %w", err)
	}
	cg := &taskCgroup{path: p}
	if err := os.WriteFile(filepath.Join(p, "memory.max"), []byte(strconv.FormatInt(limitBytes, 10)), 0); err != nil {
		cg.remove()
		return nil, fmt.Errorf("set memory.max: %w", err)
	}
	// Swap would let the task exceed its RAM limit silently; kill the whole task, not
	// one random process of it, as a container would be.
	_ = os.WriteFile(filepath.Join(p, "memory.swap.max"), []byte("0"), 0)
	_ = os.WriteFile(filepath.Join(p, "memory.oom.group"), []byte("1"), 0)
	fd, err := os.Open(p)
	if err != nil {
		cg.remove()
		return nil, err
	}
	cg.fd = fd
	return cg, nil
}

func (c *taskCgroup) oomKilled() bool {
	return cgroupOOMKills(filepath.Join(c.path, "memory.events")) > 0
}

func cgroupOOMKills(eventsFile string) int64 {
	raw, err := os.ReadFile(eventsFile)
	if err != nil {
		return 0
	}
	var n int64
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == "oom_kill" || f[0] == "oom_group_kill") {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			n += v
		}
	}
	return n
}

// kill ends every process in the cgroup, including ones that left the process group.
func killCgroup(path string) {
	if os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0) == nil {
		return
	}
	raw, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
	for _, f := range strings.Fields(string(raw)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (c *taskCgroup) closeFD() {
	if c.fd != nil {
		c.fd.Close()
		c.fd = nil
	}
}

func (c *taskCgroup) remove() {
	c.closeFD()
	removeCgroup(c.path)
}

// removeCgroup retries briefly: rmdir fails while killed processes are still exiting.
func removeCgroup(path string) {
	for i := 0; i < 50; i++ {
		err := syscall.Rmdir(path)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return
		}
		killCgroup(path)
		time.Sleep(20 * time.Millisecond)
	}
}

// oomMarkers are what common runtimes print when an allocation fails under RLIMIT_DATA
// (compared in lower case).
var oomMarkers = []string{
	"out of memory",                  // perl, go runtime, node ("javascript heap out of memory"), C libs
	"cannot allocate memory",         // ENOMEM from the shell and coreutils
	"memory exhausted",               // coreutils, bash
	"memoryerror",                    // python
	"outofmemoryerror",               // java
	"failed to allocate memory",      // ruby NoMemoryError
	"std::bad_alloc",                 // c++
	"could not reserve enough space", // jvm start-up
	"allocation failed",              // v8
}

func looksLikeOOM(stderrTail string) bool {
	s := strings.ToLower(stderrTail)
	for _, m := range oomMarkers {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}
