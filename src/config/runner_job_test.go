package config_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
)

var _ = Describe("LoadRunner", func() {
	const minimal = `
api_url: https://iron.sys.example.com
credential: {name: runner-1, secret: "0123456789abcdef"}
backend:
  local: {work_dir: /var/vcap/data/iron-runner/tasks}
`
	It("applies defaults to a minimal config", func() {
		c, err := config.LoadRunner(write(minimal))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Slots).To(Equal(4))
		Expect(c.LeaseBatch).To(Equal(4))
		Expect(c.LeaseWait.Std()).To(Equal(20 * time.Second))
		Expect(c.HeartbeatInterval.Std()).To(Equal(10 * time.Second))
		Expect(c.DrainTimeout.Std()).To(Equal(60 * time.Second))
		Expect(c.RequestTimeout.Std()).To(Equal(30 * time.Second))
		Expect(c.Logs.FlushInterval.Std()).To(Equal(500 * time.Millisecond))
		Expect(c.Logs.BatchBytes).To(Equal(64 << 10))
		Expect(c.Logs.BufferBytes).To(Equal(4 << 20))
		Expect(c.Backend.Type).To(Equal("local"))
		Expect(c.Backend.Local.MaxLogBytes).To(Equal(int64(1 << 20)))
		Expect(c.Backend.Local.MemoryLimiter).To(Equal("auto"))
		Expect(c.Backend.Local.KillGrace.Std()).To(Equal(10 * time.Second))
		Expect(c.LogLevel).To(Equal("info"))
		Expect(c.ListenAddress).To(BeEmpty())
	})

	It("reads every property", func() {
		c, err := config.LoadRunner(write(`
api_url: http://127.0.0.1:8080
credential: {name: r, secret: "0123456789abcdef"}
runner_id: runner-a
slots: 8
lease_batch: 2
lease_wait: 5s
heartbeat_interval: 2
drain_timeout: 90s
request_timeout: 10s
listen_address: 127.0.0.1:8081
logs: {flush_interval: 250ms, batch_bytes: 1024, buffer_bytes: 4096}
backend:
  type: local
  local: {work_dir: /tmp/w, max_log_bytes: 2048, memory_mb: 256, memory_limiter: prlimit, kill_grace: 3s,
          max_unpacked_bytes: 1000000, max_files: 10, keep_dirs: true, path: /bin}
log_level: debug
`))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.RunnerID).To(Equal("runner-a"))
		Expect(c.Slots).To(Equal(8))
		Expect(c.LeaseBatch).To(Equal(2))
		Expect(c.HeartbeatInterval.Std()).To(Equal(2 * time.Second))
		Expect(c.ListenAddress).To(Equal("127.0.0.1:8081"))
		Expect(c.Logs.BatchBytes).To(Equal(1024))
		Expect(c.Backend.Local).To(Equal(config.LocalBackend{WorkDir: "/tmp/w", MaxLogBytes: 2048, MemoryMB: 256,
			MemoryLimiter: "prlimit", KillGrace: config.Duration(3 * time.Second), MaxUnpackedBytes: 1000000, MaxFiles: 10,
			KeepDirs: true, Path: "/bin"}))
	})

	It("takes the diego backend's config (validated as the diego section)", func() {
		c, err := config.LoadRunner(write(`
api_url: https://iron.sys.example.com
credential: {name: r, secret: "0123456789abcdef"}
backend:
  type: diego
  diego: {api_url: "https://api.sys.example.com", client_id: iron, client_secret: s, org: o, space: s}
`))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Backend.Diego.PollInterval.Std()).To(Equal(2*time.Second), "diego defaults apply")
		_, err = config.LoadRunner(write(`
api_url: https://iron.sys.example.com
credential: {name: r, secret: "0123456789abcdef"}
backend: {type: diego, diego: {api_url: "ftp://x"}}
`))
		Expect(err).To(MatchError(And(ContainSubstring("backend.diego.api_url"), ContainSubstring("backend.diego.client_id"),
			ContainSubstring("backend.diego.org"))))
		_, err = config.LoadRunner(write(`
api_url: https://iron.sys.example.com
credential: {name: r, secret: "0123456789abcdef"}
backend: {type: diego}
`))
		Expect(err).To(MatchError(ContainSubstring("backend.diego: required when backend.type is diego")))
	})

	It("accepts the noop backend without a work dir", func() {
		_, err := config.LoadRunner(write(`
api_url: https://iron.sys.example.com
credential: {secret: "0123456789abcdef"}
backend: {type: noop}
`))
		Expect(err).NotTo(HaveOccurred())
	})

	It("names every bad property", func() {
		_, err := config.LoadRunner(write(`
api_url: "iron.example.com"
credential: {name: "a:b", secret: short}
slots: -1
lease_batch: 101
lease_wait: 10m
heartbeat_interval: 1ms
drain_timeout: -1s
request_timeout: 1ms
listen_address: nope
logs: {flush_interval: 1ms, batch_bytes: 100, buffer_bytes: 10}
backend:
  type: local
  local: {max_log_bytes: -1, memory_mb: -1, memory_limiter: magic, kill_grace: -1s, max_unpacked_bytes: -1, max_files: -1}
log_level: loud
`))
		Expect(err).To(HaveOccurred())
		for _, prop := range []string{"api_url", "credential.name", "credential.secret", "slots", "lease_batch", "lease_wait",
			"heartbeat_interval", "drain_timeout", "request_timeout", "listen_address", "logs.flush_interval",
			"logs.buffer_bytes", "backend.local.work_dir", "backend.local.max_log_bytes", "backend.local.memory_mb",
			"backend.local.memory_limiter", "backend.local.kill_grace", "backend.local.max_unpacked_bytes",
			"backend.local.max_files", "log_level"} {
			Expect(err.Error()).To(ContainSubstring(prop + ":"))
		}
		_, err = config.LoadRunner(write(minimal + "backend_type: local\n"))
		Expect(err).To(HaveOccurred(), "unknown keys are refused")
		_, err = config.LoadRunner(write(`
api_url: https://iron.sys.example.com
credential: {secret: "0123456789abcdef"}
backend: {type: docker}
`))
		Expect(err).To(MatchError(ContainSubstring("backend.type: must be local, diego or noop")))
	})
})
