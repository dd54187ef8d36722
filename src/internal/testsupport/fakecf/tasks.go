package fakecf

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// CommandMaxLength is Cloud Controller's TaskModel::COMMAND_MAX_LENGTH.
const CommandMaxLength = 4096

type task struct {
	meta
	seq       int
	name      string
	command   string
	app       string
	droplet   string
	state     string
	memory    int
	disk      int
	logRate   int
	failure   string
	metadata  *metadataReq
	proc      *proc
	cancelled bool
	exitCode  int
}

type proc struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	killed bool
}

func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

func (p *proc) kill() { p.signal(syscall.SIGKILL) }

// TaskInfo is what tests may read about a task.
type TaskInfo struct {
	GUID, Name, Command, App, State, FailureReason string
	MemoryInMB, DiskInMB                           int
	Labels                                         map[string]string
	// Cancelled is set when the task was cancelled through the API.
	Cancelled bool
	ExitCode  int
}

// Tasks lists every task the fake knows, oldest first.
func (s *Server) Tasks() []TaskInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []*task
	for _, t := range s.tasks {
		list = append(list, t)
	}
	sortByCreated(list, func(t *task) meta { return t.meta })
	out := make([]TaskInfo, 0, len(list))
	for _, t := range list {
		ti := TaskInfo{GUID: t.guid, Name: t.name, Command: t.command, App: t.app, State: t.state, FailureReason: t.failure,
			MemoryInMB: t.memory, DiskInMB: t.disk, Cancelled: t.cancelled, ExitCode: t.exitCode, Labels: map[string]string{}}
		if t.metadata != nil {
			for k, v := range t.metadata.Labels {
				if v != nil {
					ti.Labels[k] = *v
				}
			}
		}
		out = append(out, ti)
	}
	return out
}

// AppInfo is what tests may read about an app.
type AppInfo struct {
	GUID, Name, Space, Lifecycle string
	Buildpacks                   []string
	Env                          map[string]string
	CurrentDroplet               string
	// Image is the docker image of the current droplet; empty for buildpack apps.
	Image string
}

// Apps lists every app, oldest first.
func (s *Server) Apps() []AppInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []*app
	for _, a := range s.apps {
		list = append(list, a)
	}
	sortByCreated(list, func(a *app) meta { return a.meta })
	out := make([]AppInfo, 0, len(list))
	for _, a := range list {
		ai := AppInfo{GUID: a.guid, Name: a.name, Space: a.space, Lifecycle: a.lifecycle, Buildpacks: a.buildpacks, Env: a.env, CurrentDroplet: a.droplet}
		if d := s.droplets[a.droplet]; d != nil {
			ai.Image = d.image
		}
		out = append(out, ai)
	}
	return out
}

func (s *Server) taskJSON(t *task, withCommand bool) map[string]any {
	var reason any
	if t.failure != "" {
		reason = t.failure
	}
	out := map[string]any{
		"guid": t.guid, "created_at": ts(t.created), "updated_at": ts(t.updated), "sequence_id": t.seq, "name": t.name,
		"user": nil, "state": t.state, "memory_in_mb": t.memory, "disk_in_mb": t.disk,
		"log_rate_limit_in_bytes_per_second": t.logRate, "result": map[string]any{"failure_reason": reason},
		"droplet_guid": t.droplet, "relationships": map[string]any{"app": relationship(t.app)},
		"metadata": metadataOut(t.metadata),
		"links": map[string]any{
			"self": s.link("/v3/tasks/" + t.guid), "app": s.link("/v3/apps/" + t.app),
			"cancel":  map[string]any{"href": s.URL + "/v3/tasks/" + t.guid + "/actions/cancel", "method": "POST"},
			"droplet": s.link("/v3/droplets/" + t.droplet),
		},
	}
	if withCommand {
		out["command"] = t.command
	}
	return out
}

