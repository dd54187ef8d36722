package main_test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
)

func TestIronAPI(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "iron-api binary suite")
}

var (
	// ironAPI is the path of the iron-api binary built for this suite.
	ironAPI string
	// db is the suite's database on the cluster that scripts/test starts.
	db *testsupport.Database
)

var _ = BeforeSuite(func() {
	var err error
	ironAPI, err = gexec.Build("github.com/ironcf/ironworker-release/src/cmd/iron-api")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(gexec.CleanupBuildArtifacts)

	db, err = testsupport.NewDatabase()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(db.Drop)
})

var _ = AfterSuite(func() {
	// Whatever a failed spec left running.
	gexec.KillAndWait(10 * time.Second)
})

// freePort returns a loopback TCP port nobody listens on.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// randomKey is a base64-encoded 32-byte encryption secret.
func randomKey() string {
	b := make([]byte, 32)
	_, err := rand.Read(b)
	Expect(err).NotTo(HaveOccurred())
	return base64.StdEncoding.EncodeToString(b)
}

// validConfig is a complete iron-api config serving on 127.0.0.1:port from the suite's
// database.
func validConfig(port int) string {
	return fmt.Sprintf(`listen_address: 127.0.0.1:%d
database:
  url: %s
encryption:
  active_key: k1
  keys:
    - label: k1
      secret: %s
scheduler:
  interval: 1s
log_level: info
shutdown_timeout: 5s
`, port, db.URL, randomKey())
}

// writeConfig writes body to a fresh file and returns its path.
func writeConfig(body string) string {
	dir, err := os.MkdirTemp("", "iron-api-config-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	path := filepath.Join(dir, "iron-api.yml")
	Expect(os.WriteFile(path, []byte(body), 0o600)).To(Succeed())
	return path
}

// runIronAPI runs the binary with args to completion and returns the finished session.
func runIronAPI(args ...string) *gexec.Session {
	session, err := gexec.Start(exec.Command(ironAPI, args...), GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	Eventually(session).WithTimeout(60 * time.Second).Should(gexec.Exit())
	return session
}

// startServer starts `iron-api --config path` and waits until /healthz answers 200. The
// server is killed when the calling node's cleanup runs (if the spec has not stopped it).
func startServer(configPath string, port int) *gexec.Session {
	session, err := gexec.Start(exec.Command(ironAPI, "--config", configPath), GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { session.Kill().Wait(10 * time.Second) })

	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	client := &http.Client{Timeout: 2 * time.Second}
	Eventually(func() (int, error) {
		if code := session.ExitCode(); code != -1 {
			return 0, StopTrying(fmt.Sprintf("iron-api exited with status %d during startup:\n%s", code, session.Err.Contents()))
		}
		resp, err := client.Get(url)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}).WithTimeout(60*time.Second).WithPolling(100*time.Millisecond).Should(Equal(http.StatusOK), "GET %s", url)
	return session
}
