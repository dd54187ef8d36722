package config_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	"github.com/ironcf/ironworker-release/src/config"
)

var _ = Describe("Diego", func() {
	parse := func(body string) (config.Diego, error) {
		var d config.Diego
		if err := yaml.UnmarshalStrict([]byte(body), &d); err != nil {
			return d, err
		}
		d.ApplyDefaults()
		return d, d.Validate()
	}

	It("applies defaults to a minimal config", func() {
		d, err := parse(`
api_url: https://api.sys.example.com
client_id: iron-runner
client_secret: s3cret
org: ironworker
space: tasks
`)
		Expect(err).NotTo(HaveOccurred())
		Expect(d.PollInterval.Std()).To(Equal(2 * time.Second))
		Expect(d.RequestTimeout.Std()).To(Equal(30 * time.Second))
		Expect(d.StagingTimeout.Std()).To(Equal(15 * time.Minute))
		Expect(d.AppNamePrefix).To(Equal("iw"))
	})

	It("reads every property", func() {
		d, err := parse(`
api_url: http://api.lab
client_id: c
client_secret: s
org: o
space: s
buildpacks: [binary_buildpack, ruby_buildpack]
stack: cflinuxfs4
skip_ssl_validation: true
launcher_skip_ssl_validation: true
poll_interval: 500ms
request_timeout: 10
staging_timeout: 2m
default_memory_mb: 256
default_disk_mb: 512
app_name_prefix: iron
`)
		Expect(err).NotTo(HaveOccurred())
		Expect(d.Buildpacks).To(Equal([]string{"binary_buildpack", "ruby_buildpack"}))
		Expect(d.PollInterval.Std()).To(Equal(500 * time.Millisecond))
		Expect(d.RequestTimeout.Std()).To(Equal(10 * time.Second))
		Expect(d.SkipSSLValidation).To(BeTrue())
		Expect(d.DefaultMemoryMB).To(Equal(256))
	})

	It("names every offending property", func() {
		_, err := parse(`
api_url: ftp://x
poll_interval: 1ms
request_timeout: 100ms
default_memory_mb: -1
app_name_prefix: Not_OK
buildpacks: [""]
`)
		Expect(err).To(HaveOccurred())
		for _, prop := range []string{"diego.api_url", "diego.client_id", "diego.client_secret", "diego.org", "diego.space",
			"diego.poll_interval", "diego.request_timeout", "diego.default_memory_mb", "diego.app_name_prefix", "diego.buildpacks[0]"} {
			Expect(err.Error()).To(ContainSubstring(prop + ":"))
		}
	})

	It("refuses unknown keys", func() {
		_, err := parse("api_url: https://x\nclient_secrets: y\n")
		Expect(err).To(MatchError(ContainSubstring("client_secrets")))
	})
})
