package config_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
)

var _ = Describe("LoadRegistrar", func() {
	const minimal = `
cf: {api_url: "https://api.sys.example.com", client_id: iron-registrar, client_secret: s3cret}
marketplace:
  broker: {url: "https://iron.sys.example.com", username: broker, password: "broker-password"}
routes:
  nats: {servers: ["10.0.0.1:4224"]}
  host: 10.0.1.5
  port: 8080
  uris: [iron.sys.example.com]
`
	It("applies defaults to a minimal config", func() {
		c, err := config.LoadRegistrar(write(minimal))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.LogLevel).To(Equal("info"))
		Expect(c.Marketplace.IsEnabled()).To(BeTrue())
		Expect(c.Routes.IsEnabled()).To(BeTrue())
		Expect(c.Marketplace.Interval.Std()).To(Equal(5 * time.Minute))
		Expect(c.Marketplace.JobTimeout.Std()).To(Equal(5 * time.Minute))
		Expect(c.Marketplace.Broker.Name).To(Equal("ironworker"))
		Expect(c.Marketplace.DefaultVisibility).To(Equal("public"))
		Expect(c.Routes.RegisterInterval.Std()).To(Equal(20 * time.Second))
		Expect(c.Routes.NATS.ConnectTimeout.Std()).To(Equal(5 * time.Second))
		Expect(c.Routes.NATS.MaxReconnectWait.Std()).To(Equal(10 * time.Second))
		Expect(c.CF.RequestTimeout.Std()).To(Equal(30 * time.Second))
	})

	It("reads every property", func() {
		c, err := config.LoadRegistrar(write(`
listen_address: 127.0.0.1:8091
log_level: debug
cf: {api_url: "https://api.sys.example.com", client_id: id, client_secret: s, skip_ssl_validation: true, request_timeout: 10s}
marketplace:
  interval: 1m
  job_timeout: 2m
  broker: {name: iron, url: "https://iron.sys.example.com", username: broker, password: "broker-password"}
  default_visibility: organization
  default_orgs: [o1]
  plans:
  - {name: free, visibility: public}
  - {name: big, visibility: admin}
  diego:
    org: system
    space: ironworker
    space_quota: {name: iron, total_memory_in_mb: 10240, per_app_tasks: 50}
routes:
  nats:
    servers: ["10.0.0.1:4224", "10.0.0.2:4224"]
    user: nats
    password: pw
    tls: {enabled: true, ca_cert: CA, client_cert: CERT, client_key: KEY, server_name: nats.service.cf.internal}
  register_interval: 10
  host: 10.0.1.5
  tls_port: 8443
  server_cert_domain_san: iron-api.service.cf.internal
  uris: [iron.sys.example.com, ironworker.sys.example.com]
  tags: {component: iron-api}
  private_instance_id: 0b5c-instance
  availability_zone: z1
  protocol: http2
`))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Marketplace.Plans).To(HaveLen(2))
		Expect(c.Marketplace.Diego.SpaceQuota.Name).To(Equal("iron"))
		Expect(*c.Marketplace.Diego.SpaceQuota.TotalMemoryInMB).To(Equal(10240))
		Expect(c.Routes.RegisterInterval.Std()).To(Equal(10 * time.Second))
		Expect(c.Routes.NATS.TLS.ServerName).To(Equal("nats.service.cf.internal"))
		Expect(c.Routes.Tags).To(Equal(map[string]string{"component": "iron-api"}))
	})

	It("needs no CF settings when only routes are enabled, and no NATS when only the marketplace is", func() {
		_, err := config.LoadRegistrar(write(`
marketplace: {enabled: false}
routes: {nats: {servers: ["n:4222"]}, host: h, port: 80, uris: [a.example.com]}
`))
		Expect(err).NotTo(HaveOccurred())
		_, err = config.LoadRegistrar(write(`
cf: {api_url: "https://api.sys.example.com", client_id: id, client_secret: s}
marketplace: {broker: {url: "https://iron.example.com", username: u, password: "12345678"}}
routes: {enabled: false}
`))
		Expect(err).NotTo(HaveOccurred())
	})

	It("names every offending property", func() {
		_, err := config.LoadRegistrar(write(`
listen_address: nope
log_level: loud
cf: {api_url: "ftp://x", request_timeout: 1ms}
marketplace:
  interval: 1ms
  job_timeout: 1ms
  broker: {url: "", username: "a:b", password: short}
  default_visibility: space
  plans:
  - {name: free, visibility: organization}
  - {name: free, visibility: public, orgs: [o]}
  diego: {org: "", space: "", space_quota: {name: "", total_memory_in_mb: -1}}
routes:
  nats: {servers: ["nohost"], tls: {enabled: true, client_cert: C}}
  register_interval: 5m
  host: ""
  tls_port: 70000
  uris: ["https://iron.example.com"]
  protocol: spdy
`))
		Expect(err).To(HaveOccurred())
		for _, prop := range []string{"listen_address", "log_level", "cf.api_url", "cf.client_id", "cf.client_secret", "cf.request_timeout",
			"marketplace.interval", "marketplace.job_timeout", "marketplace.broker.url", "marketplace.broker.username",
			"marketplace.broker.password", "marketplace.default_visibility", "marketplace.plans[0].visibility",
			"marketplace.plans[1].name: duplicate", "marketplace.plans[1].visibility", "marketplace.diego.org", "marketplace.diego.space",
			"marketplace.diego.space_quota.name", "marketplace.diego.space_quota.total_memory_in_mb",
			"routes.nats.servers[0]", "routes.nats.tls.ca_cert", "routes.nats.tls.client_cert", "routes.register_interval",
			"routes.host", "routes.tls_port", "routes.server_cert_domain_san", "routes.uris[0]", "routes.protocol"} {
			Expect(err.Error()).To(ContainSubstring(prop))
		}
	})

	It("refuses unknown keys and an empty job", func() {
		_, err := config.LoadRegistrar(write(minimal + "routes_extra: 1\n"))
		Expect(err).To(MatchError(ContainSubstring("routes_extra")))
		_, err = config.LoadRegistrar(write("marketplace: {enabled: false}\nroutes: {enabled: false}\n"))
		Expect(err).To(MatchError(ContainSubstring("nothing to do")))
	})
})
