package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

var _ = Describe("iron-api: runner protocol wiring", func() {
	const runnerSecret = "runner-secret-for-the-binary-spec"
	var (
		base    string
		session *gexec.Session
		project createdProject
		st      *store.Store
		rc      *client.RunnerClient
		codeFor string
	)
	ctx := context.Background()

	BeforeEach(func() {
		// A database of its own: no other spec's queued tasks get leased here.
		own, err := testsupport.NewDatabase()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(own.Drop)
		port := freePort()
		cfg := writeConfig(fmt.Sprintf(`listen_address: 127.0.0.1:%d
database: {url: %q}
encryption: {active_key: k1, keys: [{label: k1, secret: %q}]}
runner:
  credentials: [{name: old, secret: "old-secret-0123456789"}, {name: spec-runner, secret: %q}]
  lease_wait: 5s
  lease_duration: 1s
  reaper_interval: 100ms
log_level: info
shutdown_timeout: 10s
`, port, own.URL, randomKey(), runnerSecret))
		session = startServer(cfg, port)
		base = fmt.Sprintf("http://127.0.0.1:%d", port)
		project = createProject(cfg, "runner wiring")

		st, err = store.Open(ctx, own.URL, testsupport.NewSealer(), store.Options{MaxOpenConns: 2})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(st.Close)
		code, err := st.SaveCode(ctx, project.ProjectID, store.CodeUpload{Settings: store.CodeSettings{Name: "wiring", Image: "busybox", Retries: 1}})
		Expect(err).NotTo(HaveOccurred())
		codeFor = code.Name
		rc, err = client.NewRunnerClient(base, "spec-runner", runnerSecret, client.RunnerOptions{})
		Expect(err).NotTo(HaveOccurred())
	})

	queue := func() string {
		raw, _ := json.Marshal(map[string]any{"tasks": []map[string]any{{"code_name": codeFor}}})
		req, _ := http.NewRequest("POST", base+"/2/projects/"+project.ProjectID+"/tasks", bytes.NewReader(raw))
		req.Header.Set("Authorization", "OAuth "+project.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		var out struct {
			Tasks []struct{ ID string } `json:"tasks"`
		}
		Expect(json.NewDecoder(resp.Body).Decode(&out)).To(Succeed())
		return out.Tasks[0].ID
	}
	status := func(id string) string {
		t, err := st.GetTask(ctx, project.ProjectID, id)
		Expect(err).NotTo(HaveOccurred())
		return t.Status
	}

	It("wakes long-polls on NOTIFY and runs the reaper", func() {
		done := make(chan []client.Lease, 1)
		go func() {
			defer GinkgoRecover()
			ls, err := rc.Lease(ctx, client.LeaseRequest{Wait: 5 * time.Second})
			Expect(err).NotTo(HaveOccurred())
			done <- ls
		}()
		time.Sleep(2300 * time.Millisecond) // between the long-poll's re-checks
		queuedAt := time.Now()
		id := queue()
		var ls []client.Lease
		Eventually(done, 3*time.Second).Should(Receive(&ls))
		Expect(time.Since(queuedAt)).To(BeNumerically("<", time.Second))
		Expect(ls).To(HaveLen(1))
		Expect(ls[0].Task.ID).To(Equal(id))

		// No heartbeat: the 1 s lease lapses and the binary's reaper requeues the task.
		Eventually(func() string { return status(id) }, 5*time.Second, 50*time.Millisecond).Should(Equal("queued"))
		ls, err := rc.Lease(ctx, client.LeaseRequest{Wait: time.Second})
		Expect(err).NotTo(HaveOccurred())
		Expect(ls).To(HaveLen(1))
		Expect(ls[0].Attempt).To(Equal(2))

		// Running with nothing adoptable, then lost: killed and retried by the policy.
		no := false
		_, err = rc.Heartbeat(ctx, id, client.HeartbeatRequest{LeaseID: ls[0].LeaseID, BackendRef: "local:1", Adoptable: &no})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() string { return status(id) }, 5*time.Second, 50*time.Millisecond).Should(Equal("killed"))
		t, err := st.GetTask(ctx, project.ProjectID, id)
		Expect(err).NotTo(HaveOccurred())
		Expect(t.Msg).To(Equal(store.MsgRunnerLost))
		Expect(t.RetryTaskID).NotTo(BeEmpty())
	})

	It("accepts every configured credential, and ends waiting leases at once on SIGTERM", func() {
		old, err := client.NewRunnerClient(base, "old", "old-secret-0123456789", client.RunnerOptions{})
		Expect(err).NotTo(HaveOccurred())
		_, err = old.Lease(ctx, client.LeaseRequest{})
		Expect(err).NotTo(HaveOccurred())

		type result struct {
			ls  []client.Lease
			err error
		}
		done := make(chan result, 1)
		go func() {
			ls, err := rc.Lease(ctx, client.LeaseRequest{Wait: 5 * time.Second})
			done <- result{ls, err}
		}()
		time.Sleep(500 * time.Millisecond)
		signalled := time.Now()
		session.Signal(syscall.SIGTERM)
		var r result
		Eventually(done, 3*time.Second).Should(Receive(&r))
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.ls).To(BeEmpty())
		Eventually(session).WithTimeout(5 * time.Second).Should(gexec.Exit(0))
		Expect(time.Since(signalled)).To(BeNumerically("<", 3*time.Second))
	})
})
