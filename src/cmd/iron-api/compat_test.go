package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
)

// nodeCompatDir is the Node client compatibility test, relative to this package's
// directory (where `go test` runs it).
const nodeCompatDir = "../../../test/compat/node"

type createdProject struct {
	ProjectID string `json:"project_id"`
	Name      string `json:"name"`
	Token     string `json:"token"`
}

// createProject runs `iron-api admin create-project` and decodes what it prints.
func createProject(configPath, name string) createdProject {
	session := runIronAPI("admin", "create-project", "--config", configPath, "--name", name)
	Expect(session.ExitCode()).To(Equal(0), "admin create-project failed:\n%s", session.Err.Contents())
	var p createdProject
	Expect(json.Unmarshal(session.Out.Contents(), &p)).To(Succeed(), "admin create-project printed: %s", session.Out.Contents())
	return p
}

var _ = Describe("iron-api", func() {
	Describe("admin create-project", func() {
		It("prints the new project's id, name and token as JSON", func() {
			p := createProject(writeConfig(validConfig(freePort())), "admin spec")
			Expect(p.ProjectID).To(MatchRegexp(`^[0-9a-f]{24}$`))
			Expect(p.Name).To(Equal("admin spec"))
			Expect(p.Token).NotTo(BeEmpty())
		})

		It("refuses to run without --name", func() {
			session := runIronAPI("admin", "create-project", "--config", writeConfig(validConfig(freePort())))
			Expect(session.ExitCode()).NotTo(Equal(0))
			Expect(string(session.Err.Contents())).To(ContainSubstring("--name is required"))
		})
	})

	Describe("config", func() {
		DescribeTable("refuses an invalid config, naming the offending property",
			func(edit func(string) string, wantInError string) {
				session := runIronAPI("--config", writeConfig(edit(validConfig(freePort()))))
				Expect(session.ExitCode()).NotTo(Equal(0), "iron-api accepted the config; stdout:\n%s", session.Out.Contents())
				Expect(string(session.Err.Contents())).To(ContainSubstring(wantInError))
			},
			Entry("an unknown top-level key",
				func(c string) string { return c + "bogus_setting: 1\n" }, "bogus_setting"),
			Entry("an unknown nested key",
				func(c string) string { return strings.Replace(c, "scheduler:\n", "scheduler:\n  colour: blue\n", 1) }, "colour"),
			Entry("encryption.active_key missing",
				func(c string) string { return strings.Replace(c, "  active_key: k1\n", "", 1) }, "encryption.active_key"),
			Entry("encryption.active_key naming no key",
				func(c string) string { return strings.Replace(c, "active_key: k1", "active_key: k2", 1) }, "encryption.active_key"),
			Entry("a secret that is not 32 base64 bytes",
				func(c string) string {
					i := strings.Index(c, "secret: ")
					j := strings.Index(c[i:], "\n")
					return c[:i] + "secret: c2hvcnQ=" + c[i+j:]
				}, "encryption.keys[0].secret"),
			Entry("a bad listen_address",
				func(c string) string {
					i := strings.Index(c, "\n")
					return "listen_address: nowhere" + c[i:]
				}, "listen_address"),
		)

		It("refuses to start without --config", func() {
			session := runIronAPI()
			Expect(session.ExitCode()).NotTo(Equal(0))
			Expect(string(session.Err.Contents())).To(ContainSubstring("--config"))
		})
	})

	Describe("serving", func() {
		It("exits 0 promptly on SIGTERM", func() {
			port := freePort()
			session := startServer(writeConfig(validConfig(port)), port)
			session.Signal(syscall.SIGTERM)
			Eventually(session).WithTimeout(10 * time.Second).Should(gexec.Exit(0))
			Expect(string(session.Out.Contents())).To(ContainSubstring(`"msg":"stopped"`))
		})
	})

	Describe("with the Node IronWorker client (iron_worker 0.1.8)", func() {
		It("works end to end: codes, tasks, logs, progress, cancel, retry, schedules", func() {
			dir, err := filepath.Abs(nodeCompatDir)
			Expect(err).NotTo(HaveOccurred())
			if _, err := os.Stat(filepath.Join(dir, "node_modules", "iron_worker", "package.json")); err != nil {
				Fail(fmt.Sprintf("%s/node_modules is missing: run the tests through scripts/test, which runs `npm ci` there "+
					"(or run `npm ci` in test/compat/node yourself)", dir))
			}
			node, err := exec.LookPath("node")
			if err != nil {
				Fail("node is not on PATH: run the tests through scripts/test, which installs Debian's nodejs and npm")
			}

			port := freePort()
			configPath := writeConfig(validConfig(port))
			project := createProject(configPath, "node compat")
			startServer(configPath, port)

			cmd := exec.Command(node, "compat.js")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(),
				"IRON_SCHEME=http",
				"IRON_HOST=127.0.0.1",
				fmt.Sprintf("IRON_PORT=%d", port),
				"IRON_PROJECT_ID="+project.ProjectID,
				"IRON_TOKEN="+project.Token,
			)
			session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
			Expect(err).NotTo(HaveOccurred())
			Eventually(session).WithTimeout(3 * time.Minute).Should(gexec.Exit())
			Expect(session.ExitCode()).To(Equal(0), "node compat.js failed:\n%s%s", session.Out.Contents(), session.Err.Contents())
			AddReportEntry("node compat.js", string(session.Out.Contents()))
		})
	})
})
