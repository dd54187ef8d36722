package broker_test

import (
	"encoding/base64"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
)

// The broker section of the iron-api config: defaults and validation by property name.
var _ = Describe("broker config", func() {
	validAPI := func(b config.Broker) config.API {
		c := config.API{Database: config.Database{URL: "postgres://x@127.0.0.1/db"}, Broker: b,
			Encryption: config.Encryption{ActiveKey: "k", Keys: []config.EncryptionKey{
				{Label: "k", Secret: base64.StdEncoding.EncodeToString(make([]byte, 32))}}}}
		c.ApplyDefaults()
		return c
	}

	It("accepts the suite's catalog and defaults the rest", func() {
		b := brokerConfig()
		b.ExternalAPI = config.ExternalAPI{Host: "iron.sys.example.com"}
		c := validAPI(b)
		Expect(c.Validate()).To(Succeed())
		Expect(c.Broker.ExternalAPI.Scheme).To(Equal("https"))
		Expect(c.Broker.ExternalAPI.Port).To(Equal(443))
		Expect(c.Broker.PurgeAfter.Std().Minutes()).To(BeNumerically("==", 10))
		Expect(c.Broker.Plans[0].IsFree()).To(BeTrue())
		Expect(c.Broker.Plans[1].IsFree()).To(BeFalse())
	})

	It("is not checked while the broker is disabled", func() {
		Expect(validAPI(config.Broker{}).Validate()).To(Succeed())
	})

	It("names every invalid property", func() {
		b := brokerConfig()
		b.Username = ""
		b.Password = "short"
		b.Service.ID = ""
		b.Service.Name = "Iron Worker"
		b.Plans = append(b.Plans,
			config.BrokerPlan{ID: smallPlan, Name: "small", Quotas: config.PlanQuotas{MaxQueuedTasks: ptr(0), AllowedPriorities: []int{1, 3}}})
		b.ExternalAPI = config.ExternalAPI{Scheme: "ftp", Host: "https://iron.example.com", Port: 70000}
		err := validAPI(b).Validate()
		Expect(err).To(HaveOccurred())
		for _, want := range []string{
			"broker.username: required",
			"broker.password: must be at least 8 characters",
			"broker.service.id: required",
			`broker.service.name: must be lowercase letters, digits and dashes, got "Iron Worker"`,
			`broker.plans[2].id: duplicate id "` + smallPlan + `"`,
			`broker.plans[2].name: duplicate name "small"`,
			"broker.plans[2].description: required",
			"broker.plans[2].quotas.max_queued_tasks: must be positive (leave it out for unlimited), got 0",
			"broker.plans[2].quotas.allowed_priorities: priorities are 0, 1 or 2, got 3",
			"broker.plans[2].quotas.allowed_priorities: must include 0",
			`broker.external_api.scheme: must be https or http, got "ftp"`,
			"broker.external_api.host: required",
			"broker.external_api.port: must be from 1 to 65535, got 70000",
		} {
			Expect(err.Error()).To(ContainSubstring(want))
		}
	})

	It("requires a plan", func() {
		b := brokerConfig()
		b.Plans = nil
		Expect(validAPI(b).Validate()).To(MatchError(ContainSubstring("broker.plans: at least one plan is required")))
	})

	It("loads from YAML as the BOSH template renders it", func() {
		path := filepath.Join(GinkgoT().TempDir(), "iron-api.yml")
		Expect(os.WriteFile(path, []byte(`
database: {url: "postgres://x@127.0.0.1/db"}
encryption:
  active_key: k
  keys: [{label: k, secret: "`+base64.StdEncoding.EncodeToString(make([]byte, 32))+`"}]
broker:
  enabled: true
  username: cc
  password: a-long-password
  service: {id: svc-guid, tags: [ironworker], display_name: IronWorker, provider_name: ACME, documentation_url: "https://docs"}
  plans:
    - id: plan-guid
      name: standard
      description: Standard
      free: false
      quotas: {max_concurrency: 2, max_timeout_seconds: 600, max_payload_bytes: 1024, max_queued_tasks: 10, max_schedules: 3, allowed_priorities: [0, 1]}
  external_api: {host: iron.sys.example.com}
`), 0o600)).To(Succeed())
		c, err := config.LoadAPI(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Broker.Service.Name).To(Equal("ironworker"))
		Expect(c.Broker.Plans[0].IsFree()).To(BeFalse())
		Expect(*c.Broker.Plans[0].Quotas.MaxSchedules).To(Equal(3))
		Expect(c.Broker.Plans[0].Quotas.AllowedPriorities).To(Equal([]int{0, 1}))
	})
})
