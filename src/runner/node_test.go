package runner_test

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
)

var _ = Describe("the Node IronWorker client (iron_worker 0.1.8) against tasks that really run", func() {
	It("tasksWaitFor and tasksLog see the task complete (or fail) with its output (test/compat/node/run.js)", func() {
		dir, err := filepath.Abs("../../test/compat/node")
		Expect(err).NotTo(HaveOccurred())
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "iron_worker", "package.json")); err != nil {
			Fail(dir + "/node_modules is missing: run the tests through scripts/test, which runs `npm ci` there")
		}
		node, err := exec.LookPath("node")
		if err != nil {
			Fail("node is not on PATH: run the tests through scripts/test, which installs Debian's nodejs and npm")
		}
		e := newEnv(5 * time.Second)
		e.uploadScript("echo", `echo "payload: $(cat "$PAYLOAD_FILE")"`, nil)
		e.uploadScript("failing", `echo "trying"; echo "worker gave up" >&2; exit 2`, nil)
		e.startRunner(newLocal(), nil)

		u, err := url.Parse(e.a.Server.URL)
		Expect(err).NotTo(HaveOccurred())
		cmd := exec.Command(node, "run.js")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "IRON_SCHEME=http", "IRON_HOST="+u.Hostname(), "IRON_PORT="+u.Port(),
			"IRON_PROJECT_ID="+e.a.ProjectID, "IRON_TOKEN="+e.a.Token, "IRON_CODE_NAME=echo", "IRON_FAILING_CODE_NAME=failing")
		session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		Eventually(session).WithTimeout(3 * time.Minute).Should(gexec.Exit())
		Expect(session.ExitCode()).To(Equal(0), "node run.js failed:\n%s%s", session.Out.Contents(), session.Err.Contents())
		AddReportEntry("node run.js", fmt.Sprint(string(session.Out.Contents())))
	})
})
