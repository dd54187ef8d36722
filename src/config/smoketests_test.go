package config_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
)

var _ = Describe("LoadSmokeTests", func() {
	const minimal = `broker: {url: "http://10.0.16.10:8080", username: ironworker-broker, password: secret-password}`

	It("applies defaults to a minimal config", func() {
		c, err := config.LoadSmokeTests(write(minimal))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.TaskTimeout.Std()).To(Equal(5 * time.Minute))
		Expect(c.RequestTimeout.Std()).To(Equal(30 * time.Second))
		Expect(c.PollInterval.Std()).To(Equal(time.Second))
		Expect(c.CodeName).To(Equal("ironworker-smoke-test"))
		Expect(c.OrganizationGUID).NotTo(BeEmpty())
		Expect(c.SpaceGUID).NotTo(BeEmpty())
		Expect(c.APIURL).To(BeEmpty())
	})

	It("reads every property", func() {
		c, err := config.LoadSmokeTests(write(`
broker: {url: "https://iron.sys.example.com", username: u, password: p}
api_url: https://iron.sys.example.com
service_name: ironworker
plan_name: standard
organization_guid: org
space_guid: space
code_name: smoke
stack: cflinuxfs4
task_timeout: 10m
request_timeout: 5
poll_interval: 500ms
skip_ssl_validation: true
`))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.PlanName).To(Equal("standard"))
		Expect(c.RequestTimeout.Std()).To(Equal(5 * time.Second))
		Expect(c.SkipSSLValidation).To(BeTrue())
		Expect(c.Stack).To(Equal("cflinuxfs4"))
	})

	It("refuses unknown keys", func() {
		_, err := config.LoadSmokeTests(write(minimal + "\nbroker_url: x\n"))
		Expect(err).To(MatchError(ContainSubstring("broker_url")))
	})

	DescribeTable("names the bad property",
		func(yaml, property string) {
			_, err := config.LoadSmokeTests(write(yaml))
			Expect(err).To(MatchError(ContainSubstring(property + ":")))
			Expect(err.Error()).To(ContainSubstring("invalid smoke-tests config"))
		},
		Entry("no broker URL", `broker: {username: u, password: p}`, "broker.url"),
		Entry("a broker URL without scheme", `broker: {url: "iron:8080", username: u, password: p}`, "broker.url"),
		Entry("a user with a colon", `broker: {url: "http://x", username: "a:b", password: p}`, "broker.username"),
		Entry("no password", `broker: {url: "http://x", username: u}`, "broker.password"),
		Entry("a bad api_url", minimal+"\napi_url: iron.example.com\n", "api_url"),
		Entry("a bad code name", minimal+"\ncode_name: \"a b\"\n", "code_name"),
		Entry("a tiny task timeout", minimal+"\ntask_timeout: 10ms\n", "task_timeout"),
		Entry("a tiny request timeout", minimal+"\nrequest_timeout: 1ms\n", "request_timeout"),
		Entry("a slow poll", minimal+"\npoll_interval: 2m\n", "poll_interval"),
	)
})
