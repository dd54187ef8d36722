package runner_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"github.com/ironcf/ironworker-release/src/backend/diego"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
	"github.com/ironcf/ironworker-release/src/runner"
)

// The diego backend end to end: iron-api (real PostgreSQL) + iron-runner(diego) + the
// fake Cloud Foundry, whose tasks run their real command as local processes, so the
// launcher's fetch of payload and config from the API's task input endpoint (with the
// task-scoped token the runner obtained) is exercised for real.

// diegoWorker copies what it was given to OUT_DIR (set in every CF task's environment
// by the fake) and logs; $SLEEP and $FAIL come from the payload's first line when it
// says "sleep N" / "fail N".
const diegoWorker = `cp "$PAYLOAD_FILE" "$OUT_DIR/$TASK_ID.payload" && cp "$CONFIG_FILE" "$OUT_DIR/$TASK_ID.config" || exit 6
first="$(head -n 1 "$PAYLOAD_FILE")"
echo "hello from $TASK_ID, payload bytes: $(wc -c < "$PAYLOAD_FILE")"
case "$first" in
  "sleep "*) sleep "${first#sleep }";;
  "fail "*) echo "failing on purpose"; exit "${first#fail }";;
esac
echo "worker done"
`

type diegoEnv struct {
	*env
	fake   *fakecf.Server
	outDir string
	cfg    config.Diego
}

func newDiegoEnv(leaseDuration time.Duration) *diegoEnv {
	e := newEnv(leaseDuration)
	out := GinkgoT().TempDir()
	Expect(os.WriteFile(filepath.Join(out, "worker.sh"), []byte(diegoWorker), 0o755)).To(Succeed())
	fake := fakecf.New(fakecf.Options{Env: []string{"OUT_DIR=" + out}})
	DeferCleanup(fake.Close)
	fake.CreateOrgAndSpace("ironworker", "tasks")
	return &diegoEnv{env: e, fake: fake, outDir: out, cfg: config.Diego{
		APIURL: fake.URL, ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(),
		Org: "ironworker", Space: "tasks", Buildpacks: []string{"binary_buildpack"},
		PollInterval: config.Duration(100 * time.Millisecond), RequestTimeout: config.Duration(5 * time.Second),
		StagingTimeout: config.Duration(30 * time.Second),
	}}
}

// newBackend is a diego backend in the test process, closed after the runners using it
// (DeferCleanup runs last-registered first).
func (d *diegoEnv) newBackend() *diego.Backend {
	b, err := diego.New(context.Background(), d.cfg, diego.Options{LogGrace: 100 * time.Millisecond, Logger: testLogger()})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(b.Close)
	return b
}

// uploadCode uploads a code through the API: data is the multipart "data" JSON; zipFiles,
// when given, the package.
func (d *diegoEnv) uploadCode(data map[string]any, zipFiles map[string]string) {
	raw, err := json.Marshal(data)
	Expect(err).NotTo(HaveOccurred())
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	Expect(mw.WriteField("data", string(raw))).To(Succeed())
	if zipFiles != nil {
		fw, err := mw.CreateFormFile("file", "worker.zip")
		Expect(err).NotTo(HaveOccurred())
		_, err = fw.Write(zipOf(zipFiles))
		Expect(err).NotTo(HaveOccurred())
	}
	Expect(mw.Close()).To(Succeed())
	resp := d.a.DoAs(d.a.Token, http.MethodPost, d.a.Project()+"/codes", body.Bytes(),
		http.Header{"Content-Type": {mw.FormDataContentType()}})
	Expect(resp.Status).To(Equal(http.StatusOK), string(resp.Body))
}

func (d *diegoEnv) uploadZip(name, config string) {
	d.uploadCode(map[string]any{"name": name, "command": "sh worker.sh", "config": config}, map[string]string{"worker.sh": diegoWorker})
}

func (d *diegoEnv) uploadDocker(name, config string) {
	d.uploadCode(map[string]any{"name": name, "image": "registry.example.com/iron/worker:1",
		"command": `sh "$OUT_DIR/worker.sh"`, "config": config}, nil)
}

