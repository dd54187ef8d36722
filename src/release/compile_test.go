package release_test

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	_ "github.com/lib/pq"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

// The compile replay does what a BOSH compilation VM does with the release tarball: every
// package's `bash -x packaging`, in dependency order, in a compile target holding only
// that package's files, with the agent's environment (BOSH_COMPILE_TARGET,
// BOSH_INSTALL_TARGET, BOSH_PACKAGE_NAME, BOSH_PACKAGE_VERSION, a bare PATH, no HOME, no
// Go settings), only the package's direct dependencies installed, and (as root) no network.
// The agent does not set BOSH_PACKAGES_DIR; the replay sets it to the directory holding the
// direct dependencies, which the packaging scripts honour as they do under create-env.
var _ = Describe("compiling the release tarball like a BOSH compilation VM", Label("compile"), Ordered, func() {
	var bin string // the ironworker package's bin/ directory

	BeforeAll(func() {
		if os.Getenv("IRON_SKIP_COMPILE_REPLAY") == "1" {
			Skip("IRON_SKIP_COMPILE_REPLAY=1: skipping the compile replay (about 2-3 minutes on 2 cores)")
		}
		bin = compileReplay()
	})

	It("builds every binary under src/cmd, and each runs", func() {
		cmds, err := filepath.Glob(filepath.Join(releaseSnapshot(), "src", "cmd", "*")) // what was built
		Expect(err).NotTo(HaveOccurred())
		Expect(cmds).NotTo(BeEmpty())
		for _, c := range cmds {
			exe := filepath.Join(bin, filepath.Base(c))
			Expect(exe).To(BeAnExistingFile(), "the ironworker package did not build %s", filepath.Base(c))
			out, err := exec.Command(exe, "--help").CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "%s --help must exit 0; it printed:\n%s", exe, out)
			Expect(string(out)).To(ContainSubstring("Usage of "+filepath.Base(c)), "%s --help printed:\n%s", exe, out)
		}
	})

	It("runs a local deployment (use-local-backend): iron-api and iron-runner from their rendered bpm configs, and the smoke-tests errand passes against them", func() {
		localDeployment(bin)
	})

	It("runs the compiled iron-api from its rendered bpm config, and the post-start health gate passes", func() {
		dbURL := throwawayDatabase()

		m, _, err := interpolate(deploymentCase{Name: "base manifest"})
		Expect(err).NotTo(HaveOccurred())
		g, j := findJob(m, "iron-api")
		port := freePort()
		j.Properties = deepMerge(j.Properties, map[string]any{
			"bind_address": "127.0.0.1", "port": port, "database": map[string]any{"url": dbURL},
			"health_check": map[string]any{"timeout": 60},
		})
		files, err := renderJob(m, g, j)
		Expect(err).NotTo(HaveOccurred())

		// A VM's /var/vcap under a temporary root: the rendered job, the compiled package.
		root := GinkgoT().TempDir()
		vcap := filepath.Join(root, "var", "vcap")
		jobDir := filepath.Join(vcap, "jobs", "iron-api")
		for dst, body := range files {
			body = strings.ReplaceAll(body, "/var/vcap/", vcap+"/")
			Expect(os.MkdirAll(filepath.Dir(filepath.Join(jobDir, dst)), 0o755)).To(Succeed())
			Expect(os.WriteFile(filepath.Join(jobDir, dst), []byte(body), 0o755)).To(Succeed())
		}
		Expect(os.MkdirAll(filepath.Join(vcap, "packages", "ironworker"), 0o755)).To(Succeed())
		Expect(os.Symlink(bin, filepath.Join(vcap, "packages", "ironworker", "bin"))).To(Succeed())

		// Start the process as bpm would: executable, args, stdout/stderr into the job's log dir.
		var bpm struct {
			Processes []struct {
				Name       string            `json:"name"`
				Executable string            `json:"executable"`
				Args       []string          `json:"args"`
				Env        map[string]string `json:"env"`
			} `json:"processes"`
		}
		raw, err := os.ReadFile(filepath.Join(jobDir, "config", "bpm.yml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(yaml.Unmarshal(raw, &bpm)).To(Succeed())
		Expect(bpm.Processes).To(HaveLen(1))
		p := bpm.Processes[0]
		logDir := filepath.Join(vcap, "sys", "log", "iron-api")
		Expect(os.MkdirAll(logDir, 0o755)).To(Succeed())
		stdout, err := os.Create(filepath.Join(logDir, p.Name+".stdout.log"))
		Expect(err).NotTo(HaveOccurred())
		defer stdout.Close()
		stderr, err := os.Create(filepath.Join(logDir, p.Name+".stderr.log"))
		Expect(err).NotTo(HaveOccurred())
		defer stderr.Close()
		proc := exec.Command(p.Executable, p.Args...)
		proc.Stdout, proc.Stderr = stdout, stderr
		for k, v := range p.Env {
			proc.Env = append(proc.Environ(), k+"="+v)
		}
		Expect(proc.Start()).To(Succeed())
		exited := make(chan struct{})
		var exitErr error
		go func() { exitErr = proc.Wait(); close(exited) }()
		DeferCleanup(func() {
			select {
			case <-exited:
			default:
				_ = proc.Process.Signal(syscall.SIGTERM)
				Eventually(exited, 30*time.Second).Should(BeClosed())
			}
		})

		gate := exec.Command("bash", filepath.Join(jobDir, "bin", "post-start"))
		out, err := gate.CombinedOutput()
		logs, _ := os.ReadFile(stderr.Name())
		Expect(err).NotTo(HaveOccurred(), "post-start failed: %s\niron-api stderr:\n%s", out, logs)
		gateLog, err := os.ReadFile(filepath.Join(logDir, "post-start.log"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(gateLog)).To(ContainSubstring(fmt.Sprintf("iron-api healthy at http://127.0.0.1:%d/healthz", port)))

		Expect(proc.Process.Signal(syscall.SIGTERM)).To(Succeed())
		Eventually(exited, 30*time.Second).Should(BeClosed(), "iron-api should stop on SIGTERM (bpm stop)")
		Expect(exitErr).NotTo(HaveOccurred(), "iron-api should exit 0 on SIGTERM")
		logOut, err := os.ReadFile(stdout.Name())
		Expect(err).NotTo(HaveOccurred())
		Expect(string(logOut)).To(ContainSubstring(`"iron-api listening"`))
	})
})

// compileReplay builds the tarball from the snapshot, compiles its packages as a
// compilation VM does and returns the ironworker package's bin/ directory.
func compileReplay() string {
	dir := releaseSnapshot()
	start := time.Now()
	sum, err := boshtool.CreateRelease(boshtool.ReleaseOptions{Dir: dir, Version: "0+dev.1", CommitHash: "abcdef0",
		Tarball: filepath.Join(dir, "out", "compile.tgz"), WorkDir: filepath.Join(dir, "work-1")})
	Expect(err).NotTo(HaveOccurred())

	work, err := os.MkdirTemp("", "ironworker-compile-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, work)
	rel := filepath.Join(work, "release")
	untar(sum.Tarball, rel)
	var mf struct {
		Packages []struct {
			Name         string   `json:"name"`
			Version      string   `json:"version"`
			Dependencies []string `json:"dependencies"`
		} `json:"packages"`
	}
	raw, err := os.ReadFile(filepath.Join(rel, "release.MF"))
	Expect(err).NotTo(HaveOccurred())
	Expect(yaml.Unmarshal(raw, &mf)).To(Succeed())

	isolate := os.Geteuid() == 0 && exec.Command("unshare", "--net", "true").Run() == nil
	if !isolate {
		GinkgoWriter.Println("not root or no unshare: compiling without a network namespace (GOPROXY=off still applies)")
	}
	compiled := map[string]bool{}
	for len(compiled) < len(mf.Packages) {
		progress := false
		for _, p := range mf.Packages {
			if compiled[p.Name] {
				continue
			}
			ready := true
			for _, d := range p.Dependencies {
				ready = ready && compiled[d]
			}
			if !ready {
				continue
			}
			pkgStart := time.Now()
			target := filepath.Join(work, "compile", p.Name)
			untar(filepath.Join(rel, "packages", p.Name+".tgz"), target)
			install := filepath.Join(work, "data", "packages", p.Name)
			Expect(os.MkdirAll(install, 0o755)).To(Succeed())
			deps := filepath.Join(work, "deps", p.Name)
			Expect(os.MkdirAll(deps, 0o755)).To(Succeed())
			for _, d := range p.Dependencies {
				Expect(os.Symlink(filepath.Join(work, "data", "packages", d), filepath.Join(deps, d))).To(Succeed())
			}
			args := []string{"bash", "-x", "packaging"}
			if isolate {
				args = append([]string{"unshare", "--net", "--"}, args...)
			}
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir = target
			cmd.Env = []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"BOSH_COMPILE_TARGET=" + target,
				"BOSH_INSTALL_TARGET=" + install,
				"BOSH_PACKAGE_NAME=" + p.Name,
				"BOSH_PACKAGE_VERSION=" + p.Version,
				"BOSH_PACKAGES_DIR=" + deps,
			}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			Expect(err).NotTo(HaveOccurred(), "packaging of %s failed:\n%s", p.Name, tail(out.String(), 4000))
			GinkgoWriter.Printf("compiled %s in %s\n", p.Name, time.Since(pkgStart).Round(time.Second))
			compiled[p.Name] = true
			progress = true
			// Like the agent, keep only the compiled result.
			Expect(os.RemoveAll(target)).To(Succeed())
		}
		Expect(progress).To(BeTrue(), "package dependencies form a cycle or name a missing package")
	}
	GinkgoWriter.Printf("compile replay took %s\n", time.Since(start).Round(time.Second))
	return filepath.Join(work, "data", "packages", "ironworker", "bin")
}

// throwawayDatabase creates a database on the cluster that scripts/test starts
// (IRON_TEST_DATABASE_URL), dropped when the spec ends, and returns its URL.
func throwawayDatabase() string {
	admin := os.Getenv("IRON_TEST_DATABASE_URL")
	if admin == "" {
		Skip("IRON_TEST_DATABASE_URL is not set (scripts/test starts PostgreSQL and sets it)")
	}
	var b [6]byte
	_, err := rand.Read(b[:])
	Expect(err).NotTo(HaveOccurred())
	name := "iron_release_" + hex.EncodeToString(b[:])
	db, err := sql.Open("postgres", admin)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(db.Close)
	_, err = db.Exec("CREATE DATABASE " + name)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		_, err := db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		Expect(err).NotTo(HaveOccurred())
	})
	u, err := url.Parse(admin)
	Expect(err).NotTo(HaveOccurred())
	u.Path = "/" + name
	return u.String()
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func untar(tarball, dst string) {
	Expect(os.MkdirAll(dst, 0o755)).To(Succeed())
	out, err := exec.Command("tar", "xzf", tarball, "-C", dst).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "tar xzf %s: %s", tarball, out)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
