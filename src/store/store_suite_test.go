package store_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/secrets"
	"github.com/ironcf/ironworker-release/src/store"
)

func TestStore(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Store suite")
}

// freshStore opens a migrated store on a database of its own, dropped after the spec.
func freshStore(sealer *secrets.Sealer) (*store.Store, *testsupport.Database) {
	db, err := testsupport.NewDatabase()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(db.Drop)
	st, err := store.Open(context.Background(), db.URL, sealer, store.Options{MaxOpenConns: 10})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(st.Close)
	Expect(st.Migrate(context.Background())).To(Succeed())
	return st, db
}
