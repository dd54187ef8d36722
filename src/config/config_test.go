package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
)

func TestConfig(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Config suite")
}

const validKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes

func write(body string) string {
	path := filepath.Join(GinkgoT().TempDir(), "iron-api.yml")
	Expect(os.WriteFile(path, []byte(body), 0o600)).To(Succeed())
	return path
}

var _ = Describe("LoadAPI", func() {
	It("applies defaults to a minimal config", func() {
		c, err := config.LoadAPI(write(`
database: {url: "postgres://iron@127.0.0.1:5432/iron"}
encryption: {active_key: k1, keys: [{label: k1, secret: "` + validKey + `"}]}
`))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.ListenAddress).To(Equal("0.0.0.0:8080"))
		Expect(c.Limits.MaxCodeSizeBytes).To(Equal(int64(100 << 20)))
		Expect(c.Limits.MaxPayloadBytes).To(Equal(64 << 10))
		Expect(c.Limits.MaxTaskTimeoutSeconds).To(Equal(3600))
		Expect(c.Limits.DefaultTaskTimeoutSeconds).To(Equal(3600))
		Expect(c.Limits.MaxDelaySeconds).To(Equal(604800))
		Expect(c.Scheduler.IsEnabled()).To(BeTrue())
		Expect(c.Scheduler.Interval.Std()).To(Equal(time.Second))
		Expect(c.Database.DSN()).To(ContainSubstring("connect_timeout=10"))
	})

	It("reads JSON too, and durations as strings or seconds", func() {
		c, err := config.LoadAPI(write(`{"database": {"host": "db", "name": "iron", "user": "u", "password": "p'w"},
			"scheduler": {"interval": "250ms"}, "shutdown_timeout": 5,
			"encryption": {"active_key": "k1", "keys": [{"label": "k1", "secret": "` + validKey + `"}]}}`))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Scheduler.Interval.Std()).To(Equal(250 * time.Millisecond))
		Expect(c.ShutdownTimeout.Std()).To(Equal(5 * time.Second))
		Expect(c.Database.DSN()).To(ContainSubstring(`password='p\'w'`))
		Expect(c.Database.DSN()).To(ContainSubstring("port=5432"))
	})

	It("refuses unknown keys, so a template and the code cannot drift apart", func() {
		_, err := config.LoadAPI(write(`
database: {url: "postgres://iron@127.0.0.1/iron"}
encryption: {active_key: k1, keys: [{label: k1, secret: "` + validKey + `"}]}
limts: {max_payload_bytes: 10}
`))
		Expect(err).To(MatchError(ContainSubstring(`"limts"`)))
	})

	It("names every bad property", func() {
		_, err := config.LoadAPI(write(`
listen_address: "nonsense"
database: {host: db}
limits: {max_task_timeout_seconds: 60, default_task_timeout_seconds: 120}
encryption: {active_key: k2, keys: [{label: k1, secret: "c2hvcnQ="}]}
log_level: loud
`))
		Expect(err).To(HaveOccurred())
		for _, prop := range []string{"listen_address", "database.name", "database.user",
			"limits.default_task_timeout_seconds", "encryption.keys[0].secret", "encryption.active_key", "log_level"} {
			Expect(err.Error()).To(ContainSubstring(prop + ":"))
		}
	})

	It("refuses a config without encryption keys", func() {
		_, err := config.LoadAPI(write(`database: {url: "postgres://iron@127.0.0.1/iron"}`))
		Expect(err).To(MatchError(ContainSubstring("encryption.keys: at least one key is required")))
	})

	It("says which file could not be read", func() {
		_, err := config.LoadAPI("/nonexistent/iron-api.yml")
		Expect(err).To(MatchError(ContainSubstring("/nonexistent/iron-api.yml")))
	})
})
