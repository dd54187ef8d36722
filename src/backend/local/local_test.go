package local_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"hash/crc32"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/backend/local"
)

const grace = 300 * time.Millisecond

var _ = Describe("local backend", func() {
	var (
		base string // test temp dir; the work root is base/work
		root string
		cfg  local.Config
		b    *local.Backend
		sink *recSink
		ctx  context.Context
	)

	newBackend := func() *local.Backend {
		bk, err := local.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		return bk
	}

	BeforeEach(func() {
		base = GinkgoT().TempDir()
		root = filepath.Join(base, "work")
		cfg = local.Config{WorkRoot: root, KillGrace: grace}
		sink = &recSink{}
		ctx = context.Background()
	})
	JustBeforeEach(func() {
		b = newBackend()
	})

	spec := func(command string, files map[string]string) backend.Spec {
		return backend.Spec{
			TaskID:   "5f3e1c2a9b8d7e6f5a4b3c2d",
			CodeName: "hello",
			CodeRev:  3,
			Command:  command,
			Archive:  zipArchive(zipOf(files)),
		}
	}
	run := func(s backend.Spec) backend.Result {
		ref, err := b.Start(ctx, s, sink)
		Expect(err).NotTo(HaveOccurred())
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		res, err := b.Wait(wctx, ref)
		Expect(err).NotTo(HaveOccurred())
		return res
	}
	taskDirs := func() []string {
		ents, err := os.ReadDir(root)
		Expect(err).NotTo(HaveOccurred())
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}

	Describe("what the worker receives", func() {
		const worker = `echo "args: $*"
echo "argc: $#"
echo "pwd: $(pwd)"
echo "TASK_ID=$TASK_ID"
echo "TASK_DIR=$TASK_DIR"
echo "PAYLOAD_FILE=$PAYLOAD_FILE"
echo "CONFIG_FILE=$CONFIG_FILE"
echo "HOME=$HOME"
echo "GREETING=$GREETING"
echo "payload: $(cat "$PAYLOAD_FILE")"
echo "config: $(cat "$CONFIG_FILE")"
echo "mode: $(stat -c %a "$TASK_DIR")"
echo "data: $(cat data/file.txt)"
`
		It("gets payload, config, task id and dir as files, env and -payload/-config/-id/-d arguments", func() {
			s := spec("sh worker.sh", map[string]string{"worker.sh": worker, "data/file.txt": "from the zip"})
			s.Payload = `{"name":"iron"}`
			s.Config = `{"key":"secret"}`
			s.EnvVars = map[string]string{"GREETING": "hi there", "TASK_ID": "spoofed"}
			res := run(s)
			Expect(res.Success()).To(BeTrue(), "stderr: %s", sink.Err())
			Expect(res.Msg).To(BeEmpty())

			out := sink.Out()
			dir := field(out, "TASK_DIR=")
			Expect(filepath.Dir(dir)).To(Equal(root))
			Expect(filepath.Base(dir)).To(MatchRegexp(`^5f3e1c2a9b8d7e6f5a4b3c2d-[0-9a-f]{12}$`))
			Expect(field(out, "args: ")).To(Equal("-payload " + dir + "/__payload__ -config " + dir + "/__config__ -id 5f3e1c2a9b8d7e6f5a4b3c2d -d " + dir))
			Expect(field(out, "argc: ")).To(Equal("8"))
			Expect(field(out, "pwd: ")).To(Equal(dir))
			Expect(field(out, "TASK_ID=")).To(Equal("5f3e1c2a9b8d7e6f5a4b3c2d"), "env_vars must not override TASK_ID")
			Expect(field(out, "PAYLOAD_FILE=")).To(Equal(dir + "/__payload__"))
			Expect(field(out, "CONFIG_FILE=")).To(Equal(dir + "/__config__"))
			Expect(field(out, "HOME=")).To(Equal(dir))
			Expect(field(out, "GREETING=")).To(Equal("hi there"))
			Expect(field(out, "payload: ")).To(Equal(`{"name":"iron"}`))
			Expect(field(out, "config: ")).To(Equal(`{"key":"secret"}`))
			Expect(field(out, "mode: ")).To(Equal("700"))
			Expect(field(out, "data: ")).To(Equal("from the zip"))

			Expect(dir).NotTo(BeADirectory(), "the task directory is removed after the task")
			Expect(taskDirs()).To(BeEmpty())
		})

		It("appends the arguments after the command's own arguments, whatever its quoting", func() {
			res := run(spec(`sh worker.sh "two words" 'it''s';`+"\n", map[string]string{"worker.sh": worker}))
			Expect(res.Success()).To(BeTrue(), "stderr: %s", sink.Err())
			out := sink.Out()
			dir := field(out, "TASK_DIR=")
			Expect(field(out, "argc: ")).To(Equal("10"))
			Expect(field(out, "args: ")).To(Equal("two words its -payload " + dir + "/__payload__ -config " + dir + "/__config__ -id 5f3e1c2a9b8d7e6f5a4b3c2d -d " + dir))
		})

		It("runs a legacy __runner__.sh when the code has no command", func() {
			runner := `root() {
  while [ $# -gt 1 ]; do
    if [ "$1" = "-d" ]; then printf "%s" "$2"; break; fi
    shift
  done
}
cd "$(root "$@")"
echo "legacy: $*"
echo "cwd: $(pwd)"
`
			s := spec("", map[string]string{"__runner__.sh": runner})
			s.FileName = "__runner__.sh"
			res := run(s)
			Expect(res.Success()).To(BeTrue(), "stderr: %s", sink.Err())
			cwd := field(sink.Out(), "cwd: ")
			Expect(filepath.Dir(cwd)).To(Equal(root))
			Expect(field(sink.Out(), "legacy: ")).To(Equal("-payload " + cwd + "/__payload__ -config " + cwd + "/__config__ -id 5f3e1c2a9b8d7e6f5a4b3c2d -d " + cwd))
		})

		It("refuses a code with neither command nor entry file", func() {
			_, err := b.Start(ctx, spec("", map[string]string{"x.txt": "x"}), sink)
			Expect(err).To(MatchError(backend.ErrBadCode))
			Expect(err.Error()).To(ContainSubstring("no command"))
			Expect(taskDirs()).To(BeEmpty())
		})

		It("refuses an image-only code with a clear error", func() {
			s := spec("", nil)
			s.Archive = nil
			s.Image = "iron/hello:latest"
			_, err := b.Start(ctx, s, sink)
			Expect(err).To(MatchError(backend.ErrUnsupportedCode))
			Expect(err.Error()).To(And(ContainSubstring("iron/hello:latest"), ContainSubstring("zip"), ContainSubstring("diego")))
			Expect(taskDirs()).To(BeEmpty())
		})

		It("keeps the directory when configured to", func() {
			cfg.KeepDirs = true
			b = newBackend()
			run(spec("echo kept > mark.txt", nil))
			Expect(taskDirs()).To(HaveLen(1))
			Expect(filepath.Join(root, taskDirs()[0], "mark.txt")).To(BeARegularFile())
		})
	})

	Describe("exit and logs", func() {
		It("reports a failing exit with the last stderr line as msg", func() {
			res := run(spec(`echo out; echo "first problem" >&2; echo "  " >&2; echo "final problem" >&2; echo >&2; exit 1`, nil))
			Expect(res.ExitCode).To(Equal(1))
			Expect(res.Success()).To(BeFalse())
			Expect(res.LastStderrLine).To(Equal("final problem"))
			Expect(res.Msg).To(Equal("final problem"))
			Expect(sink.Out()).To(Equal("out\n"))
			Expect(sink.Err()).To(ContainSubstring("first problem\n"))
		})

		It("takes a last stderr line without newline, and describes a silent failure", func() {
			res := run(spec(`printf 'no newline' >&2; exit 2`, nil))
			Expect(res.ExitCode).To(Equal(2))
			Expect(res.LastStderrLine).To(Equal("no newline"))

			res = run(spec(`exit 7`, nil))
			Expect(res.ExitCode).To(Equal(7))
			Expect(res.Msg).To(Equal("worker exited with status 7"))
		})

		It("streams output while the task runs", func() {
			ref, err := b.Start(ctx, spec(`echo "dir: $TASK_DIR"; while [ ! -f "$TASK_DIR/go" ]; do sleep 0.05; done; echo finished; true`, nil), sink)
			Expect(err).NotTo(HaveOccurred())
			Eventually(sink.Out, "5s", "20ms").Should(ContainSubstring("dir: "))
			st, err := b.Status(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.Phase).To(Equal(backend.Running), "the sink got output before the process exited")
			Expect(sink.Out()).NotTo(ContainSubstring("finished"))

			Expect(os.WriteFile(filepath.Join(field(sink.Out(), "dir: "), "go"), nil, 0o600)).To(Succeed())
			res, err := b.Wait(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Success()).To(BeTrue())
			Expect(sink.Out()).To(HaveSuffix("finished\n"))
		})

		It("bounds the log and marks the truncation once, still tracking stderr", func() {
			cfg.MaxLogBytes = 1000
			b = newBackend()
			res := run(spec(`i=0; while [ $i -lt 200 ]; do echo "line $i 0123456789012345678901234567890123456789"; i=$((i+1)); done; echo "the real error" >&2; exit 3`, nil))
			Expect(res.ExitCode).To(Equal(3))
			Expect(res.LastStderrLine).To(Equal("the real error"))
			all := sink.All()
			Expect(strings.Count(all, "[log truncated after 1000 bytes]")).To(Equal(1))
			before, _, found := strings.Cut(all, "\n[log truncated after 1000 bytes]\n")
			Expect(found).To(BeTrue(), "marker on a line of its own: %q", all)
			Expect(before).To(HaveLen(1000))
			Expect(all).To(HaveSuffix("[log truncated after 1000 bytes]\n"))
		})
	})

	Describe("stopping", func() {
		const family = `sleep 1000 &
echo "child: $!"
echo "leader: $$"
wait
`
		pids := func() (int, int) {
			Eventually(sink.Out, "5s", "20ms").Should(ContainSubstring("leader: "))
			return pidField(sink.Out(), "leader: "), pidField(sink.Out(), "child: ")
		}

		It("Cancel kills the whole process group", func() {
			ref, err := b.Start(ctx, spec("sh worker.sh", map[string]string{"worker.sh": family}), sink)
			Expect(err).NotTo(HaveOccurred())
			leader, child := pids()
			Expect(alive(leader)).To(BeTrue())
			Expect(alive(child)).To(BeTrue())

			Expect(b.Cancel(ctx, ref)).To(Succeed())
			Eventually(func() bool { return alive(leader) || alive(child) }, "2s", "20ms").Should(BeFalse())
			res, err := b.Wait(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Cancelled).To(BeTrue())
			Expect(res.Success()).To(BeFalse())
			Expect(res.Msg).To(Equal("task cancelled"))
			Expect(b.Cancel(ctx, ref)).To(Succeed(), "Cancel is idempotent")
			Expect(taskDirs()).To(BeEmpty())
		})

		It("Cancel escalates to SIGKILL after the grace period when SIGTERM is ignored", func() {
			ref, err := b.Start(ctx, spec("trap '' TERM; sh worker.sh", map[string]string{"worker.sh": family}), sink)
			Expect(err).NotTo(HaveOccurred())
			leader, child := pids()
			t0 := time.Now()
			Expect(b.Cancel(ctx, ref)).To(Succeed())
			Expect(time.Since(t0)).To(BeNumerically(">=", grace))
			Eventually(func() bool { return alive(leader) || alive(child) }, "2s", "20ms").Should(BeFalse())
			res, err := b.Wait(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Cancelled).To(BeTrue())
		})

		It("the task's timeout kills it likewise", func() {
			s := spec("sh worker.sh", map[string]string{"worker.sh": family})
			s.Timeout = 400 * time.Millisecond
			ref, err := b.Start(ctx, s, sink)
			Expect(err).NotTo(HaveOccurred())
			leader, child := pids()
			res, err := b.Wait(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.TimedOut).To(BeTrue())
			Expect(res.Cancelled).To(BeFalse())
			Expect(res.Msg).To(Equal("task timed out after 400ms"))
			Eventually(func() bool { return alive(leader) || alive(child) }, "2s", "20ms").Should(BeFalse())
		})

		It("kills what the main process leaves behind, also outside its process group", func() {
			t0 := time.Now()
			res := run(spec(`sleep 1000 & echo "child: $!"; setsid sleep 1001 & echo "escaped: $!"; echo done`, nil))
			Expect(res.Success()).To(BeTrue())
			Expect(time.Since(t0)).To(BeNumerically("<", 5*time.Second))
			child, escaped := pidField(sink.Out(), "child: "), pidField(sink.Out(), "escaped: ")
			Eventually(func() bool { return alive(child) || alive(escaped) }, "2s", "20ms").Should(BeFalse())
		})

		It("keeps running when Start's or Wait's context ends: only Cancel stops a task", func() {
			sctx, cancel := context.WithCancel(ctx)
			ref, err := b.Start(sctx, spec("sh worker.sh", map[string]string{"worker.sh": family}), sink)
			Expect(err).NotTo(HaveOccurred())
			cancel()
			leader, _ := pids()

			wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer wcancel()
			_, err = b.Wait(wctx, ref)
			Expect(err).To(MatchError(context.DeadlineExceeded))
			Expect(alive(leader)).To(BeTrue())
			st, err := b.Status(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.Phase).To(Equal(backend.Running))
			Expect(b.Cancel(ctx, ref)).To(Succeed())
		})
	})

	Describe("unsafe code packages", func() {
		// outside lists every path under base that is not the work root, to prove that
		// nothing was written next to it.
		outside := func() []string {
			var found []string
			Expect(filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
				if p == root {
					return filepath.SkipDir
				}
				if p != base {
					found = append(found, p)
				}
				return err
			})).To(Succeed())
			return found
		}
		startZip := func(z []byte) error {
			s := spec("echo should not run", nil)
			s.Archive = zipArchive(z)
			_, err := b.Start(ctx, s, sink)
			return err
		}
		rawZip := func(add func(zw *zip.Writer)) []byte {
			var buf bytes.Buffer
			zw := zip.NewWriter(&buf)
			add(zw)
			Expect(zw.Close()).To(Succeed())
			return buf.Bytes()
		}

		DescribeTable("refuses entries that escape the task directory",
			func(name string) {
				err := startZip(zipOf(map[string]string{"ok.txt": "fine", name: "evil"}))
				Expect(err).To(MatchError(backend.ErrBadCode))
				Expect(err.Error()).To(ContainSubstring(strconv.Quote(name)))
				Expect(outside()).To(BeEmpty())
				Expect(taskDirs()).To(BeEmpty())
				Expect(sink.All()).To(BeEmpty())
			},
			Entry("parent dir", "../evil.txt"),
			Entry("deep parent dir", "a/../../evil.txt"),
			Entry("absolute", "/tmp/evil-local-backend.txt"),
			Entry("windows separators", `..\evil.txt`),
		)

		It("refuses symlinks", func() {
			z := rawZip(func(zw *zip.Writer) {
				h := &zip.FileHeader{Name: "link"}
				h.SetMode(fs.ModeSymlink | 0o777)
				w, err := zw.CreateHeader(h)
				Expect(err).NotTo(HaveOccurred())
				w.Write([]byte(base))
				w, err = zw.Create("link/evil.txt")
				Expect(err).NotTo(HaveOccurred())
				w.Write([]byte("evil"))
			})
			err := startZip(z)
			Expect(err).To(MatchError(backend.ErrBadCode))
			Expect(err.Error()).To(ContainSubstring(`"link" is a symbolic link`))
			Expect(outside()).To(BeEmpty())
			Expect(taskDirs()).To(BeEmpty())
		})

		It("refuses a zip bomb by its uncompressed size", func() {
			cfg.MaxUnpackedBytes = 1 << 20
			b = newBackend()
			z := rawZip(func(zw *zip.Writer) {
				w, err := zw.Create("zeros.bin")
				Expect(err).NotTo(HaveOccurred())
				w.Write(make([]byte, 20<<20))
			})
			Expect(len(z)).To(BeNumerically("<", 100<<10))
			err := startZip(z)
			Expect(err).To(MatchError(backend.ErrBadCode))
			Expect(err.Error()).To(ContainSubstring("more than the limit of 1048576 bytes"))
			Expect(taskDirs()).To(BeEmpty())
		})

		It("refuses a zip whose headers understate the size", func() {
			cfg.MaxUnpackedBytes = 1 << 20
			b = newBackend()
			data := make([]byte, 5<<20)
			var comp bytes.Buffer
			fw, _ := flate.NewWriter(&comp, flate.BestCompression)
			fw.Write(data)
			fw.Close()
			z := rawZip(func(zw *zip.Writer) {
				w, err := zw.CreateRaw(&zip.FileHeader{
					Name: "liar.bin", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(data),
					CompressedSize64: uint64(comp.Len()), UncompressedSize64: 10,
				})
				Expect(err).NotTo(HaveOccurred())
				w.Write(comp.Bytes())
			})
			err := startZip(z)
			Expect(err).To(MatchError(backend.ErrBadCode))
			Expect(taskDirs()).To(BeEmpty())
		})

		It("refuses an entry whose compressed data is corrupt, as a bad code", func() {
			z := rawZip(func(zw *zip.Writer) {
				w, err := zw.CreateRaw(&zip.FileHeader{
					Name: "garbage.bin", Method: zip.Deflate, CRC32: 1, CompressedSize64: 8, UncompressedSize64: 100,
				})
				Expect(err).NotTo(HaveOccurred())
				w.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			})
			err := startZip(z)
			Expect(err).To(MatchError(backend.ErrBadCode))
			Expect(taskDirs()).To(BeEmpty())
		})

		It("refuses too many files", func() {
			cfg.MaxFiles = 10
			b = newBackend()
			files := map[string]string{}
			for i := 0; i < 11; i++ {
				files["f"+strconv.Itoa(i)] = "x"
			}
			err := startZip(zipOf(files))
			Expect(err).To(MatchError(backend.ErrBadCode))
			Expect(err.Error()).To(ContainSubstring("11 entries, more than the limit of 10"))
		})

		It("refuses something that is not a zip", func() {
			err := startZip([]byte("this is not a zip"))
			Expect(err).To(MatchError(backend.ErrBadCode))
			Expect(err.Error()).To(ContainSubstring("not a valid zip"))
		})
	})

	Describe("status and adoption", func() {
		withParam := func(ref backend.Ref, key, value string) backend.Ref {
			v, err := url.ParseQuery(strings.TrimPrefix(string(ref), "local:"))
			Expect(err).NotTo(HaveOccurred())
			v.Set(key, value)
			return backend.Ref("local:" + v.Encode())
		}

		It("answers Running, then Exited, then Gone once the result was collected", func() {
			ref, err := b.Start(ctx, spec(`while [ ! -f go ]; do sleep 0.05; done; echo "bye" >&2; exit 4`, nil), sink)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(ref)).To(HavePrefix("local:"))
			st, err := b.Status(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.Phase).To(Equal(backend.Running))

			v, _ := url.ParseQuery(strings.TrimPrefix(string(ref), "local:"))
			Expect(os.WriteFile(filepath.Join(v.Get("dir"), "go"), nil, 0o600)).To(Succeed())
			Eventually(func() backend.Phase {
				st, _ := b.Status(ctx, ref)
				return st.Phase
			}, "5s", "20ms").Should(Equal(backend.Exited))
			st, _ = b.Status(ctx, ref)
			Expect(st.Result.ExitCode).To(Equal(4))
			Expect(st.Result.Msg).To(Equal("bye"))

			_, err = b.Wait(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			st, err = b.Status(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.Phase).To(Equal(backend.Gone))
			Expect(st.Detail).To(ContainSubstring("no longer exists"))
			_, err = b.Wait(ctx, ref)
			Expect(err).To(MatchError(backend.ErrGone))
			Expect(b.Cancel(ctx, ref)).To(Succeed())
		})

		It("does not take a reused pid or another machine's pid for the task", func() {
			ref, err := b.Start(ctx, spec(`sleep 1000`, nil), sink)
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(func() { b.Cancel(context.Background(), ref) })
			v, _ := url.ParseQuery(strings.TrimPrefix(string(ref), "local:"))
			start, _ := strconv.ParseUint(v.Get("start"), 10, 64)

			st, err := b.Status(ctx, withParam(ref, "start", strconv.FormatUint(start+1, 10)))
			Expect(err).NotTo(HaveOccurred())
			Expect(st.Phase).To(Equal(backend.Gone))
			Expect(st.Detail).To(ContainSubstring("pid reused"))

			st, err = b.Status(ctx, withParam(ref, "boot", "00000000-0000-0000-0000-000000000000"))
			Expect(err).NotTo(HaveOccurred())
			Expect(st.Phase).To(Equal(backend.Gone))
			Expect(st.Detail).To(ContainSubstring("another machine"))
		})

		It("rejects references it cannot have made", func() {
			_, err := b.Status(ctx, "diego:1234-abcd")
			Expect(err).To(MatchError(ContainSubstring("not a local task reference")))
			_, err = b.Status(ctx, "local:pid=x")
			Expect(err).To(MatchError(ContainSubstring("malformed")))
			Expect(b.Cancel(ctx, withParam(withParam(withParam(withParam("local:", "pid", "99999999"), "start", "1"), "boot", readBootID()), "dir", "/etc"))).
				To(MatchError(ContainSubstring("outside the work root")))
		})

		It("lets a restarted runner see a live task as Running but not adopt it, and cancel it", func() {
			ref, err := b.Start(ctx, spec("sh worker.sh", map[string]string{"worker.sh": "sleep 1000 &\necho \"child: $!\"\necho \"leader: $$\"\nwait\n"}), sink)
			Expect(err).NotTo(HaveOccurred())
			Eventually(sink.Out, "5s", "20ms").Should(ContainSubstring("leader: "))
			child := pidField(sink.Out(), "child: ")

			restarted := newBackend()
			st, err := restarted.Status(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.Phase).To(Equal(backend.Running))
			Expect(restarted.Attach(ctx, ref, &recSink{})).To(MatchError(backend.ErrNotAdoptable))
			_, err = restarted.Wait(ctx, ref)
			Expect(err).To(MatchError(backend.ErrNotAdoptable))

			Expect(restarted.Cancel(ctx, ref)).To(Succeed())
			Eventually(func() bool { return alive(child) }, "2s", "20ms").Should(BeFalse())
			res, err := b.Wait(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Signal).To(Equal("SIGTERM"))
			st, err = restarted.Status(ctx, ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.Phase).To(Equal(backend.Gone))
		})

		It("after a runner crash (kill -9) the task is Gone and Cancel clears its leftovers", func() {
			pidFile := filepath.Join(base, "child.pid")
			helper := exec.Command(os.Args[0], "-test.run=^TestLocal$")
			helper.Env = append(os.Environ(), crashHelperEnv+"="+root, "CHILD_PID_FILE="+pidFile)
			helper.Stderr = GinkgoWriter
			out, err := helper.StdoutPipe()
			Expect(err).NotTo(HaveOccurred())
			Expect(helper.Start()).To(Succeed())
			DeferCleanup(func() { helper.Process.Kill(); helper.Wait() })
			line, err := bufio.NewReader(out).ReadString('\n')
			Expect(err).NotTo(HaveOccurred())
			Expect(line).To(HavePrefix("REF "))
			ref := backend.Ref(strings.TrimSpace(strings.TrimPrefix(line, "REF ")))

			Expect(b.Status(ctx, ref)).To(HaveField("Phase", backend.Running))
			var child int
			Eventually(func() error {
				raw, _ := os.ReadFile(pidFile)
				child, err = strconv.Atoi(strings.TrimSpace(string(raw)))
				return err
			}, "5s", "20ms").Should(Succeed())

			Expect(helper.Process.Signal(syscall.SIGKILL)).To(Succeed())
			helper.Wait()

			Eventually(func() backend.Phase {
				st, _ := b.Status(ctx, ref)
				return st.Phase
			}, "5s", "20ms").Should(Equal(backend.Gone), "the task's main process dies with its runner")
			Expect(alive(child)).To(BeTrue(), "an orphan of the dead task is left over")
			Expect(taskDirs()).To(HaveLen(1))

			Expect(b.Cancel(ctx, ref)).To(Succeed())
			Eventually(func() bool { return alive(child) }, "2s", "20ms").Should(BeFalse())
			Expect(taskDirs()).To(BeEmpty())
		})
	})

	Describe("memory limit", func() {
		// alloc.pl MB builds a string of MB mebibytes; the IronWorker arguments follow.
		const alloc = `my $x = "a" x ($ARGV[0] * 1024 * 1024); print "survived\n";`
		BeforeEach(func() {
			probe, err := local.New(local.Config{WorkRoot: filepath.Join(GinkgoT().TempDir(), "probe")})
			Expect(err).NotTo(HaveOccurred())
			if probe.LimiterKind() == local.LimiterNone {
				Skip("no memory limiter on this machine: " + probe.Limiter())
			}
			if _, err := exec.LookPath("perl"); err != nil {
				Skip("perl is needed to allocate memory in the worker")
			}
			GinkgoWriter.Println("memory limiter:", probe.Limiter())
		})

		It("ends a task that exceeds its limit as OOM with a message saying so", func() {
			s := spec("perl alloc.pl 300", map[string]string{"alloc.pl": alloc})
			s.MemoryMB = 64
			res := run(s)
			Expect(sink.Out()).NotTo(ContainSubstring("survived"))
			Expect(res.OOM).To(BeTrue(), "exit %d, stderr %q", res.ExitCode, sink.Err())
			Expect(res.Success()).To(BeFalse())
			Expect(res.Msg).To(Equal("ERROR: WORKER RAM LIMIT EXCEEDED (64M)"))
		})

		It("lets a task within its limit (the default one) complete", func() {
			cfg.DefaultMemoryMB = 64
			b = newBackend()
			res := run(spec("perl alloc.pl 8", map[string]string{"alloc.pl": alloc}))
			Expect(res.Success()).To(BeTrue(), "stderr %q", sink.Err())
			Expect(res.OOM).To(BeFalse())
			Expect(sink.Out()).To(Equal("survived\n"))
		})
	})
})

func readBootID() string {
	raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	Expect(err).NotTo(HaveOccurred())
	return strings.TrimSpace(string(raw))
}
