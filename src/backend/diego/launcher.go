package diego

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/ironcf/ironworker-release/src/backend"
)

// CommandMaxLength is Cloud Controller's limit on a task command
// (TaskModel::COMMAND_MAX_LENGTH). CC counts characters; the launcher counts bytes,
// which is never less.
const CommandMaxLength = 4096

const (
	payloadFile = "__payload__"
	configFile  = "__config__"
	legacyEntry = "__runner__.sh"
)

// Launch is what goes into one task's launcher command.
type Launch struct {
	TaskID string
	// Docker: the task runs in a docker-lifecycle container (working directory /, the
	// image's own tools), so the task directory is made under $TMPDIR or /tmp. For zip
	// codes the task directory is the app directory (/home/vcap/app) holding the code.
	Docker bool
	// UserScript is the /bin/sh -c script of the worker, which gets the IronWorker
	// arguments as "$@" (see userScript).
	UserScript string
	Payload    string
	Config     string
	InputURL   string
	InputToken string
	// Insecure makes curl/wget skip TLS verification of InputURL.
	Insecure bool
}

// ErrCommandTooLong: even with payload and config fetched, the command does not fit.
var ErrCommandTooLong = errors.New("the launcher command does not fit Cloud Controller's 4096-character limit")

// LauncherCommand builds the CF task command for l. Payload and config are inlined
// when the whole command stays within CommandMaxLength and they are valid UTF-8
// without NUL bytes (a CF command is a JSON string run by a shell); otherwise the
// container fetches them from l.InputURL with curl or wget. It returns the command and
// whether anything is fetched.
func LauncherCommand(l Launch) (string, bool, error) {
	inl := func(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
	type choice struct{ payload, config bool }
	for _, c := range []choice{{true, true}, {false, true}, {true, false}, {false, false}} {
		if (c.payload && !inl(l.Payload)) || (c.config && !inl(l.Config)) {
			continue
		}
		fetch := !c.payload || !c.config
		if fetch && l.InputURL == "" {
			continue
		}
		cmd := buildCommand(l, c.payload, c.config)
		if len(cmd) <= CommandMaxLength {
			return cmd, fetch, nil
		}
	}
	if l.InputURL == "" {
		return "", false, fmt.Errorf("%w: the payload or config of task %s must be fetched by the container, but the runner gave no input URL", ErrCommandTooLong, l.TaskID)
	}
	return "", false, fmt.Errorf("%w (task %s; the code's command is %d bytes)", ErrCommandTooLong, l.TaskID, len(l.UserScript))
}

// buildCommand writes the launcher: a POSIX sh script that makes the task directory,
// writes or fetches __payload__ and __config__ there, and execs the worker the way
// the local backend runs it:
//
//	/bin/sh -c '<user script>' sh -payload $PAYLOAD_FILE -config $CONFIG_FILE -id $TASK_ID -d $TASK_DIR
//
// with TASK_ID, TASK_DIR, PAYLOAD_FILE and CONFIG_FILE exported and the fetch
// credential not.
func buildCommand(l Launch, inlinePayload, inlineConfig bool) string {
	var b strings.Builder
	w := func(s string) { b.WriteString(s) }
	w("umask 077;TASK_ID=" + shellQuote(l.TaskID) + ";")
	if l.Docker {
		w(`TASK_DIR="${TMPDIR:-/tmp}/iron-$TASK_ID";mkdir -p "$TASK_DIR"&&cd "$TASK_DIR"||exit 70;`)
	} else {
		w(`TASK_DIR=$(pwd);`)
	}
	w(`PAYLOAD_FILE="$TASK_DIR/` + payloadFile + `";CONFIG_FILE="$TASK_DIR/` + configFile + `";export TASK_ID TASK_DIR PAYLOAD_FILE CONFIG_FILE;`)
	if !inlinePayload || !inlineConfig {
		k, nc := "", ""
		if l.Insecure {
			k, nc = " -k", " --no-check-certificate"
		}
		w("U=" + shellQuote(l.InputURL) + ";T=" + shellQuote(l.InputToken) + ";")
		w(`g(){ if command -v curl >/dev/null 2>&1;then curl -fsS` + k + ` --retry 5 --connect-timeout 10 -m 120 -H "Authorization: Bearer $T" -o "$2" "$U/$1";` +
			`elif command -v wget >/dev/null 2>&1;then wget -q` + nc + ` -T 120 --header "Authorization: Bearer $T" -O "$2" "$U/$1";` +
			`else echo "iron launcher: the image needs curl or wget to fetch the task $1" >&2;exit 127;fi||{ echo "iron launcher: could not fetch the task $1" >&2;exit 75;};};`)
	}
	part := func(name, file, content string, inline bool) {
		switch {
		case !inline:
			w(`g ` + name + ` "$` + file + `";`)
		case content == "":
			w(`: >"$` + file + `";`)
		default:
			w(`printf %s ` + shellQuote(content) + ` >"$` + file + `";`)
		}
	}
	part("payload", "PAYLOAD_FILE", l.Payload, inlinePayload)
	part("config", "CONFIG_FILE", l.Config, inlineConfig)
	if !inlinePayload || !inlineConfig {
		w("unset U T;")
	}
	w(`exec /bin/sh -c ` + shellQuote(l.UserScript) + ` sh -payload "$PAYLOAD_FILE" -config "$CONFIG_FILE" -id "$TASK_ID" -d "$TASK_DIR"`)
	return b.String()
}

// userScript is the worker's /bin/sh -c script, as the local backend builds it: the
// code's command with the IronWorker arguments appended as "$@", or for a zip code
// without a command its file_name (default __runner__.sh), run with sh when it ends in
// .sh and directly otherwise.
func userScript(spec backend.Spec) (string, error) {
	if cmd := strings.TrimRight(spec.Command, " \t\r\n;"); cmd != "" {
		return cmd + ` "$@"`, nil
	}
	if spec.Archive == nil {
		return "", fmt.Errorf("%w: code %q rev %d is an image without a command; CF runs tasks with /bin/sh -c and ignores the image's ENTRYPOINT and CMD, so the code needs an explicit command",
			backend.ErrBadCode, spec.CodeName, spec.CodeRev)
	}
	name := spec.FileName
	if name == "" {
		name = legacyEntry
	}
	rel := path.Clean(strings.ReplaceAll(name, `\`, "/"))
	if rel == "." || strings.HasPrefix(rel, "../") || rel == ".." || strings.HasPrefix(rel, "/") {
		return "", fmt.Errorf("%w: code %q rev %d: file_name %q is not a file inside the package", backend.ErrBadCode, spec.CodeName, spec.CodeRev, name)
	}
	if strings.HasSuffix(rel, ".sh") {
		return "exec sh " + shellQuote(rel) + ` "$@"`, nil
	}
	return "exec ./" + shellQuote(rel) + ` "$@"`, nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
