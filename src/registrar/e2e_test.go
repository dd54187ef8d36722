package registrar_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/client"
	cfconfig "github.com/cloudfoundry/go-cfclient/v3/config"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"

	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
)

var _ = Describe("the iron-registrar binary", Ordered, func() {
	var bin string

	BeforeAll(func() {
		var err error
		bin, err = gexec.Build("github.com/ironcf/ironworker-release/src/cmd/iron-registrar")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(gexec.CleanupBuildArtifacts)
	})

	It("runs both loops, serves /healthz and /metrics, unregisters on SIGTERM; deregister refuses, then purges", func() {
		cf := fakecf.New(fakecf.Options{ClientID: "iron-registrar", ClientSecret: "registrar-secret"})
		cf.EnableRegistrarAPI()
		DeferCleanup(cf.Close)
		broker := newCatalogBroker("broker", "broker-password")
		DeferCleanup(broker.close)
		srv := startNATS(natsOpts{})
		DeferCleanup(srv.Shutdown)
		router := newFakeRouter("nats://"+natsAddr(srv), 1, 30)
		DeferCleanup(router.close)
		_, space := cf.CreateOrgAndSpace("customer", "dev")

		health := freeAddr()
		path := filepath.Join(GinkgoT().TempDir(), "iron-registrar.yml")
		Expect(os.WriteFile(path, []byte(fmt.Sprintf(`
listen_address: %s
log_level: debug
cf: {api_url: %q, client_id: iron-registrar, client_secret: registrar-secret}
marketplace:
  interval: 1s
  broker: {url: %q, username: broker, password: broker-password}
routes:
  nats: {servers: [%q]}
  host: 10.0.16.5
  port: 8080
  uris: [iron.sys.example.com]
`, health, cf.URL, broker.srv.URL, natsAddr(srv))), 0o600)).To(Succeed())

		sess, err := gexec.Start(exec.Command(bin, "--config", path), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { sess.Kill().Wait() })
		Eventually(cf.Marketplace).WithArguments("").Should(HaveLen(3))
		Eventually(router.count).Should(BeNumerically(">=", 2))
		Eventually(func() int {
			resp, err := http.Get("http://" + health + "/healthz")
			if err != nil {
				return 0
			}
			resp.Body.Close()
			return resp.StatusCode
		}).Should(Equal(http.StatusOK))
		m := scrape("http://" + health)
		Expect(m).To(MatchRegexp(`iron_registrar_last_success_timestamp_seconds\{loop="marketplace"\} \d`))
		Expect(m).To(MatchRegexp(`iron_registrar_last_success_timestamp_seconds\{loop="routes"\} \d`))

		sess.Signal(syscall.SIGTERM)
		Eventually(sess, 15*time.Second).Should(gexec.Exit(0))
		Expect(router.unregistered()).To(HaveLen(1))

		By("deregister refuses while a service instance exists")
		plans := cf.Marketplace("")
		Expect(plans).NotTo(BeEmpty())
		planGUID := firstPlanGUID(cf)
		cf.CreateServiceInstance("my-iron", planGUID, space)
		sess, err = gexec.Start(exec.Command(bin, "deregister", "--config", path), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		Eventually(sess, 30*time.Second).Should(gexec.Exit(1))
		Expect(sess.Err).To(gbytes.Say(`still has 1 service instance\(s\) \(my-iron\)`))
		Expect(sess.Err).To(gbytes.Say(`routes left registered`))
		Expect(router.unregistered()).To(HaveLen(1), "routes stay while the service stays")
		Expect(cf.Marketplace("")).To(HaveLen(3))

		By("deregister --purge removes everything")
		sess, err = gexec.Start(exec.Command(bin, "deregister", "--config", path, "--purge"), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		Eventually(sess, 30*time.Second).Should(gexec.Exit(0))
		Expect(cf.Marketplace("")).To(BeEmpty())
		Expect(cf.ServiceInstanceCount()).To(Equal(0))
		Eventually(router.unregistered).Should(HaveLen(2))
		Expect(router.unregistered()[1].raw).To(Equal(router.unregistered()[0].raw))
	})

	It("refuses a bad config, naming the property", func() {
		path := filepath.Join(GinkgoT().TempDir(), "bad.yml")
		Expect(os.WriteFile(path, []byte("routes: {enabled: false}\nmarketplace: {broker: {url: nope}}\n"), 0o600)).To(Succeed())
		sess, err := gexec.Start(exec.Command(bin, "--config", path), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		Eventually(sess).Should(gexec.Exit(1))
		Expect(sess.Err).To(gbytes.Say("marketplace.broker.url"))
	})
})

func firstPlanGUID(cf *fakecf.Server) string {
	cc, err := cfconfig.New(cf.URL, cfconfig.ClientCredentials(cf.ClientID(), cf.ClientSecret()))
	Expect(err).NotTo(HaveOccurred())
	c, err := client.New(cc)
	Expect(err).NotTo(HaveOccurred())
	plans, err := c.ServicePlans.ListAll(context.Background(), nil)
	Expect(err).NotTo(HaveOccurred())
	Expect(plans).NotTo(BeEmpty())
	return plans[0].GUID
}
