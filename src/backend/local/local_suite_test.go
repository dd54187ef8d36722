package local_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/backend/local"
)

const crashHelperEnv = "LOCAL_BACKEND_CRASH_HELPER_ROOT"

func TestLocal(t *testing.T) {
	if root := os.Getenv(crashHelperEnv); root != "" {
		crashHelper(root)
		return
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "Local backend suite")
}

// crashHelper plays a runner that starts one task and is then killed -9 by the test: it
// prints the task's Ref and blocks forever.
func crashHelper(root string) {
	b, err := local.New(local.Config{WorkRoot: root})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	ref, err := b.Start(context.Background(), backend.Spec{
		TaskID:  "crashtask",
		Command: "sh worker.sh",
		EnvVars: map[string]string{"CHILD_PID_FILE": os.Getenv("CHILD_PID_FILE")},
		Archive: zipArchive(zipOf(map[string]string{
			"worker.sh": "sleep 1000 &\necho $! > \"$CHILD_PID_FILE\"\nwait\n",
		})),
	}, nil)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("REF", ref)
	select {}
}

// zipOf builds a zip of regular files.
func zipOf(files map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range files {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		h.SetMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			h.SetMode(0o755)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			panic(err)
		}
		if _, err := io.WriteString(w, content); err != nil {
			panic(err)
		}
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func zipArchive(b []byte) func(context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
}

type chunk struct {
	stream backend.Stream
	data   string
}

// recSink records what a task wrote, in order.
type recSink struct {
	mu     sync.Mutex
	chunks []chunk
}

func (s *recSink) WriteLog(stream backend.Stream, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chunks = append(s.chunks, chunk{stream, string(p)})
}

func (s *recSink) text(only backend.Stream) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, c := range s.chunks {
		if only == 0 || c.stream == only {
			b.WriteString(c.data)
		}
	}
	return b.String()
}

func (s *recSink) All() string { return s.text(0) }
func (s *recSink) Out() string { return s.text(backend.Stdout) }
func (s *recSink) Err() string { return s.text(backend.Stderr) }

// field finds "key: value" or "KEY=value" lines in worker output.
func field(out, prefix string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return v
		}
	}
	return ""
}

// alive tells whether pid is a live (not zombie) process. The container's init does not
// reap orphans, so a killed orphan can linger as a zombie: that counts as dead.
func alive(pid int) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func pidField(out, prefix string) int {
	n, err := strconv.Atoi(strings.TrimSpace(field(out, prefix)))
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), "no %q in output %q", prefix, out)
	return n
}
