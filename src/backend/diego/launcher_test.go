package diego_test

import (
	"os/exec"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend/diego"
)

var _ = Describe("LauncherCommand", func() {
	base := diego.Launch{TaskID: "t1", UserScript: `ruby worker.rb "$@"`, InputURL: "https://api.example.com/internal/v1/tasks/t1/input", InputToken: "secret-token"}

	It("inlines small payloads and configs, and leaves the credential out", func() {
		l := base
		l.Payload, l.Config = `{"a":1}`, "c"
		cmd, fetch, err := diego.LauncherCommand(l)
		Expect(err).NotTo(HaveOccurred())
		Expect(fetch).To(BeFalse())
		Expect(cmd).NotTo(ContainSubstring("secret-token"))
		Expect(cmd).To(ContainSubstring(`printf %s '{"a":1}' >"$PAYLOAD_FILE"`))
	})

	It("fetches what does not fit, and what is not valid UTF-8 or holds NUL", func() {
		for _, p := range []string{strings.Repeat("x", 5000), "a\x00b", "\xff\xfe"} {
			l := base
			l.Payload, l.Config = p, "small"
			cmd, fetch, err := diego.LauncherCommand(l)
			Expect(err).NotTo(HaveOccurred())
			Expect(fetch).To(BeTrue())
			Expect(cmd).To(ContainSubstring(`g payload "$PAYLOAD_FILE";`))
			Expect(cmd).To(ContainSubstring(`printf %s 'small' >"$CONFIG_FILE";`))
			Expect(cmd).To(ContainSubstring("T='secret-token'"))
			Expect(cmd).To(ContainSubstring("unset U T;"))
			Expect(len(cmd)).To(BeNumerically("<=", diego.CommandMaxLength))
		}
	})

	It("inlines up to exactly 4096 bytes and fetches beyond", func() {
		l := base
		l.Payload = "x"
		cmd, _, err := diego.LauncherCommand(l)
		Expect(err).NotTo(HaveOccurred())
		n := diego.CommandMaxLength - len(cmd) + 1
		l.Payload = strings.Repeat("x", n)
		cmd, fetch, err := diego.LauncherCommand(l)
		Expect(err).NotTo(HaveOccurred())
		Expect(fetch).To(BeFalse())
		Expect(cmd).To(HaveLen(diego.CommandMaxLength))
		l.Payload += "x"
		cmd, fetch, err = diego.LauncherCommand(l)
		Expect(err).NotTo(HaveOccurred())
		Expect(fetch).To(BeTrue())
		Expect(len(cmd)).To(BeNumerically("<", 1100))
	})

	It("fails when nothing fits", func() {
		l := base
		l.Payload, l.InputURL = strings.Repeat("x", 5000), ""
		_, _, err := diego.LauncherCommand(l)
		Expect(err).To(MatchError(diego.ErrCommandTooLong))
		l = base
		l.UserScript = strings.Repeat("y", 4000)
		_, _, err = diego.LauncherCommand(l)
		Expect(err).To(MatchError(diego.ErrCommandTooLong))
	})

	It("is valid POSIX sh", func() {
		l := base
		l.Payload = mixedPayload(3000)
		l.Config = "x'y"
		for _, docker := range []bool{false, true} {
			l.Docker = docker
			for _, p := range []string{"small", mixedPayload(6000)} {
				l.Payload = p
				cmd, _, err := diego.LauncherCommand(l)
				Expect(err).NotTo(HaveOccurred())
				out, err := exec.Command("/bin/sh", "-n", "-c", cmd).CombinedOutput()
				Expect(err).NotTo(HaveOccurred(), string(out))
			}
		}
	})
})
