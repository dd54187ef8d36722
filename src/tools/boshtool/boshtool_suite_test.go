package boshtool_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestBoshtool(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "boshtool suite")
}