func (d *diegoEnv) out(taskID, part string) string {
	b, err := os.ReadFile(filepath.Join(d.outDir, taskID+"."+part))
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// cfTasks are the CF tasks of an IronWorker task.
func (d *diegoEnv) cfTasks(taskID string) []fakecf.TaskInfo {
	var out []fakecf.TaskInfo
	for _, t := range d.fake.Tasks() {
		if t.Name == "iw-"+taskID {
			out = append(out, t)
		}
	}
	return out
}

// bigPayload is n bytes of what a JSON payload string may carry (no NUL: PostgreSQL
// text), shell metacharacters and multi-byte UTF-8 included, starting with line1.
func bigPayload(line1 string, n int) string {
	chunk := "{\"k\": \"v'x\\\"\"}\n$HOME `id` $(echo hi) \\ ' '' \"\r\n\t é ü 日本語 🚀 ;&|<>*?[] %s %d\n"
	var b strings.Builder
	b.WriteString(line1 + "\n")
	for b.Len() < n-len(chunk) {
		b.WriteString(chunk)
	}
	for b.Len() < n {
		b.WriteByte('z')
	}
	return b.String()
}

var _ = Describe("the diego backend through API and runner", func() {
	var d *diegoEnv

	BeforeEach(func() {
		d = newDiegoEnv(3 * time.Second)
	})

	It("runs a zip code and a docker code to complete with a 64 KiB payload and the config intact, logs readable", func() {
		d.uploadZip("zipworker", "zip config 'quoted' $X\n")
		d.uploadDocker("imgworker", "image config \"dq\"\n")
		d.startRunner(d.newBackend(), nil)

		payload := bigPayload("hello", 64<<10-16)
		ids := d.queue(map[string]any{"code_name": "zipworker", "payload": payload},
			map[string]any{"code_name": "imgworker", "payload": payload})
		for _, id := range ids {
			Eventually(d.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"), id)
		}
		for i, id := range ids {
			Expect(d.out(id, "payload")).To(Equal(payload), "payload intact")
			Expect(d.out(id, "config")).To(Equal([]string{"zip config 'quoted' $X\n", "image config \"dq\"\n"}[i]))
			Eventually(func() string { return d.log(id) }, 10*time.Second, 100*time.Millisecond).Should(And(
				ContainSubstring(fmt.Sprintf("hello from %s, payload bytes: %d", id, len(payload))), ContainSubstring("worker done")))
			Expect(d.cfTasks(id)).To(HaveLen(1))
			cmd := d.cfTasks(id)[0].Command
			Expect(len(cmd)).To(BeNumerically("<=", diego.CommandMaxLength))
			Expect(cmd).To(ContainSubstring("/internal/v1/tasks/" + id + "/input"))
		}
		// The task input endpoint: only the task's own token, only until it finishes.
		tokenOf := func(id string) string {
			m := regexp.MustCompile(`;T='([0-9a-f]+)';`).FindStringSubmatch(d.cfTasks(id)[0].Command)
			Expect(m).To(HaveLen(2), "the command carries the input token")
			return m[1]
		}
		fetch := func(id, part, token string) int {
			return d.a.DoAs("", http.MethodGet, "/internal/v1/tasks/"+id+"/input/"+part, nil,
				http.Header{"Authorization": {"Bearer " + token}}).Status
		}
		Expect(fetch(ids[0], "payload", tokenOf(ids[0]))).To(Equal(http.StatusGone), "finished task")
		Expect(fetch(ids[0], "config", tokenOf(ids[0]))).To(Equal(http.StatusGone), "finished task")
		Expect(fetch(ids[0], "payload", tokenOf(ids[1]))).To(Equal(http.StatusUnauthorized), "another task's token")
		Expect(fetch(ids[0], "payload", "nope")).To(Equal(http.StatusUnauthorized))
		Expect(d.a.DoAs(d.a.Token, http.MethodGet, "/internal/v1/tasks/"+ids[0]+"/input/payload", nil, nil).Status).
			To(Equal(http.StatusUnauthorized), "an app token is no input token")
	})

	It("ends a failing task error with CF's failure reason", func() {
		d.uploadZip("zipworker", "")
		d.startRunner(d.newBackend(), nil)
		id := d.queue(map[string]any{"code_name": "zipworker", "payload": "fail 3"})[0]
		Eventually(d.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("error"))
		Expect(d.task(id).Msg).To(ContainSubstring("Exited with status 3"))
		Eventually(func() string { return d.log(id) }, 10*time.Second, 100*time.Millisecond).Should(ContainSubstring("failing on purpose"))
	})

	It("times a task out by cancelling its CF task", func() {
		d.uploadZip("zipworker", "")
		d.startRunner(d.newBackend(), nil)
		id := d.queue(map[string]any{"code_name": "zipworker", "payload": "sleep 60", "timeout": 2})[0]
		Eventually(d.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("timeout"))
		Eventually(func() []fakecf.TaskInfo { return d.cfTasks(id) }, 10*time.Second, 100*time.Millisecond).Should(
			ConsistOf(And(HaveField("Cancelled", BeTrue()), HaveField("State", "FAILED"))))
	})

	It("cancels the CF task when the user cancels the task", func() {
		d.uploadZip("zipworker", "")
		d.startRunner(d.newBackend(), nil)
		id := d.queue(map[string]any{"code_name": "zipworker", "payload": "sleep 60"})[0]
		Eventually(d.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("running"))
		Eventually(func() string { return d.log(id) }, 30*time.Second, 100*time.Millisecond).Should(ContainSubstring("hello from"))
		d.post("/tasks/" + id + "/cancel")
		Eventually(func() []fakecf.TaskInfo { return d.cfTasks(id) }, 30*time.Second, 100*time.Millisecond).Should(
			ConsistOf(And(HaveField("Cancelled", BeTrue()), HaveField("State", "FAILED"))))
		Eventually(d.status(id), 30*time.Second, 100*time.Millisecond).Should(Equal("cancelled"))
	})

	It("gets every task through while Cloud Controller throttles, sending nothing before Retry-After", func() {
		d.uploadZip("zipworker", "")
		be := d.newBackend()
		d.fake.Throttle(4, time.Second)
		d.startRunner(be, nil)
		ids := d.queue(map[string]any{"code_name": "zipworker", "payload": "a"}, map[string]any{"code_name": "zipworker", "payload": "b"},
			map[string]any{"code_name": "zipworker", "payload": "c"})
		for _, id := range ids {
			Eventually(d.status(id), 90*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		}
		throttled, early := 0, 0
		for _, r := range d.fake.Requests() {
			if r.Status == http.StatusTooManyRequests {
				throttled++
			}
			if r.Early {
				early++
			}
		}
		Expect(throttled).To(Equal(4))
		Expect(early).To(BeZero(), "no request before the Retry-After of a 429")
	})

	It("creates one CF app per code revision and one CF task per task; polls in batches", func() {
		d.uploadZip("zipworker", "")
		d.startRunner(d.newBackend(), func(o *runner.Options) { o.Slots = 8 })
		var tasks []map[string]any
		for i := range 8 {
			tasks = append(tasks, map[string]any{"code_name": "zipworker", "payload": fmt.Sprintf("sleep 0.%d", i)})
		}
		ids := d.queue(tasks...)
		for _, id := range ids {
			Eventually(d.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		}
		Expect(d.fake.Count(http.MethodPost, "/v3/apps")).To(Equal(1), "one app for the code revision")
		Expect(d.fake.CountRequests(http.MethodPost, "/v3/builds", "")).To(Equal(1), "staged once")
		for _, id := range ids {
			Expect(d.cfTasks(id)).To(HaveLen(1))
		}
		creates := 0
		for _, r := range d.fake.Requests() {
			if r.Method == http.MethodPost && strings.HasPrefix(r.Path, "/v3/apps/") && strings.HasSuffix(r.Path, "/tasks") {
				creates++
			}
		}
		Expect(creates).To(Equal(len(ids)), "one create per task (first leases do not look tasks up)")
		Expect(d.fake.CountRequests(http.MethodGet, "/v3/tasks", "names=")).To(BeZero(), "no per-task lookup on a first lease")
	})

	It("lets a new runner adopt a CF task whose runner was killed with SIGKILL: one CF task, completed normally", func() {
		d.uploadZip("zipworker", "")
		dir := GinkgoT().TempDir()
		cfgPath := filepath.Join(dir, "iron-runner.yml")
		Expect(os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
api_url: %s
credential: {name: %s, secret: %s}
runner_id: doomed-diego
slots: 2
lease_wait: 1s
heartbeat_interval: 300ms
backend:
  type: diego
  diego:
    api_url: %s
    client_id: %s
    client_secret: %s
    org: ironworker
    space: tasks
    buildpacks: [binary_buildpack]
    poll_interval: 100ms
    request_timeout: 5s
log_level: debug
`, d.a.Server.URL, d.a.RunnerName, d.a.RunnerSecret, d.fake.URL, d.fake.ClientID(), d.fake.ClientSecret())), 0o600)).To(Succeed())
		session, err := gexec.Start(newCmd(runnerBin(), "--config", cfgPath), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { session.Kill().Wait(10 * time.Second) })

		id := d.queue(map[string]any{"code_name": "zipworker", "payload": "sleep 6"})[0]
		Eventually(d.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("running"))
		Eventually(func() []fakecf.TaskInfo { return d.cfTasks(id) }, 30*time.Second, 100*time.Millisecond).Should(
			ConsistOf(HaveField("State", "RUNNING")))
		// Its output, and how far it got in Log Cache, are stored before the crash.
		Eventually(func() string { return d.log(id) }, 30*time.Second, 100*time.Millisecond).Should(ContainSubstring("hello from"))
		db, err := d.a.DB.SQL()
		Expect(err).NotTo(HaveOccurred())
		defer db.Close()
		Eventually(func() error {
			var c string
			return db.QueryRow(`SELECT cursor FROM task_log_cursors WHERE task_id = $1`, id).Scan(&c)
		}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
		session.Kill() // SIGKILL: the CF task goes on
		Eventually(session, 10*time.Second).Should(gexec.Exit())

		d.startRunner(d.newBackend(), nil)
		Eventually(d.status(id), 60*time.Second, 100*time.Millisecond).Should(Equal("complete"))
		Expect(d.cfTasks(id)).To(ConsistOf(HaveField("State", "SUCCEEDED")), "exactly one CF task, never a second")
		Eventually(func() string { return d.log(id) }, 10*time.Second, 100*time.Millisecond).Should(ContainSubstring("worker done"))
		Expect(strings.Count(d.log(id), "hello from")).To(Equal(1), "the adopting runner resumes the log at the stored cursor: "+d.log(id))
		Expect(d.out(id, "payload")).To(Equal("sleep 6"))
	})
})

var _ = Describe("the task input endpoint and log cursors of the runner protocol", func() {
	It("issues task-scoped input tokens to the lease holder and serves the raw input only to them, only until the task ends", func() {
		e := newEnv(30 * time.Second)
		e.uploadScript("w", "true", map[string]any{"config": "cfg \x01 é"})
		payload := bigPayload("p", 64<<10-16)
		ids := e.queue(map[string]any{"code_name": "w", "payload": payload}, map[string]any{"code_name": "w", "payload": "other"})
		cl := e.runnerClient()
		ctx := context.Background()
		var leases []client.Lease
		Eventually(func() int {
			l, err := cl.Lease(ctx, client.LeaseRequest{MaxTasks: 2, Wait: time.Second})
			Expect(err).NotTo(HaveOccurred())
			leases = append(leases, l...)
			return len(leases)
		}, 20*time.Second).Should(Equal(2))
		byID := map[string]client.Lease{}
		for _, l := range leases {
			Expect(l.LeaseDuration).To(Equal(30 * time.Second))
			byID[l.Task.ID] = l
		}
		l0, l1 := byID[ids[0]], byID[ids[1]]

		_, err := cl.InputToken(ctx, ids[0], l1.LeaseID)
		Expect(err).To(MatchError(client.ErrLeaseLost), "another lease's task")
		tok0, err := cl.InputToken(ctx, ids[0], l0.LeaseID)
		Expect(err).NotTo(HaveOccurred())
		Expect(tok0.URL).To(Equal(e.a.Server.URL + "/internal/v1/tasks/" + ids[0] + "/input"))
		Expect(tok0.BrokerInstance).To(BeFalse())
		tok1, err := cl.InputToken(ctx, ids[1], l1.LeaseID)
		Expect(err).NotTo(HaveOccurred())
		again, err := cl.InputToken(ctx, ids[0], l0.LeaseID)
		Expect(err).NotTo(HaveOccurred())
		Expect(again.Token).NotTo(Equal(tok0.Token))

		get := func(id, part, token string) (int, string, string) {
			resp := e.a.DoAs("", http.MethodGet, "/internal/v1/tasks/"+id+"/input/"+part, nil, http.Header{"Authorization": {"Bearer " + token}})
			return resp.Status, resp.Header.Get("Content-Type"), string(resp.Body)
		}
		for _, tok := range []string{tok0.Token, again.Token} { // an earlier token stays valid
			st, ct, body := get(ids[0], "payload", tok)
			Expect(st).To(Equal(http.StatusOK))
			Expect(ct).To(Equal("application/octet-stream"))
			Expect(body).To(Equal(payload))
			st, _, body = get(ids[0], "config", tok)
			Expect(st).To(Equal(http.StatusOK))
			Expect(body).To(Equal("cfg \x01 é"))
		}
		st, _, _ := get(ids[0], "payload", tok1.Token)
		Expect(st).To(Equal(http.StatusUnauthorized), "another task's token")
		st, _, _ = get(ids[0], "payload", "")
		Expect(st).To(Equal(http.StatusUnauthorized))
		st, _, _ = get(ids[0], "secrets", tok0.Token)
		Expect(st).To(Equal(http.StatusNotFound))
		resp := e.a.DoAs("", http.MethodGet, "/internal/v1/tasks/"+ids[0]+"/input/payload", nil,
			http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(e.a.RunnerName+":"+e.a.RunnerSecret))}})
		Expect(resp.Status).To(Equal(http.StatusUnauthorized), "the runner credential is no input token")

		// Log cursors: only the holder records and reads them.
		Expect(cl.SetLogCursor(ctx, ids[0], l1.LeaseID, "1:0")).To(MatchError(client.ErrLeaseLost))
		c, err := cl.LogCursor(ctx, ids[0], l0.LeaseID)
		Expect(err).NotTo(HaveOccurred())
		Expect(c).To(BeEmpty())
		Expect(cl.SetLogCursor(ctx, ids[0], l0.LeaseID, "123:4")).To(Succeed())
		Expect(cl.SetLogCursor(ctx, ids[0], l0.LeaseID, "125:1")).To(Succeed())
		c, err = cl.LogCursor(ctx, ids[0], l0.LeaseID)
		Expect(err).NotTo(HaveOccurred())
		Expect(c).To(Equal("125:1"))

		_, err = cl.Complete(ctx, ids[0], client.CompleteRequest{LeaseID: l0.LeaseID, Status: client.StatusComplete})
		Expect(err).NotTo(HaveOccurred())
		st, _, _ = get(ids[0], "payload", tok0.Token)
		Expect(st).To(Equal(http.StatusGone), "finished")
		st, _, _ = get(ids[0], "payload", "wrong")
		Expect(st).To(Equal(http.StatusUnauthorized), "a wrong token learns nothing about the task")
		_, err = cl.InputToken(ctx, ids[0], l0.LeaseID)
		Expect(err).To(MatchError(client.ErrLeaseLost))
		st, _, body := get(ids[1], "payload", tok1.Token)
		Expect(st).To(Equal(http.StatusOK))
		Expect(body).To(Equal("other"))
	})
})
