package noop_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/backend/noop"
)

func TestNoop(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Noop backend suite")
}

var _ = Describe("noop backend", func() {
	It("completes every task instantly and forgets it once collected", func() {
		ctx := context.Background()
		b := noop.New()
		ref, err := b.Start(ctx, backend.Spec{TaskID: "t1"}, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(b.Status(ctx, ref)).To(HaveField("Phase", backend.Exited))
		res, err := b.Wait(ctx, ref)
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Success()).To(BeTrue())
		Expect(b.Status(ctx, ref)).To(HaveField("Phase", backend.Gone))
		_, err = b.Wait(ctx, ref)
		Expect(err).To(MatchError(backend.ErrGone))
		Expect(b.Cancel(ctx, ref)).To(Succeed())
		_, err = b.Status(ctx, "local:x")
		Expect(err).To(HaveOccurred())
	})
})
