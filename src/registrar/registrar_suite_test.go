package registrar_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
)

func TestRegistrar(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(20 * time.Second)
	SetDefaultEventuallyPollingInterval(20 * time.Millisecond)
	RunSpecs(t, "Registrar suite")
}

// catalogBroker is a minimal OSB broker: GET /v2/catalog behind basic auth, which is
// all Cloud Controller (the fake) reads when it synchronises a broker.
type catalogBroker struct {
	srv *httptest.Server

	mu   sync.Mutex
	user string
	pass string
	hits int
}

func newCatalogBroker(user, pass string) *catalogBroker {
	b := &catalogBroker{user: user, pass: pass}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		b.mu.Lock()
		b.hits++
		good := ok && u == b.user && p == b.pass
		b.mu.Unlock()
		if !good {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/v2/catalog" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"services": []any{map[string]any{
			"id": "6c1c7d3e-0000-4000-8000-000000000001", "name": "ironworker", "description": "IronWorker", "bindable": true,
			"plans": []any{
				map[string]any{"id": "6c1c7d3e-0000-4000-8000-000000000002", "name": "free", "description": "Free"},
				map[string]any{"id": "6c1c7d3e-0000-4000-8000-000000000003", "name": "standard", "description": "Standard"},
				map[string]any{"id": "6c1c7d3e-0000-4000-8000-000000000004", "name": "internal", "description": "Internal"},
			}}}})
	}))
	return b
}

func (b *catalogBroker) setCredentials(user, pass string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.user, b.pass = user, pass
}

func (b *catalogBroker) close() { b.srv.Close() }

// writes are the requests that change Cloud Controller (token requests excluded).
func writes(cf *fakecf.Server) []string {
	var out []string
	for _, r := range cf.Requests() {
		if r.Method != http.MethodGet && r.Path != "/oauth/token" {
			out = append(out, r.Method+" "+r.Path)
		}
	}
	return out
}

// ---- NATS ----

type natsOpts struct {
	port int
	tls  *tls.Config
	user string
	pass string
}

func startNATS(o natsOpts) *natsserver.Server {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: o.port, NoLog: true, NoSigs: true, Username: o.user, Password: o.pass}
	if o.port == 0 {
		opts.Port = -1
	}
	if o.tls != nil {
		opts.TLS, opts.TLSVerify, opts.TLSConfig, opts.TLSTimeout = true, true, o.tls, 5
	}
	s, err := natsserver.NewServer(opts)
	Expect(err).NotTo(HaveOccurred())
	go s.Start()
	Expect(s.ReadyForConnections(10 * time.Second)).To(BeTrue())
	return s
}

func natsAddr(s *natsserver.Server) string { return s.Addr().String() }

func natsPort(s *natsserver.Server) int { return s.Addr().(*net.TCPAddr).Port }

// freeAddr is a 127.0.0.1 address where nothing listens.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	addr := l.Addr().String()
	l.Close()
	return addr
}

// ---- certificates ----

type pemPair struct{ cert, key string }

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newCA() *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	Expect(err).NotTo(HaveOccurred())
	cert, err := x509.ParseCertificate(der)
	Expect(err).NotTo(HaveOccurred())
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

var serial int64 = 10

func (ca *testCA) issue(cn string, usage x509.ExtKeyUsage, ips ...net.IP) pemPair {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn}, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	Expect(err).NotTo(HaveOccurred())
	kder, err := x509.MarshalECPrivateKey(key)
	Expect(err).NotTo(HaveOccurred())
	return pemPair{cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		key: string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))}
}

func (ca *testCA) serverTLS(p pemPair) *tls.Config {
	cert, err := tls.X509KeyPair([]byte(p.cert), []byte(p.key))
	Expect(err).NotTo(HaveOccurred())
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func contains(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func tlsKeyPair(p pemPair) (tls.Certificate, error) {
	return tls.X509KeyPair([]byte(p.cert), []byte(p.key))
}

func tlsClientConfig(pool *x509.CertPool, cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

func must[T any](v T, err error) T {
	Expect(err).NotTo(HaveOccurred())
	return v
}
