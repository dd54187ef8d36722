package api_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
)

func TestAPI(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "IronWorker API contract suite")
}

// iron is the live API every spec in this suite talks to, on one database per process.
var iron *testsupport.API

var _ = BeforeSuite(func() {
	var err error
	iron, err = testsupport.StartAPI(config.Limits{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(iron.Stop)
})
