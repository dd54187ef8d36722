package release_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"
)

// localDeployment is the local "deployment": from the manifest with
// use-local-backend and add-smoke-tests, render iron-api, iron-runner and smoke-tests,
// start the compiled iron-api and iron-runner from their rendered bpm configs against a
// throwaway PostgreSQL, gate on their post-start scripts, run the smoke-tests errand's
// bin/run, and drain the runner with its drain script. bin is the compiled ironworker
// package's bin/ directory (from the compile replay).
func localDeployment(bin string) {
	dbURL := throwawayDatabase()
	m, _, err := interpolate(deploymentCase{Name: "local deployment", Ops: []string{"use-local-backend.yml", "add-smoke-tests.yml"}})
	Expect(err).NotTo(HaveOccurred())

	apiPort, runnerPort := freePort(), freePort()
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	// Change the manifest itself, so that the iron-api link carries the port.
	setJobProperties(&m, "iron-api", map[string]any{
		"bind_address": "127.0.0.1", "port": apiPort, "database": map[string]any{"url": dbURL},
		"broker": map[string]any{"external_api": map[string]any{"scheme": "http", "host": "127.0.0.1", "port": apiPort}},
		"runner": map[string]any{"lease_wait": "2s"},
	})
	setJobProperties(&m, "iron-runner", map[string]any{
		// The link's address is BOSH DNS; here the API is on the loopback.
		"api_url": api, "listen_address": fmt.Sprintf("127.0.0.1:%d", runnerPort), "drain_timeout": "5s",
		"lease_wait": "2s", "backend": map[string]any{"local": map[string]any{"memory_mb": 0, "memory_limiter": "none"}},
	})
	setJobProperties(&m, "smoke-tests", map[string]any{
		"broker": map[string]any{"url": api}, "task_timeout": "90s", "poll_interval": "200ms",
	})

	root := GinkgoT().TempDir()
	vcap := filepath.Join(root, "var", "vcap")
	Expect(os.MkdirAll(filepath.Join(vcap, "packages", "ironworker"), 0o755)).To(Succeed())
	Expect(os.Symlink(bin, filepath.Join(vcap, "packages", "ironworker", "bin"))).To(Succeed())
	for _, job := range []string{"iron-api", "iron-runner", "smoke-tests"} {
		g, j := findJob(m, job)
		files, err := renderJob(m, g, j)
		Expect(err).NotTo(HaveOccurred(), job)
		jobDir := filepath.Join(vcap, "jobs", job)
		for dst, body := range files {
			body = strings.ReplaceAll(body, "/var/vcap/", vcap+"/")
			Expect(os.MkdirAll(filepath.Dir(filepath.Join(jobDir, dst)), 0o755)).To(Succeed())
			Expect(os.WriteFile(filepath.Join(jobDir, dst), []byte(body), 0o755)).To(Succeed())
		}
	}

	apiProc := startBPMJob(vcap, "iron-api")
	postStart(vcap, "iron-api")
	runnerProc := startBPMJob(vcap, "iron-runner")
	postStart(vcap, "iron-runner")

	start := time.Now()
	errand := exec.Command("bash", filepath.Join(vcap, "jobs", "smoke-tests", "bin", "run"))
	out, err := errand.CombinedOutput()
	GinkgoWriter.Printf("smoke-tests errand took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	Expect(err).NotTo(HaveOccurred(), "smoke-tests failed:\n%s\n%s\n%s", out, apiProc.logs(), runnerProc.logs())
	Expect(string(out)).To(ContainSubstring("task log has"))
	Expect(string(out)).To(ContainSubstring("smoke-tests: PASSED"))
	logged, err := os.ReadFile(filepath.Join(vcap, "sys", "log", "smoke-tests", "smoke-tests.stdout.log"))
	Expect(err).NotTo(HaveOccurred())
	Expect(string(logged)).To(ContainSubstring("smoke-tests: PASSED"))

	// BOSH stops the runner with its drain script: it prints only an integer, and the
	// runner has exited by then.
	drain := exec.Command("bash", filepath.Join(vcap, "jobs", "iron-runner", "bin", "drain"), "job_shutdown", "hash_unchanged")
	drained, err := drain.Output()
	Expect(err).NotTo(HaveOccurred())
	Expect(string(drained)).To(Equal("0\n"))
	Eventually(runnerProc.exited, 10*time.Second).Should(BeClosed())
	Expect(runnerProc.err).NotTo(HaveOccurred(), "iron-runner should exit 0 after draining:\n%s", runnerProc.logs())

	Expect(apiProc.cmd.Process.Signal(syscall.SIGTERM)).To(Succeed())
	Eventually(apiProc.exited, 30*time.Second).Should(BeClosed())
}

func setJobProperties(m *deploymentManifest, job string, props map[string]any) {
	for gi := range m.InstanceGroups {
		for ji := range m.InstanceGroups[gi].Jobs {
			j := &m.InstanceGroups[gi].Jobs[ji]
			if j.Name == job && j.Release == "ironworker" {
				j.Properties = deepMerge(j.Properties, props)
				return
			}
		}
	}
	Fail("no job " + job + " in the manifest")
}

type bpmProcess struct {
	cmd            *exec.Cmd
	exited         chan struct{}
	err            error
	stdout, stderr string
}

func (p *bpmProcess) logs() string {
	o, _ := os.ReadFile(p.stdout)
	e, _ := os.ReadFile(p.stderr)
	return fmt.Sprintf("%s stdout:\n%s\n%s stderr:\n%s", p.cmd.Path, tail(string(o), 3000), p.cmd.Path, tail(string(e), 3000))
}

// startBPMJob starts the job's one bpm process as bpm would (executable, args, env,
// stdout/stderr into /var/vcap/sys/log/<job>/) and writes bpm's pidfile; it is stopped
// with SIGTERM when the spec ends, if it is still running.
func startBPMJob(vcap, job string) *bpmProcess {
	var bpm struct {
		Processes []struct {
			Name       string            `json:"name"`
			Executable string            `json:"executable"`
			Args       []string          `json:"args"`
			Env        map[string]string `json:"env"`
		} `json:"processes"`
	}
	raw, err := os.ReadFile(filepath.Join(vcap, "jobs", job, "config", "bpm.yml"))
	Expect(err).NotTo(HaveOccurred())
	Expect(yaml.Unmarshal(raw, &bpm)).To(Succeed())
	Expect(bpm.Processes).To(HaveLen(1))
	p := bpm.Processes[0]
	logDir := filepath.Join(vcap, "sys", "log", job)
	Expect(os.MkdirAll(logDir, 0o755)).To(Succeed())
	bp := &bpmProcess{exited: make(chan struct{}), stdout: filepath.Join(logDir, p.Name+".stdout.log"), stderr: filepath.Join(logDir, p.Name+".stderr.log")}
	stdout, err := os.Create(bp.stdout)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(stdout.Close)
	stderr, err := os.Create(bp.stderr)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(stderr.Close)
	bp.cmd = exec.Command(p.Executable, p.Args...)
	bp.cmd.Stdout, bp.cmd.Stderr = stdout, stderr
	bp.cmd.Env = os.Environ()
	for k, v := range p.Env {
		bp.cmd.Env = append(bp.cmd.Env, k+"="+v)
	}
	Expect(bp.cmd.Start()).To(Succeed())
	go func() { bp.err = bp.cmd.Wait(); close(bp.exited) }()
	pidfile := filepath.Join(vcap, "sys", "run", "bpm", job, p.Name+".pid")
	Expect(os.MkdirAll(filepath.Dir(pidfile), 0o755)).To(Succeed())
	Expect(os.WriteFile(pidfile, []byte(fmt.Sprint(bp.cmd.Process.Pid)), 0o644)).To(Succeed())
	DeferCleanup(func() {
		select {
		case <-bp.exited:
		default:
			_ = bp.cmd.Process.Signal(syscall.SIGTERM)
			Eventually(bp.exited, 30*time.Second).Should(BeClosed())
		}
	})
	return bp
}

func postStart(vcap, job string) {
	out, err := exec.Command("bash", filepath.Join(vcap, "jobs", job, "bin", "post-start")).CombinedOutput()
	logs, _ := os.ReadFile(filepath.Join(vcap, "sys", "log", job, job+".stderr.log"))
	Expect(err).NotTo(HaveOccurred(), "%s post-start failed: %s\n%s stderr:\n%s", job, out, job, logs)
}