func (s *Server) createTask(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name                         *string         `json:"name,omitempty"`
		Command                      *string         `json:"command,omitempty"`
		DiskInMB                     *int            `json:"disk_in_mb,omitempty"`
		MemoryInMB                   *int            `json:"memory_in_mb,omitempty"`
		LogRateLimitInBytesPerSecond *int            `json:"log_rate_limit_in_bytes_per_second,omitempty"`
		DropletGUID                  *string         `json:"droplet_guid,omitempty"`
		Template                     json.RawMessage `json:"template,omitempty"`
		User                         *string         `json:"user,omitempty"`
		Metadata                     *metadataReq    `json:"metadata,omitempty"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Template != nil {
		unprocessable(w, "The fake Cloud Foundry does not support process templates")
		return
	}
	if req.Command == nil || strings.TrimSpace(*req.Command) == "" {
		unprocessable(w, "Command can't be blank")
		return
	}
	if commandLength(*req.Command) > CommandMaxLength {
		unprocessable(w, fmt.Sprintf("Command must be shorter than %d characters", CommandMaxLength+1))
		return
	}
	for field, v := range map[string]*int{"Memory in mb": req.MemoryInMB, "Disk in mb": req.DiskInMB} {
		if v != nil && *v < 1 {
			unprocessable(w, field+" must be greater than 0")
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[r.PathValue("guid")]
	if a == nil {
		notFound(w, "App")
		return
	}
	dropGUID := a.droplet
	if req.DropletGUID != nil {
		dropGUID = *req.DropletGUID
		if d := s.droplets[dropGUID]; d == nil || d.app != a.guid {
			notFound(w, "Droplet")
			return
		}
	}
	if dropGUID == "" {
		unprocessable(w, "Task must have a droplet. Specify droplet or assign current droplet to app.")
		return
	}
	if a.lifecycle == "docker" && !s.flags["diego_docker"].enabled {
		cfError(w, http.StatusForbidden, 330002, "CF-FeatureDisabled", "Feature Disabled: diego_docker")
		return
	}
	s.seq++
	t := &task{meta: s.newMeta(), seq: s.seq, command: *req.Command, app: a.guid, droplet: dropGUID, state: "PENDING",
		memory: 1024, disk: 1024, logRate: -1, metadata: req.Metadata}
	t.created = time.Now().UTC()
	if req.Name != nil && *req.Name != "" {
		t.name = *req.Name
	} else {
		t.name = newGUID()[:8]
	}
	if req.MemoryInMB != nil {
		t.memory = *req.MemoryInMB
	}
	if req.DiskInMB != nil {
		t.disk = *req.DiskInMB
	}
	if req.LogRateLimitInBytesPerSecond != nil {
		t.logRate = *req.LogRateLimitInBytesPerSecond
	}
	s.tasks[t.guid] = t
	out := s.taskJSON(t, true)
	s.running.Add(1)
	go s.runTask(t, a, s.droplets[dropGUID])
	writeJSON(w, http.StatusAccepted, out)
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[r.PathValue("guid")]
	if t == nil {
		notFound(w, "Task")
		return
	}
	writeJSON(w, http.StatusOK, s.taskJSON(t, true))
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	s.listTasksOf(w, r, "")
}

func (s *Server) listAppTasks(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ok := s.apps[r.PathValue("guid")] != nil
	s.mu.Unlock()
	if !ok {
		notFound(w, "App")
		return
	}
	s.listTasksOf(w, r, r.PathValue("guid"))
}

func (s *Server) listTasksOf(w http.ResponseWriter, r *http.Request, appGUID string) {
	allowed := []string{"guids", "names", "states", "app_guids", "space_guids", "organization_guids"}
	if appGUID != "" {
		allowed = []string{"guids", "names", "states", "sequence_ids"}
	}
	lq, ok := parseList(w, r, allowed...)
	if !ok {
		return
	}
	s.mu.Lock()
	var list []*task
	for _, t := range s.tasks {
		a := s.apps[t.app]
		if a == nil || (appGUID != "" && t.app != appGUID) {
			continue
		}
		if lq.in("guids", t.guid, false) && lq.in("names", t.name, true) && lq.in("states", t.state, false) &&
			lq.in("app_guids", t.app, false) && lq.in("space_guids", a.space, false) &&
			lq.in("organization_guids", s.spaces[a.space].org, false) && lq.in("sequence_ids", strconv.Itoa(t.seq), false) {
			list = append(list, t)
		}
	}
	sortByCreated(list, func(t *task) meta { return t.meta })
	out := make([]map[string]any, 0, len(list))
	for _, t := range list {
		out = append(out, s.taskJSON(t, false))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[r.PathValue("guid")]
	if t == nil {
		notFound(w, "Task")
		return
	}
	switch t.state {
	case "SUCCEEDED", "FAILED":
		unprocessable(w, "Task state is "+t.state+" and therefore cannot be canceled")
		return
	case "CANCELING":
	case "PENDING":
		t.cancelled = true
		t.state, t.failure, t.updated = "CANCELING", "task was cancelled", time.Now().UTC()
	case "RUNNING":
		t.cancelled = true
		t.state, t.updated = "CANCELING", time.Now().UTC()
		if p := t.proc; p != nil {
			p.signal(syscall.SIGTERM)
			grace := s.opts.KillGrace
			go func() {
				select {
				case <-p.done:
				case <-time.After(grace):
					p.kill()
				}
			}()
		}
	}
	writeJSON(w, http.StatusAccepted, s.taskJSON(t, true))
}

// runTask plays Diego: PENDING for a moment, then RUNNING as a local process, then
// SUCCEEDED or FAILED.
func (s *Server) runTask(t *task, a *app, d *droplet) {
	defer s.running.Done()
	time.Sleep(s.opts.PendingTime)
	s.mu.Lock()
	if s.closed || s.tasks[t.guid] == nil {
		s.mu.Unlock()
		return
	}
	if t.state == "CANCELING" { // cancelled while pending
		t.state, t.updated = "FAILED", time.Now().UTC()
		s.mu.Unlock()
		return
	}
	appGUID, name, command, mem := t.app, t.name, t.command, t.memory
	env := []string{"PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8"}
	for k, v := range a.env {
		env = append(env, k+"="+v)
	}
	vcap, _ := json.Marshal(map[string]any{"application_id": a.guid, "application_name": a.name, "space_id": a.space})
	env = append(env, "VCAP_APPLICATION="+string(vcap), "MEMORY_LIMIT="+strconv.Itoa(mem)+"m", "CF_INSTANCE_INDEX=0")
	env = append(env, s.opts.Env...)
	var bits []byte
	docker := a.lifecycle == "docker"
	if d != nil {
		bits = d.bits
	}
	t.state, t.updated = "RUNNING", time.Now().UTC()
	p := &proc{done: make(chan struct{})}
	t.proc = p
	s.mu.Unlock()

	s.cellLog(appGUID, "Creating container for task "+name)
	exit, reason := s.execute(t, p, name, command, env, bits, docker)
	s.cellLog(appGUID, "Successfully destroyed container for task "+name)

	s.mu.Lock()
	defer s.mu.Unlock()
	close(p.done)
	t.proc = nil
	t.exitCode = exit
	t.updated = time.Now().UTC()
	switch {
	case t.cancelled:
		t.state, t.failure = "FAILED", "task was cancelled"
	case exit == 0 && reason == "":
		t.state = "SUCCEEDED"
	default:
		t.state = "FAILED"
		if reason == "" {
			reason = fmt.Sprintf("APP/TASK/%s: Exited with status %d", name, exit)
		}
		t.failure = reason
	}
}

func (s *Server) execute(t *task, p *proc, name, command string, env []string, bits []byte, docker bool) (int, string) {
	dir, err := os.MkdirTemp(s.workDir, "task-")
	if err != nil {
		return 1, "creating container: " + err.Error()
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, ".tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return 1, "creating container: " + err.Error()
	}
	if len(bits) > 0 {
		if err := unzipTo(bits, dir); err != nil {
			return 1, "downloading droplet: " + err.Error()
		}
	}
	// A docker task runs in / with the image's HOME; a buildpack task in
	// /home/vcap/app, which is also HOME. The fake's stand-in for both is dir.
	env = append(env, "HOME="+dir, "TMPDIR="+tmp, "PWD="+dir)
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	cmd.Stdout, cmd.Stderr = outW, errW
	source := "APP/TASK/" + name
	var wg sync.WaitGroup
	wg.Add(2)
	go s.pumpLines(&wg, outR, t.app, source, false)
	go s.pumpLines(&wg, errR, t.app, source, true)
	p.mu.Lock()
	err = cmd.Start()
	if err == nil {
		p.cmd = cmd
	}
	p.mu.Unlock()
	if err != nil {
		outW.Close()
		errW.Close()
		wg.Wait()
		return 1, "starting process: " + err.Error()
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed { // Close ran while this one was starting
		p.kill()
	}
	werr := cmd.Wait()
	p.kill() // the container ends with its main process
	outW.Close()
	errW.Close()
	wg.Wait()
	if werr == nil {
		return 0, ""
	}
	if ee, ok := werr.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), ""
		}
		return ee.ExitCode(), ""
	}
	return 1, werr.Error()
}

// pumpLines turns a stream into one Log Cache envelope per line, as Diego's executor
// does (lines are split at newlines; the newline is not part of the payload).
func (s *Server) pumpLines(wg *sync.WaitGroup, r io.Reader, sourceID, sourceType string, stderr bool) {
	defer wg.Done()
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			s.appendLog(sourceID, sourceType, bytes.TrimSuffix(line, []byte("\n")), stderr)
		}
		if err != nil {
			return
		}
	}
}

func (s *Server) cellLog(sourceID, msg string) {
	s.appendLog(sourceID, "CELL", []byte(msg), false)
}

func unzipTo(bits []byte, dir string) error {
	zr, err := zip.NewReader(bytes.NewReader(bits), int64(len(bits)))
	if err != nil {
		return err
	}
	for _, f := range zr.File {
		name := filepath.Clean(f.Name)
		if name == "." || strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			continue
		}
		target := filepath.Join(dir, name)
		if f.FileInfo().IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		rc, err := f.Open()
		if err != nil {
			return err
		}
		mode := f.Mode().Perm()
		if mode == 0 {
			mode = 0o644
		}
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode|0o600)
		if err == nil {
			_, err = io.Copy(out, rc)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
