package diego_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/backend/diego"
	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
)

var _ = Describe("diego backend", func() {
	var e *env
	ctx := context.Background()

	BeforeEach(func() {
		e = newEnv(fakecf.Options{})
	})

	tasksNamed := func(name string) []fakecf.TaskInfo {
		var out []fakecf.TaskInfo
		for _, t := range e.fake.Tasks() {
			if t.Name == name {
				out = append(out, t)
			}
		}
		return out
	}

	runsToCompletion := func(spec backend.Spec, lifecycle string) {
		payload := mixedPayload(64<<10 - 64)
		spec.Payload = payload
		spec.Config = `{"db":"postgres://x"}` + "\n" + mixedPayload(2000)
		e.input.prepare(&spec)
		s := &sink{}
		ref, err := e.b.Start(ctx, spec, s)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(ref)).To(HavePrefix("diego:"))

		res := wait(e.b, ref)
		Expect(res.Success()).To(BeTrue(), "%+v\nstdout: %s\nstderr: %s", res, s.out(), s.err())
		Expect(e.outFile(spec.TaskID, "payload")).To(Equal(payload))
		Expect(e.outFile(spec.TaskID, "config")).To(Equal(spec.Config))
		Expect(e.input.got()).To(ConsistOf(spec.TaskID+"/payload", spec.TaskID+"/config"))
		Expect(s.out()).To(ContainSubstring("args: -payload "))
		Expect(s.out()).To(ContainSubstring("env CODE_VAR=" + spec.EnvVars["CODE_VAR"] + "\n"))
		Expect(s.out()).To(HaveSuffix("done\n"))
		Expect(s.out()).NotTo(ContainSubstring("Creating container")) // CELL lines are not the task's
		Expect(s.err()).To(Equal("to stderr\n"))
		Expect(res.LastStderrLine).To(Equal("to stderr"))

		tasks := tasksNamed("iw-" + spec.TaskID)
		Expect(tasks).To(HaveLen(1))
		Expect(tasks[0].State).To(Equal("SUCCEEDED"))
		Expect(tasks[0].Labels).To(HaveKeyWithValue("ironworker.io/task-id", spec.TaskID))
		Expect(len(tasks[0].Command)).To(BeNumerically("<=", diego.CommandMaxLength))
		Expect(tasks[0].Command).NotTo(ContainSubstring("🚀")) // the big payload was fetched, not inlined
		apps := e.fake.Apps()
		Expect(apps).To(HaveLen(1))
		Expect(apps[0].Lifecycle).To(Equal(lifecycle))
		Expect(apps[0].Env).To(HaveKeyWithValue("CODE_VAR", spec.EnvVars["CODE_VAR"]))
	}

	It("runs a zip code to completion with a payload near 64 KiB delivered intact", func() {
		runsToCompletion(zipSpec("zip1"), "buildpack")
		Expect(e.fake.Apps()[0].Buildpacks).To(Equal([]string{"binary_buildpack"}))
	})

	It("runs a docker code to completion with a payload near 64 KiB delivered intact", func() {
		runsToCompletion(dockerSpec("img1"), "docker")
		Expect(e.fake.Apps()[0].Image).To(Equal("registry.example.com/iron/worker:1"))
	})

	It("inlines a small payload and config, sending exactly the launcher command", func() {
		spec := dockerSpec("small1")
		spec.Payload = `{"n": 1, "s": "it's"}`
		spec.Config = "a: b\n"
		e.input.prepare(&spec)
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())
		Expect(e.input.got()).To(BeEmpty())
		Expect(e.outFile("small1", "payload")).To(Equal(spec.Payload))
		Expect(e.outFile("small1", "config")).To(Equal(spec.Config))

		want := `umask 077;TASK_ID='small1';TASK_DIR="${TMPDIR:-/tmp}/iron-$TASK_ID";mkdir -p "$TASK_DIR"&&cd "$TASK_DIR"||exit 70;` +
			`PAYLOAD_FILE="$TASK_DIR/__payload__";CONFIG_FILE="$TASK_DIR/__config__";export TASK_ID TASK_DIR PAYLOAD_FILE CONFIG_FILE;` +
			`printf %s '{"n": 1, "s": "it'\''s"}' >"$PAYLOAD_FILE";printf %s 'a: b` + "\n" + `' >"$CONFIG_FILE";` +
			`exec /bin/sh -c 'sh "$OUT_DIR/worker.sh" "$@"' sh -payload "$PAYLOAD_FILE" -config "$CONFIG_FILE" -id "$TASK_ID" -d "$TASK_DIR"`
		tasks := tasksNamed("iw-small1")
		Expect(tasks).To(HaveLen(1))
		Expect(tasks[0].Command).To(Equal(want))
		Expect(len(tasks[0].Command)).To(Equal(450))
	})

	It("sends exactly the fetching launcher command for a big payload", func() {
		spec := zipSpec("big1")
		spec.Payload = mixedPayload(64 << 10)
		e.input.prepare(&spec)
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())
		Expect(e.outFile("big1", "payload")).To(Equal(spec.Payload))
		Expect(e.outFile("big1", "config")).To(Equal(""))
		Expect(e.input.got()).To(Equal([]string{"big1/payload"}))

		want := `umask 077;TASK_ID='big1';TASK_DIR=$(pwd);` +
			`PAYLOAD_FILE="$TASK_DIR/__payload__";CONFIG_FILE="$TASK_DIR/__config__";export TASK_ID TASK_DIR PAYLOAD_FILE CONFIG_FILE;` +
			`U='` + spec.InputURL + `';T='tok-big1-0123456789abcdef';` +
			`g(){ if command -v curl >/dev/null 2>&1;then curl -fsS --retry 5 --connect-timeout 10 -m 120 -H "Authorization: Bearer $T" -o "$2" "$U/$1";` +
			`elif command -v wget >/dev/null 2>&1;then wget -q -T 120 --header "Authorization: Bearer $T" -O "$2" "$U/$1";` +
			`else echo "iron launcher: the image needs curl or wget to fetch the task $1" >&2;exit 127;fi||{ echo "iron launcher: could not fetch the task $1" >&2;exit 75;};};` +
			`g payload "$PAYLOAD_FILE";: >"$CONFIG_FILE";unset U T;` +
			`exec /bin/sh -c 'sh worker.sh "$@"' sh -payload "$PAYLOAD_FILE" -config "$CONFIG_FILE" -id "$TASK_ID" -d "$TASK_DIR"`
		tasks := tasksNamed("iw-big1")
		Expect(tasks).To(HaveLen(1))
		Expect(tasks[0].Command).To(Equal(want))
		Expect(len(tasks[0].Command)).To(Equal(len(want)))
		Expect(len(want)).To(BeNumerically("<", 1100))
	})

	It("ends a failing task with CF's failure reason and the exit status", func() {
		spec := zipSpec("fail1")
		spec.EnvVars = map[string]string{"FAIL": "3"}
		e.input.prepare(&spec)
		s := &sink{}
		ref, err := e.b.Start(ctx, spec, s)
		Expect(err).NotTo(HaveOccurred())
		res := wait(e.b, ref)
		Expect(res.Success()).To(BeFalse())
		Expect(res.ExitCode).To(Equal(3))
		Expect(res.Msg).To(Equal("APP/TASK/iw-fail1: Exited with status 3"))
		Expect(res.LastStderrLine).To(Equal("failing with 3"))
		Expect(res.Cancelled || res.TimedOut).To(BeFalse())
		Expect(s.err()).To(Equal("to stderr\nfailing with 3\n"))
	})

	It("cancels the CF task at the timeout", func() {
		spec := zipSpec("slow1")
		spec.EnvVars = map[string]string{"SLEEP": "30"}
		spec.Timeout = 700 * time.Millisecond
		e.input.prepare(&spec)
		start := time.Now()
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		res := wait(e.b, ref)
		Expect(time.Since(start)).To(BeNumerically("<", 10*time.Second))
		Expect(res.TimedOut).To(BeTrue())
		Expect(res.Success()).To(BeFalse())
		tasks := tasksNamed("iw-slow1")
		Expect(tasks).To(HaveLen(1))
		Expect(tasks[0].Cancelled).To(BeTrue())
		Expect(tasks[0].State).To(Equal("FAILED"))
		Expect(e.fake.CountRequests(http.MethodPost, "/v3/tasks/"+tasks[0].GUID+"/actions/cancel", "")).To(Equal(1))
	})

	It("cancels the CF task on Cancel", func() {
		spec := dockerSpec("cancel1")
		spec.EnvVars = map[string]string{"SLEEP": "30"}
		e.input.prepare(&spec)
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() string { return tasksNamed("iw-cancel1")[0].State }).Should(Equal("RUNNING"))
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		Expect(e.b.Cancel(cctx, ref)).To(Succeed())
		res := wait(e.b, ref)
		Expect(res.Cancelled).To(BeTrue())
		Expect(res.Msg).To(Equal("task was cancelled"))
		Expect(tasksNamed("iw-cancel1")[0].Cancelled).To(BeTrue())
		Expect(e.b.Cancel(cctx, ref)).To(Succeed()) // idempotent
		st, err := e.b.Status(cctx, ref)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Phase).To(Equal(backend.Exited))
		Expect(st.Result.Cancelled).To(BeTrue())
	})

	It("adopts a running task by name from a second backend instance; one CF task exists", func() {
		spec := zipSpec("adopt1")
		spec.EnvVars = map[string]string{"SLEEP": "2"}
		spec.Payload = mixedPayload(10000)
		e.input.prepare(&spec)
		first, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		e.b.Close() // the first runner dies; its CF task runs on

		other := e.newBackend(diego.NewMemoryAppCache())
		st, err := other.Status(ctx, first)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Phase).To(Equal(backend.Running))

		before := e.fake.Count(http.MethodPost, "/v3/apps")
		s := &sink{}
		ref, err := other.Start(ctx, spec, s) // the lease moved: the new runner starts it again
		Expect(err).NotTo(HaveOccurred())
		Expect(ref).To(Equal(first))
		Expect(e.fake.Count(http.MethodPost, "/v3/apps")).To(Equal(before)) // no app made either
		res := wait(other, ref)
		Expect(res.Success()).To(BeTrue())
		Expect(s.out()).To(HaveSuffix("done\n"))
		Expect(strings.Count(s.out(), "done\n")).To(Equal(1))
		Expect(tasksNamed("iw-adopt1")).To(HaveLen(1))
		Expect(e.outFile("adopt1", "payload")).To(Equal(spec.Payload))
	})

	It("resumes the log at a cursor after a takeover, without duplicates", func() {
		spec := dockerSpec("cursor1")
		spec.Command = "echo one; echo two >&2; sleep 3; echo three; true"
		e.input.prepare(&spec)
		first := &cursorSink{}
		ref, err := e.b.Start(ctx, spec, first)
		Expect(err).NotTo(HaveOccurred())
		Eventually(first.err, 5*time.Second).Should(Equal("two\n"))
		Eventually(first.last).ShouldNot(BeEmpty())
		Expect(first.out()).To(Equal("one\n"))
		e.b.Close()

		other := e.newBackend(nil)
		second := &cursorSink{}
		Expect(other.AttachAt(ctx, ref, second, first.last())).To(Succeed())
		Expect(wait(other, ref).Success()).To(BeTrue())
		Expect(second.out()).To(Equal("three\n"))
		Expect(second.err()).To(BeEmpty())
		Expect(other.AttachAt(ctx, ref, second, "nonsense")).To(HaveOccurred())
	})

	It("pages through Log Cache and delivers every line once, in order", func() {
		spec := dockerSpec("many1")
		spec.Command = `i=0; while [ $i -lt 2500 ]; do echo "line $i"; i=$((i+1)); done; true`
		e.input.prepare(&spec)
		s := &sink{}
		ref, err := e.b.Start(ctx, spec, s)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())
		lines := strings.Split(strings.TrimSuffix(s.out(), "\n"), "\n")
		Expect(lines).To(HaveLen(2500))
		for i, l := range lines {
			Expect(l).To(Equal(fmt.Sprintf("line %d", i)))
		}
	})

	It("lets another instance Attach and Wait by Ref", func() {
		spec := dockerSpec("attach1")
		spec.EnvVars = map[string]string{"SLEEP": "1"}
		e.input.prepare(&spec)
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		other := e.newBackend(nil)
		s := &sink{}
		Expect(other.Attach(ctx, ref, s)).To(Succeed())
		Expect(wait(other, ref).Success()).To(BeTrue())
		Expect(s.out()).To(HaveSuffix("done\n"))
		Expect(strings.Count(s.out(), "done\n")).To(Equal(1))

		Expect(other.Attach(ctx, "diego:no-such-task/app/iw-x", s)).To(MatchError(backend.ErrGone))
		st, err := other.Status(ctx, "diego:no-such-task/app/iw-x")
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Phase).To(Equal(backend.Gone))
		_, err = other.Status(ctx, "local:whatever")
		Expect(err).To(HaveOccurred())
	})

	It("reuses the app of a code revision and polls states in batches", func() {
		first := zipSpec("reuse0")
		e.input.prepare(&first)
		ref, err := e.b.Start(ctx, first, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())

		e.fake.ResetRequests()
		var refs []backend.Ref
		for _, id := range []string{"reuse1", "reuse2", "reuse3"} {
			spec := zipSpec(id)
			spec.EnvVars = map[string]string{"SLEEP": "2"}
			e.input.prepare(&spec)
			ref, err := e.b.Start(ctx, spec, nil)
			Expect(err).NotTo(HaveOccurred())
			refs = append(refs, ref)
		}
		for _, ref := range refs {
			Expect(wait(e.b, ref).Success()).To(BeTrue())
		}
		Expect(e.fake.Apps()).To(HaveLen(1))
		// Per task: one lookup by name (adoption) and one create; polls are shared.
		perTask := map[string]int{}
		polls, together := 0, false
		for _, r := range e.fake.Requests() {
			if !strings.HasPrefix(r.Path, "/v3/") {
				continue
			}
			q, _ := url.ParseQuery(r.Query)
			switch {
			case r.Method == http.MethodGet && r.Path == "/v3/tasks" && q.Has("guids"):
				polls++
				together = together || len(strings.Split(q.Get("guids"), ",")) == 3
			case r.Method == http.MethodGet && r.Path == "/v3/tasks" && q.Has("names"):
				perTask["lookup"]++
			case r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/tasks"):
				perTask["create"]++
			default:
				perTask[r.Method+" "+r.Path]++
			}
		}
		fmt.Fprintf(GinkgoWriter, "CC requests for 3 tasks of a known code revision: %v, plus %d shared polls\n", perTask, polls)
		Expect(perTask).To(Equal(map[string]int{"lookup": 3, "create": 3}))
		Expect(together).To(BeTrue(), "no poll carried the three tasks together")
		Expect(polls).To(BeNumerically(">", 0))

		// A task on its first lease cannot have been started by anyone: one create only.
		e.fake.ResetRequests()
		spec := zipSpec("reuse4")
		spec.FirstLease = true
		e.input.prepare(&spec)
		ref, err = e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		var startReqs []string
		for _, r := range e.fake.Requests() {
			if q, _ := url.ParseQuery(r.Query); !q.Has("guids") { // polls may run meanwhile
				startReqs = append(startReqs, r.Method+" "+r.Path)
			}
		}
		Expect(startReqs).To(Equal([]string{"POST /v3/apps/" + e.fake.Apps()[0].GUID + "/tasks"}))
		Expect(wait(e.b, ref).Success()).To(BeTrue())
	})

	It("runs a project's tasks in its own space, created on demand", func() {
		spec := dockerSpec("space1")
		spec.Space = "project-abc"
		e.input.prepare(&spec)
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())
		_, spaceGUID := e.fake.CreateOrgAndSpace("ironworker", "project-abc") // finds the existing one
		Expect(e.fake.Apps()).To(HaveLen(1))
		Expect(e.fake.Apps()[0].Space).To(Equal(spaceGUID))
		Expect(e.fake.Count(http.MethodPost, "/v3/spaces")).To(Equal(1))
	})

	It("ends with one app when two runners race to make it", func() {
		other := e.newBackend(diego.NewMemoryAppCache())
		results := make(chan error, 2)
		for i, b := range []*diego.Backend{e.b, other} {
			spec := zipSpec(fmt.Sprintf("race%d", i))
			e.input.prepare(&spec)
			go func() {
				defer GinkgoRecover()
				ref, err := b.Start(ctx, spec, nil)
				if err == nil {
					Expect(wait(b, ref).Success()).To(BeTrue())
				}
				results <- err
			}()
		}
		Expect(<-results).To(Succeed())
		Expect(<-results).To(Succeed())
		Expect(e.fake.Apps()).To(HaveLen(1))
	})

	It("re-creates an app deleted behind its back", func() {
		spec := zipSpec("gone1")
		e.input.prepare(&spec)
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())
		e.fake.DeleteApp(e.fake.Apps()[0].GUID)

		spec = zipSpec("gone2")
		e.input.prepare(&spec)
		ref, err = e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())
		Expect(e.fake.Apps()).To(HaveLen(1))
		Expect(e.fake.Count(http.MethodPost, "/v3/apps")).To(BeNumerically(">=", 2))
	})

	It("fails a docker code with a message naming diego_docker when the flag is off", func() {
		e.fake.SetFeatureFlag("diego_docker", false)
		spec := dockerSpec("nodocker1")
		e.input.prepare(&spec)
		_, err := e.b.Start(ctx, spec, nil)
		Expect(err).To(MatchError(backend.ErrUnsupportedCode))
		Expect(err).To(MatchError(diego.ErrDockerDisabled))
		Expect(err.Error()).To(ContainSubstring("diego_docker"))
		Expect(e.fake.Apps()).To(BeEmpty())
	})

	It("fails a docker task clearly when diego_docker is turned off after its app was made", func() {
		spec := dockerSpec("dockerlater1")
		e.input.prepare(&spec)
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())
		e.fake.SetFeatureFlag("diego_docker", false)
		spec = dockerSpec("dockerlater2")
		e.input.prepare(&spec)
		_, err = e.b.Start(ctx, spec, nil)
		Expect(err).To(MatchError(backend.ErrUnsupportedCode))
		Expect(err.Error()).To(ContainSubstring("cf enable-feature-flag diego_docker"))
	})

	It("honours 429 Retry-After: tasks complete and no request goes early", func() {
		e.fake.ResetRequests()
		e.fake.Throttle(3, time.Second)
		spec := zipSpec("throttle1")
		e.input.prepare(&spec)
		start := time.Now()
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())
		Expect(time.Since(start)).To(BeNumerically(">=", 3*time.Second))
		throttled := 0
		for _, r := range e.fake.Requests() {
			Expect(r.Early).To(BeFalse(), "%s %s?%s sent before Retry-After", r.Method, r.Path, r.Query)
			if r.Status == http.StatusTooManyRequests {
				throttled++
			}
		}
		Expect(throttled).To(Equal(3))
	})

	It("rides out a Cloud Controller outage while starting and following tasks", func() {
		spec := zipSpec("outage1")
		spec.EnvVars = map[string]string{"SLEEP": "1"}
		e.input.prepare(&spec)
		e.fake.Outage(3) // the first calls of Start fail
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		e.fake.Outage(10) // and then polls fail for a while
		res := wait(e.b, ref)
		Expect(res.Success()).To(BeTrue())
		bad := 0
		for _, r := range e.fake.Requests() {
			if r.Status == http.StatusBadGateway {
				bad++
			}
		}
		Expect(bad).To(Equal(13))
		Expect(tasksNamed("iw-outage1")).To(HaveLen(1))
	})

	It("honours 429 from UAA's token endpoint", func() {
		e.fake.ResetRequests()
		e.fake.Throttle(2, time.Second)
		b := e.newBackend(nil) // a fresh client needs a token first
		Expect(b).NotTo(BeNil())
		tokenReqs := 0
		for _, r := range e.fake.Requests() {
			Expect(r.Early).To(BeFalse(), "%s %s sent before Retry-After", r.Method, r.Path)
			if r.Path == "/oauth/token" {
				tokenReqs++
			}
		}
		Expect(tokenReqs).To(Equal(3))
	})

	It("fetches the payload with wget when the image has no curl", func() {
		bin := GinkgoT().TempDir()
		for _, tool := range []string{"sh", "wget", "cp", "mkdir", "sleep", "cat"} {
			p, err := exec.LookPath(tool)
			Expect(err).NotTo(HaveOccurred())
			Expect(os.Symlink(p, filepath.Join(bin, tool))).To(Succeed())
		}
		e = newEnv(fakecf.Options{Env: []string{"PATH=" + bin}})
		spec := dockerSpec("wget1")
		spec.Payload = mixedPayload(60 << 10)
		spec.Config = mixedPayload(5000)
		e.input.prepare(&spec)
		s := &sink{}
		ref, err := e.b.Start(ctx, spec, s)
		Expect(err).NotTo(HaveOccurred())
		res := wait(e.b, ref)
		Expect(res.Success()).To(BeTrue(), "%+v %s", res, s.err())
		Expect(e.outFile("wget1", "payload")).To(Equal(spec.Payload))
		Expect(e.outFile("wget1", "config")).To(Equal(spec.Config))
	})

	It("fails the task clearly when the image has neither curl nor wget", func() {
		bin := GinkgoT().TempDir()
		for _, tool := range []string{"sh", "mkdir"} {
			p, err := exec.LookPath(tool)
			Expect(err).NotTo(HaveOccurred())
			Expect(os.Symlink(p, filepath.Join(bin, tool))).To(Succeed())
		}
		e = newEnv(fakecf.Options{Env: []string{"PATH=" + bin}})
		spec := dockerSpec("nofetch1")
		spec.Payload = mixedPayload(60 << 10)
		e.input.prepare(&spec)
		s := &sink{}
		ref, err := e.b.Start(ctx, spec, s)
		Expect(err).NotTo(HaveOccurred())
		res := wait(e.b, ref)
		Expect(res.ExitCode).To(Equal(127))
		Expect(res.LastStderrLine).To(Equal("iron launcher: the image needs curl or wget to fetch the task payload"))
	})

	It("refreshes its UAA token", func() {
		e = newEnv(fakecf.Options{TokenTTL: 11 * time.Second}) // the client renews 10s early
		spec := dockerSpec("token1")
		spec.EnvVars = map[string]string{"SLEEP": "2"}
		e.input.prepare(&spec)
		ref, err := e.b.Start(ctx, spec, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(wait(e.b, ref).Success()).To(BeTrue())
		Expect(e.fake.TokensIssued()).To(BeNumerically(">=", 2))
		for _, r := range e.fake.Requests() {
			Expect(r.Status).NotTo(Equal(http.StatusUnauthorized), "%s %s", r.Method, r.Path)
		}
	})

	It("refuses an image code without a command", func() {
		spec := dockerSpec("nocmd")
		spec.Command = ""
		_, err := e.b.Start(ctx, spec, nil)
		Expect(errors.Is(err, backend.ErrBadCode)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("ENTRYPOINT"))
	})
})
