package api_test

import (
	"context"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/store"
)

var _ = Describe("token lookups (cached briefly per API instance)", func() {
	get := func(token string) int {
		return iron.DoAs(token, "GET", iron.Project(), nil, nil).Status
	}

	It("refuses a token revoked through this process at once, even one just used", func() {
		token, err := iron.Store.CreateToken(context.Background(), iron.ProjectID, "revoked in process")
		Expect(err).NotTo(HaveOccurred())
		Expect(get(token)).To(Equal(http.StatusOK))
		Expect(get(token)).To(Equal(http.StatusOK))
		Expect(iron.Store.RevokeToken(context.Background(), token)).To(Succeed())
		Expect(get(token)).To(Equal(http.StatusUnauthorized))
		Expect(get(iron.Token)).To(Equal(http.StatusOK), "other tokens keep working")
	})

	It("refuses a token revoked by another instance (straight in the database) within the cache's lifetime", func() {
		token, err := iron.Store.CreateToken(context.Background(), iron.ProjectID, "revoked elsewhere")
		Expect(err).NotTo(HaveOccurred())
		Expect(get(token)).To(Equal(http.StatusOK))
		sqlExec(`UPDATE tokens SET revoked_at = now() WHERE token_hash = $1`, store.HashToken(token))
		Eventually(func() int { return get(token) }).WithTimeout(3 * time.Second).WithPolling(100 * time.Millisecond).
			Should(Equal(http.StatusUnauthorized))
	})

	It("takes a new token at once and does not remember refusals", func() {
		token := store.NewToken()
		Expect(get(token)).To(Equal(http.StatusUnauthorized))
		sqlExec(`INSERT INTO tokens (token_hash, project_id, description) VALUES ($1, $2, 'late')`, store.HashToken(token), iron.ProjectID)
		Expect(get(token)).To(Equal(http.StatusOK))
	})
})
