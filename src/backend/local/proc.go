package local

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/ironcf/ironworker-release/src/backend"
)

// procRef is what a local Ref carries: enough to recognise the task's main process from
// another runner process (pid + start time, so a reused pid is not mistaken for it; the
// boot id, so a pid from before a reboot or from another machine is not either) and to
// clean up after it (its directory and cgroup).
type procRef struct {
	Boot   string
	PID    int
	Start  uint64 // /proc/<pid>/stat starttime, clock ticks since boot
	Dir    string
	Cgroup string
}

const refPrefix = "local:"

func (r procRef) encode() backend.Ref {
	v := url.Values{}
	v.Set("boot", r.Boot)
	v.Set("pid", strconv.Itoa(r.PID))
	v.Set("start", strconv.FormatUint(r.Start, 10))
	v.Set("dir", r.Dir)
	if r.Cgroup != "" {
		v.Set("cgroup", r.Cgroup)
	}
	return backend.Ref(refPrefix + v.Encode())
}

func parseRef(ref backend.Ref) (procRef, error) {
	rest, ok := strings.CutPrefix(string(ref), refPrefix)
	if !ok {
		return procRef{}, fmt.Errorf("local backend: %q is not a local task reference", ref)
	}
	v, err := url.ParseQuery(rest)
	if err != nil {
		return procRef{}, fmt.Errorf("local backend: malformed reference %q: %w", ref, err)
	}
	r := procRef{Boot: v.Get("boot"), Dir: v.Get("dir"), Cgroup: v.Get("cgroup")}
	r.PID, err = strconv.Atoi(v.Get("pid"))
	if err != nil || r.PID <= 1 {
		return procRef{}, fmt.Errorf("local backend: malformed reference %q: bad pid", ref)
	}
	r.Start, err = strconv.ParseUint(v.Get("start"), 10, 64)
	if err != nil || r.Boot == "" || r.Dir == "" {
		return procRef{}, fmt.Errorf("local backend: malformed reference %q", ref)
	}
	return r, nil
}

func bootID() string {
	return readTrim("/proc/sys/kernel/random/boot_id")
}

type procStat struct {
	state byte
	pgid  int
	start uint64
}

// readStat parses /proc/<pid>/stat. The command name may contain spaces and
// parentheses, so fields are counted from the last ')'.
func readStat(pid int) (procStat, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed stat")
	}
	f := strings.Fields(string(raw[i+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return procStat{}, errors.New("malformed stat")
	}
	pgid, _ := strconv.Atoi(f[2])
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, err
	}
	return procStat{state: f[0][0], pgid: pgid, start: start}, nil
}

func dead(state byte) bool { return state == 'Z' || state == 'X' || state == 'x' }

// leaderAlive tells whether the process the ref names still runs.
func (r procRef) leaderAlive() (bool, string) {
	if r.Boot != bootID() {
		return false, "started on another machine or before a reboot (boot id " + r.Boot + ")"
	}
	st, err := readStat(r.PID)
	if err != nil {
		return false, fmt.Sprintf("process %d no longer exists", r.PID)
	}
	if st.start != r.Start {
		return false, fmt.Sprintf("process %d no longer exists (pid reused)", r.PID)
	}
	if dead(st.state) {
		return false, fmt.Sprintf("process %d has exited", r.PID)
	}
	return true, fmt.Sprintf("process %d is running", r.PID)
}

// taskProcesses lists live processes that carry the task's marker (TASK_DIR=<its unique
// directory>) in their initial environment: the whole tree, including anything that
// left the process group with setsid.
func taskProcesses(dir string) []int {
	marker := []byte("TASK_DIR=" + dir + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, marker...)) {
			continue
		}
		if st, err := readStat(pid); err == nil && !dead(st.state) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func signalAll(pids []int, sig syscall.Signal) {
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
}

// signalGroup signals the process group led by pgid. Callers make sure the leader is
// not yet reaped, so the number cannot belong to anyone else.
func signalGroup(pgid int, sig syscall.Signal) {
	_ = syscall.Kill(-pgid, sig)
}
