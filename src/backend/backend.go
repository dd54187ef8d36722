// Package backend is the seam between iron-runner and the places tasks actually run.
//
// A backend runs one task per Start and gives it back as an opaque Ref. The Ref is the
// only thing the runner persists (through the API), so a runner that restarts — or a
// different runner that takes over an expired lease — can ask any instance of the same
// backend what became of the task. Backends whose tasks outlive the runner (Cloud Foundry
// tasks on Diego) answer Running and let the runner Attach; backends whose tasks die with
// the runner (local processes) answer Gone and the runner ends the task `killed`.
//
// The runner owns the task lifecycle (leases, heartbeats, timeouts, statuses); a backend
// only starts, observes, streams logs of and stops what it was given.
package backend

import (
	"context"
	"errors"
	"io"
	"time"
)

// Backend runs tasks. Implementations are safe for concurrent use.
type Backend interface {
	// Name is the backend's config name ("local", "diego"); it prefixes its Refs so a
	// runner can tell which backend a persisted Ref belongs to.
	Name() string

	// Start launches the task and returns as soon as it runs (or was accepted to run),
	// without waiting for it to finish. ctx bounds only the launching work (fetching and
	// unpacking code, an API call): cancelling it later does not touch the running task,
	// because the task may outlive this call and even this process. Use Cancel to stop it.
	// Output produced by the task goes to sink as it appears; sink may be nil.
	// A task whose code this backend cannot run fails with an error wrapping
	// ErrUnsupportedCode or ErrBadCode: the runner ends such a task `error` with the
	// error's text as msg and does not retry it. Other errors are infrastructure failures.
	Start(ctx context.Context, spec Spec, sink LogSink) (Ref, error)

	// Wait blocks until the task ends and returns how it ended. If ctx ends first Wait
	// returns ctx.Err() and the task keeps running (a draining runner stops watching
	// without killing). After a Result has been returned the backend may forget the Ref:
	// a later Wait or Status can answer Gone.
	// A Ref this process cannot follow gives ErrGone (the task no longer exists) or
	// ErrNotAdoptable (it exists but its outcome cannot be collected from here).
	Wait(ctx context.Context, ref Ref) (Result, error)

	// Status reads the task's state without changing it; it works for Refs created by
	// any earlier process of the same backend, which is how a restarted runner decides
	// between adopting a task (Running), reporting it (Exited) and ending it `killed`
	// (Gone). A Ref the backend cannot have created is an error, not Gone.
	Status(ctx context.Context, ref Ref) (State, error)

	// Attach takes over a task started by another process (a previous runner): from now
	// on its output goes to sink and Wait follows it. It fails with ErrGone when the task
	// no longer exists and with ErrNotAdoptable when the backend cannot follow a task it
	// did not start (the runner then Cancels it and ends it `killed`). For a task started
	// by this process it only swaps the sink.
	Attach(ctx context.Context, ref Ref, sink LogSink) error

	// Cancel stops the task and everything it spawned, politely first and by force after
	// a grace period, and returns once it is stopped or ctx ends. It is idempotent and
	// safe on Refs of any state, including Gone ones, for which it only cleans up what
	// the task left behind. A task stopped this way ends with Result.Cancelled.
	Cancel(ctx context.Context, ref Ref) error
}

// Ref identifies a started task within its backend. It is opaque to the runner, printable,
// and meant to be stored: it starts with the backend's Name and a colon.
type Ref string

