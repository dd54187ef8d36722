package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/secrets"
	"github.com/ironcf/ironworker-release/src/store"
)

var _ = Describe("migrations", func() {
	It("applies each migration once when several instances start together", func() {
		db, err := testsupport.NewDatabase()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(db.Drop)
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				st, err := store.Open(ctx, db.URL, testsupport.NewSealer(), store.Options{})
				if err != nil {
					errs[i] = err
					return
				}
				defer st.Close()
				errs[i] = st.Migrate(ctx)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			Expect(err).NotTo(HaveOccurred())
		}
		conn, err := db.SQL()
		Expect(err).NotTo(HaveOccurred())
		defer conn.Close()
		var applied, distinct int
		Expect(conn.QueryRow(`SELECT count(*), count(DISTINCT name) FROM schema_migrations`).Scan(&applied, &distinct)).To(Succeed())
		Expect(applied).To(BeNumerically(">=", 1))
		Expect(applied).To(Equal(distinct))
	})
})

var _ = Describe("ids", func() {
	It("are ObjectId-shaped, unique, and increase within a process", func() {
		prev := store.NewID()
		seen := map[string]bool{prev: true}
		for i := 0; i < 10000; i++ {
			id := store.NewID()
			Expect(store.ValidID(id)).To(BeTrue(), id)
			Expect(seen).NotTo(HaveKey(id))
			seen[id] = true
			// The counter may wrap once in 2^24 ids; the time prefix moves on meanwhile.
			if id[:8] == prev[:8] && id[18:] != "000000" {
				Expect(id > prev).To(BeTrue(), "%s after %s", id, prev)
			}
			prev = id
		}
	})
})

var _ = Describe("projects and tokens", func() {
	It("stores only a SHA-256 of each token and revokes at once", func() {
		st, db := freshStore(testsupport.NewSealer())
		ctx := context.Background()
		p, token, err := st.CreateProject(ctx, "p")
		Expect(err).NotTo(HaveOccurred())
		Expect(p.ID).To(MatchRegexp(`^[0-9a-f]{24}$`))
		Expect(st.ProjectForToken(ctx, token)).To(Equal(p.ID))

		conn, _ := db.SQL()
		defer conn.Close()
		var stored []byte
		Expect(conn.QueryRow(`SELECT token_hash FROM tokens WHERE project_id = $1`, p.ID).Scan(&stored)).To(Succeed())
		Expect(stored).To(Equal(store.HashToken(token)))
		Expect(bytes.Contains(stored, []byte(token))).To(BeFalse())

		second, err := st.CreateToken(ctx, p.ID, "binding")
		Expect(err).NotTo(HaveOccurred())
		Expect(st.RevokeToken(ctx, second)).To(Succeed())
		_, err = st.ProjectForToken(ctx, second)
		Expect(err).To(MatchError(store.ErrNotFound))
		Expect(st.ProjectForToken(ctx, token)).To(Equal(p.ID))
		Expect(st.RevokeToken(ctx, second)).To(MatchError(store.ErrNotFound))
	})
})

var _ = Describe("secrets at rest", func() {
	key := func() []byte {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		return k
	}

	It("seals code config and env_vars, and re-seals everything on key rotation", func() {
		k1, k2 := key(), key()
		old, _ := secrets.New("k1", []secrets.Key{{Label: "k1", Secret: k1}})
		st, db := freshStore(old)
		ctx := context.Background()
		p, _, err := st.CreateProject(ctx, "p")
		Expect(err).NotTo(HaveOccurred())
		config := "api_key: s3cret-config"
		code, err := st.SaveCode(ctx, p.ID, store.CodeUpload{Settings: store.CodeSettings{
			Name: "w", Image: "iron/hello", Config: &config, EnvVars: map[string]string{"TOKEN": "s3cret-env"}}})
		Expect(err).NotTo(HaveOccurred())
		Expect(st.SaveRegistryCredentials(ctx, p.ID, "registry.example.com", []byte(`{"password":"s3cret-reg"}`))).To(Succeed())

		conn, _ := db.SQL()
		defer conn.Close()
		var cfg, env, reg []byte
		Expect(conn.QueryRow(`SELECT config_sealed, env_vars_sealed FROM code_revisions WHERE code_id = $1`, code.ID).Scan(&cfg, &env)).To(Succeed())
		Expect(conn.QueryRow(`SELECT auth_sealed FROM registry_credentials`).Scan(&reg)).To(Succeed())
		for _, v := range [][]byte{cfg, env, reg} {
			Expect(string(v)).NotTo(ContainSubstring("s3cret"))
			Expect(secrets.KeyOf(v)).To(Equal("k1"))
		}

		rotated, _ := secrets.New("k2", []secrets.Key{{Label: "k1", Secret: k1}, {Label: "k2", Secret: k2}})
		st2, err := store.Open(ctx, db.URL, rotated, store.Options{})
		Expect(err).NotTo(HaveOccurred())
		defer st2.Close()
		Expect(st2.RotateKeys(ctx)).To(Equal(3))
		Expect(st2.RotateKeys(ctx)).To(Equal(0), "a second pass finds nothing left to re-seal")

		onlyNew, _ := secrets.New("k2", []secrets.Key{{Label: "k2", Secret: k2}})
		st3, err := store.Open(ctx, db.URL, onlyNew, store.Options{})
		Expect(err).NotTo(HaveOccurred())
		defer st3.Close()
		got, err := st3.GetCode(ctx, p.ID, code.ID)
		Expect(err).NotTo(HaveOccurred())
		Expect(*got.Revision.Settings.Config).To(Equal(config))
		Expect(got.Revision.Settings.EnvVars).To(Equal(map[string]string{"TOKEN": "s3cret-env"}))
		Expect(st3.RegistryCredentials(ctx, p.ID, "registry.example.com")).To(Equal([]byte(`{"password":"s3cret-reg"}`)))
	})
})
