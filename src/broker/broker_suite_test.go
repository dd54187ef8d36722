package broker_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	osb "sigs.k8s.io/go-open-service-broker-client/v2"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

func TestBroker(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Open Service Broker suite")
}

const (
	brokerUser = "cc-broker-user"
	brokerPass = "cc-broker-password-123"

	serviceID = "5f0b9b6e-3c1d-4a57-9f1e-1b2c3d4e5f60"
	smallPlan = "a1b2c3d4-0000-4000-8000-000000000001"
	largePlan = "a1b2c3d4-0000-4000-8000-000000000002"

	// Bind credentials name this address; the e2e client dials the test server for it.
	externalHost = "iron.test.internal"
	externalPort = 8443
)

func ptr(i int) *int { return &i }

// brokerConfig is the catalog of the suite: "small" with every quota, "large" without.
func brokerConfig() config.Broker {
	notFree := false
	return config.Broker{
		Enabled: true, Username: brokerUser, Password: brokerPass,
		Service: config.BrokerService{ID: serviceID, Name: "ironworker", Description: "IronWorker tasks",
			Tags: []string{"ironworker", "tasks"}, DisplayName: "IronWorker", ProviderName: "ironcf",
			DocumentationURL: "https://docs.example.com/ironworker"},
		Plans: []config.BrokerPlan{
			{ID: smallPlan, Name: "small", Description: "A few tasks", Quotas: config.PlanQuotas{
				MaxConcurrency: ptr(1), MaxTimeoutSeconds: ptr(60), MaxPayloadBytes: ptr(100),
				MaxQueuedTasks: ptr(2), MaxSchedules: ptr(1), AllowedPriorities: []int{0, 1}}},
			{ID: largePlan, Name: "large", Description: "Unlimited", Free: &notFree},
		},
		ExternalAPI: config.ExternalAPI{Scheme: "http", Host: externalHost, Port: externalPort},
	}
}

// iron is the live API, broker included, every spec talks to.
var (
	iron   *testsupport.API
	logBuf *syncBuffer
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ = BeforeSuite(func() {
	logBuf = &syncBuffer{}
	var err error
	iron, err = testsupport.StartAPI(config.Limits{}, testsupport.WithBroker(brokerConfig(), jsonLogger(logBuf)))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(iron.Stop)
})

// ---- raw OSB requests, as Cloud Controller sends them ----

type osbResp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r osbResp) JSON() map[string]any {
	var v map[string]any
	ExpectWithOffset(1, json.Unmarshal(r.Body, &v)).To(Succeed(), string(r.Body))
	return v
}

// reqOpt changes a raw request before it is sent.
type reqOpt func(*http.Request)

func withoutAuth(r *http.Request) { r.Header.Del("Authorization") }
func withVersion(v string) reqOpt {
	return func(r *http.Request) { setOrDel(r, "X-Broker-API-Version", v) }
}
func withHeader(k, v string) reqOpt     { return func(r *http.Request) { r.Header.Set(k, v) } }
func withAuth(user, pass string) reqOpt { return func(r *http.Request) { r.SetBasicAuth(user, pass) } }
func setOrDel(r *http.Request, k, v string) {
	if v == "" {
		r.Header.Del(k)
	} else {
		r.Header.Set(k, v)
	}
}

// ccIdentity is the originating identity header of a Cloud Foundry user.
func ccIdentity(userID string) string {
	return "cloudfoundry " + base64.StdEncoding.EncodeToString([]byte(`{"user_id":"`+userID+`"}`))
}

// osbDo sends what Cloud Controller sends: basic auth, X-Broker-API-Version 2.15, an
// originating identity and a request identity.
func osbDo(method, path string, body any, opts ...reqOpt) osbResp {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		Expect(err).NotTo(HaveOccurred())
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, iron.Server.URL+path, rd)
	Expect(err).NotTo(HaveOccurred())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.SetBasicAuth(brokerUser, brokerPass)
	req.Header.Set("X-Broker-API-Version", "2.15")
	req.Header.Set("X-Broker-API-Originating-Identity", ccIdentity("uaa-user-1"))
	req.Header.Set("X-Broker-API-Request-Identity", "req-"+store.NewID())
	for _, o := range opts {
		o(req)
	}
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return osbResp{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

func newGUID() string {
	id := store.NewID() + store.NewID() // 48 hex
	return id[0:8] + "-" + id[8:12] + "-4" + id[13:16] + "-8" + id[17:20] + "-" + id[20:32]
}

func provisionBody(planID string) map[string]any {
	return map[string]any{"service_id": serviceID, "plan_id": planID,
		"organization_guid": "org-1", "space_guid": "space-1",
		"context": map[string]any{"platform": "cloudfoundry", "organization_guid": "org-1", "space_guid": "space-1",
			"instance_name": "my-worker"}}
}

// provision makes an instance on the plan and returns its id.
func provision(planID string) string {
	id := newGUID()
	r := osbDo("PUT", "/v2/service_instances/"+id, provisionBody(planID))
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusCreated), string(r.Body))
	return id
}

func bindBody(planID, appGUID string) map[string]any {
	return map[string]any{"service_id": serviceID, "plan_id": planID, "app_guid": appGUID,
		"bind_resource": map[string]any{"app_guid": appGUID}}
}

// bind makes a binding and returns its id and credentials.
func bind(instanceID, planID string) (string, map[string]any) {
	id := newGUID()
	r := osbDo("PUT", "/v2/service_instances/"+instanceID+"/service_bindings/"+id, bindBody(planID, "app-1"))
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusCreated), string(r.Body))
	return id, r.JSON()["credentials"].(map[string]any)
}

func instanceQuery(planID string) string {
	return "?service_id=" + serviceID + "&plan_id=" + planID
}

// ---- the reference Go OSB client ----

func osbClient() osb.Client {
	cfg := osb.DefaultClientConfiguration()
	cfg.URL = iron.Server.URL
	cfg.APIVersion = osb.Version2_14() // the newest it speaks; the broker serves 2.14+
	cfg.EnableAlphaFeatures = true
	cfg.AuthConfig = &osb.AuthConfig{BasicAuthConfig: &osb.BasicAuthConfig{Username: brokerUser, Password: brokerPass}}
	c, err := osb.NewClient(cfg)
	Expect(err).NotTo(HaveOccurred())
	return c
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func jsonLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