// Spec is everything a backend needs to run one task, resolved by the runner from the
// task, its code revision and its project.
type Spec struct {
	TaskID    string
	ProjectID string
	CodeID    string
	CodeName  string
	CodeRev   int

	// Image is the code's Docker image; empty for plain zip codes.
	Image string
	// Command is the code's command, run by /bin/sh; the IronWorker arguments
	// (-payload, -config, -id, -d) are appended to it.
	Command string
	// FileName is the legacy entry point inside the zip (`__runner__.sh` for the
	// Ruby/Node/Python clients' "sh" runtime), used when Command is empty.
	FileName string
	// Archive opens the code's zip package; nil when the code is only an image.
	// Backends call it at most once per Start and close what it returns.
	Archive func(ctx context.Context) (io.ReadCloser, error)

	EnvVars map[string]string // the code's env_vars
	Config  string            // the code's config, delivered as a file
	Payload string            // the task's payload, delivered as a file

	// Timeout is a backstop the backend enforces on its own (Result.TimedOut); the runner
	// enforces the task timeout too. Zero means none.
	Timeout time.Duration
	// MemoryMB caps the task's memory; zero means the backend's default.
	MemoryMB int
	// ScheduleID is set for tasks fired by a schedule; for labelling only.
	ScheduleID string

	// The fields below matter to backends whose tasks run away from the runner (diego),
	// which cannot hand the payload and config over as files; the local backend
	// ignores them.

	// ImageUsername and ImagePassword are the code's private registry credentials.
	ImageUsername string
	ImagePassword string
	// DiskMB caps the task's disk; zero means the backend's default.
	DiskMB int
	// InputURL is the absolute URL, reachable from CF app containers, of the API's task
	// input endpoint for this task (e.g. https://<api>/internal/v1/tasks/<id>/input).
	// When the payload or config is too big to ride in the CF task command (or is not
	// valid UTF-8 or holds NUL), the container fetches
	//	GET InputURL+"/payload"   and   GET InputURL+"/config"
	// with `Authorization: Bearer <InputToken>` (curl -fsS or wget -q), expecting 200 and
	// exactly the stored bytes as application/octet-stream (any non-2xx fails the task).
	InputURL string
	// InputToken is a short-lived credential that the input endpoint accepts only for
	// this task and only while its lease lasts. It is printed into the CF task command,
	// which space developers can read, so it must grant nothing else.
	InputToken string
	// FirstLease is set when no runner leased this task before this one: no earlier
	// runner can have started it, so a backend may skip looking for it (diego saves a
	// Cloud Controller request per task). Leave it false when unsure.
	FirstLease bool
	// Space is the CF space for this task's project (projects made by the service
	// broker get one each, created on demand); empty means the backend's default.
	Space string
}

// Stream tells which output a log chunk came from.
type Stream int

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return "unknown"
}

// LogSink receives a task's output as it is produced. A backend calls WriteLog from one
// goroutine at a time per task, in the order the chunks were read. p is only valid during
// the call. WriteLog must not block for long: a slow sink stalls the task's output pipes.
// It returns nothing because a failing log destination is never a reason to stop a task.
type LogSink interface {
	WriteLog(stream Stream, p []byte)
}

// Result is how a task ended.
type Result struct {
	// ExitCode is the process's exit status; 128+n when it was killed by signal n.
	ExitCode int
	// Signal names the signal that killed the task's main process ("SIGKILL"), if any.
	Signal string
	// OOM is set when the task ended because it hit its memory limit.
	OOM bool
	// TimedOut is set when the backend stopped the task at Spec.Timeout.
	TimedOut bool
	// Cancelled is set when the task was stopped through Cancel.
	Cancelled bool
	// Msg is the task msg for a failed task: the memory-limit message, else the last
	// stderr line, else a description of the exit. Empty on success.
	Msg string
	// LastStderrLine is the last non-empty line the task wrote to stderr.
	LastStderrLine string
}

// Success tells whether the task completed normally (status `complete`).
func (r Result) Success() bool {
	return r.ExitCode == 0 && r.Signal == "" && !r.OOM && !r.TimedOut && !r.Cancelled
}

// Phase is where a task is, as far as its backend can tell.
type Phase int

const (
	// Running: the task still runs (or is about to); a new runner may Attach to it.
	Running Phase = iota + 1
	// Exited: the task ended and the backend still knows how (State.Result).
	Exited
	// Gone: the task no longer exists and its outcome is lost (e.g. it died with the
	// runner that started it); the runner ends it `killed`.
	Gone
)

func (p Phase) String() string {
	switch p {
	case Running:
		return "running"
	case Exited:
		return "exited"
	case Gone:
		return "gone"
	}
	return "unknown"
}

// State is the answer to Status.
type State struct {
	Phase  Phase
	Result Result // set when Phase is Exited
	Detail string // why, in words, for logs and the task msg (e.g. "process 123 no longer exists")
}

var (
	// ErrGone: the task no longer exists and its outcome cannot be known.
	ErrGone = errors.New("task is gone")
	// ErrNotAdoptable: the task still exists but this backend cannot follow it from a
	// process that did not start it; Cancel it.
	ErrNotAdoptable = errors.New("task cannot be adopted by this backend")
	// ErrUnsupportedCode: this backend cannot run this kind of code (e.g. an image-only
	// code on the local backend). The task ends `error`.
	ErrUnsupportedCode = errors.New("code not supported by this backend")
	// ErrBadCode: the code package is unusable (unsafe or oversized zip, no entry point).
	// The task ends `error`.
	ErrBadCode = errors.New("code package rejected")
)
