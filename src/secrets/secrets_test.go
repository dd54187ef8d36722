package secrets_test

import (
	"bytes"
	"crypto/rand"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/secrets"
)

func TestSecrets(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Secrets suite")
}

func key() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

var _ = Describe("Sealer", func() {
	var k1, k2 []byte
	BeforeEach(func() { k1, k2 = key(), key() })

	It("round-trips and never stores the plaintext", func() {
		s, err := secrets.New("k1", []secrets.Key{{Label: "k1", Secret: k1}})
		Expect(err).NotTo(HaveOccurred())
		sealed, err := s.Seal([]byte("DATABASE_PASSWORD=hunter2"))
		Expect(err).NotTo(HaveOccurred())
		Expect(bytes.Contains(sealed, []byte("hunter2"))).To(BeFalse())
		plain, err := s.Open(sealed)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(plain)).To(Equal("DATABASE_PASSWORD=hunter2"))
	})

	It("uses a fresh nonce every time", func() {
		s, _ := secrets.New("k1", []secrets.Key{{Label: "k1", Secret: k1}})
		a, _ := s.Seal([]byte("same"))
		b, _ := s.Seal([]byte("same"))
		Expect(a).NotTo(Equal(b))
	})

	It("opens values sealed with an older key after rotation, and seals new ones with the active key", func() {
		old, _ := secrets.New("k1", []secrets.Key{{Label: "k1", Secret: k1}})
		sealed, _ := old.Seal([]byte("v"))
		rotated, err := secrets.New("k2", []secrets.Key{{Label: "k1", Secret: k1}, {Label: "k2", Secret: k2}})
		Expect(err).NotTo(HaveOccurred())
		plain, err := rotated.Open(sealed)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(plain)).To(Equal("v"))
		fresh, _ := rotated.Seal([]byte("v"))
		Expect(secrets.KeyOf(fresh)).To(Equal("k2"))
	})

	It("refuses a value whose key is not configured, or that was tampered with", func() {
		a, _ := secrets.New("k1", []secrets.Key{{Label: "k1", Secret: k1}})
		b, _ := secrets.New("k2", []secrets.Key{{Label: "k2", Secret: k2}})
		sealed, _ := a.Seal([]byte("v"))
		_, err := b.Open(sealed)
		Expect(err).To(MatchError(secrets.ErrUnknownKey))

		sealed[len(sealed)-1] ^= 0xff
		_, err = a.Open(sealed)
		Expect(err).To(HaveOccurred())
		_, err = a.Open([]byte{1})
		Expect(err).To(HaveOccurred())
	})

	It("refuses a label moved onto another key of the same secret", func() {
		s, _ := secrets.New("k1", []secrets.Key{{Label: "k1", Secret: k1}, {Label: "k9", Secret: k1}})
		sealed, _ := s.Seal([]byte("v"))
		moved := append([]byte{1, 2}, append([]byte("k9"), sealed[4:]...)...)
		_, err := s.Open(moved)
		Expect(err).To(HaveOccurred())
	})

	It("refuses bad keys and an active key that is not configured", func() {
		_, err := secrets.New("k1", []secrets.Key{{Label: "k1", Secret: []byte("short")}})
		Expect(err).To(HaveOccurred())
		_, err = secrets.New("nope", []secrets.Key{{Label: "k1", Secret: k1}})
		Expect(err).To(MatchError(ContainSubstring(`active key "nope"`)))
	})
})
