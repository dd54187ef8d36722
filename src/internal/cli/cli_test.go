package cli_test

import (
	"os"
	"runtime/debug"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/cli"
)

var _ = Describe("TuneGC", func() {
	// currentGC reads the GC percent (SetGCPercent answers the previous one).
	currentGC := func() int {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	BeforeEach(func() {
		prev := debug.SetGCPercent(100)
		DeferCleanup(func() { debug.SetGCPercent(prev) })
	})

	It("collects less often than Go's default", func() {
		if v, set := os.LookupEnv("GOGC"); set {
			Expect(os.Unsetenv("GOGC")).To(Succeed())
			DeferCleanup(os.Setenv, "GOGC", v)
		}
		cli.TuneGC()
		Expect(currentGC()).To(Equal(400))
	})

	It("leaves an operator's GOGC alone", func() {
		GinkgoT().Setenv("GOGC", "150")
		debug.SetGCPercent(150) // what the runtime read from it at start
		cli.TuneGC()
		Expect(currentGC()).To(Equal(150))
	})
})
