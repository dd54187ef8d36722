package config_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
)

var _ = Describe("LoadAPI: the runner section", func() {
	const base = `
database: {url: "postgres://iron@127.0.0.1:5432/iron"}
encryption: {active_key: k1, keys: [{label: k1, secret: "` + validKey + `"}]}
`
	It("defaults the lease timings and allows no credentials (the protocol then refuses all)", func() {
		c, err := config.LoadAPI(write(base))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Runner.Credentials).To(BeEmpty())
		Expect(c.Runner.LeaseWait.Std()).To(Equal(20 * time.Second))
		Expect(c.Runner.LeaseDuration.Std()).To(Equal(30 * time.Second))
		Expect(c.Runner.ReaperInterval.Std()).To(Equal(5 * time.Second))
		Expect(c.Runner.MaxLeaseAttempts).To(Equal(5))
	})

	It("reads several credentials, so that secrets can rotate", func() {
		c, err := config.LoadAPI(write(base + `
runner:
  credentials: [{name: old, secret: "0123456789abcdef-old"}, {name: new, secret: "0123456789abcdef-new"}]
  lease_wait: 10s
  lease_duration: 45
  reaper_interval: 500ms
`))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Runner.Credentials).To(Equal([]config.RunnerCredential{
			{Name: "old", Secret: "0123456789abcdef-old"}, {Name: "new", Secret: "0123456789abcdef-new"}}))
		Expect(c.Runner.LeaseWait.Std()).To(Equal(10 * time.Second))
		Expect(c.Runner.LeaseDuration.Std()).To(Equal(45 * time.Second))
		Expect(c.Runner.ReaperInterval.Std()).To(Equal(500 * time.Millisecond))
	})

	It("names every bad runner property", func() {
		_, err := config.LoadAPI(write(base + `
runner:
  credentials: [{name: "", secret: short}, {name: "a:b", secret: "0123456789abcdef"}, {name: "a:b", secret: "0123456789abcdef"}]
  lease_wait: 10m
  lease_duration: 100ms
  reaper_interval: 1ms
  max_lease_attempts: -1
`))
		Expect(err).To(HaveOccurred())
		for _, prop := range []string{"runner.credentials[0].name", "runner.credentials[0].secret", "runner.credentials[1].name",
			"runner.credentials[2].name: duplicate", "runner.lease_wait", "runner.lease_duration", "runner.reaper_interval",
			"runner.max_lease_attempts"} {
			Expect(err.Error()).To(ContainSubstring(prop))
		}
		_, err = config.LoadAPI(write(base + "runner: {credentals: []}\n"))
		Expect(err).To(HaveOccurred(), "unknown keys are refused")
	})
})
