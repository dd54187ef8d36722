package registrar_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/client"
	cfconfig "github.com/cloudfoundry/go-cfclient/v3/config"
	"github.com/cloudfoundry/go-cfclient/v3/resource"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
	"github.com/ironcf/ironworker-release/src/registrar"
)

var _ = Describe("Marketplace", func() {
	var (
		cf     *fakecf.Server
		broker *catalogBroker
		cfg    config.Registrar
		ctx    context.Context
		admin  *client.Client // an operator acting behind the registrar's back
	)

	newRegistrar := func() *registrar.Registrar {
		cfg.ApplyDefaults()
		Expect(cfg.Validate()).To(Succeed())
		return registrar.New(cfg, registrar.Options{Logger: nil, Marketplace: registrar.MarketplaceOptions{JobPollInterval: 20 * time.Millisecond}})
	}

	planGUID := func(name string) string {
		opts := client.NewServicePlanListOptions()
		opts.Names.EqualTo(name)
		p, err := admin.ServicePlans.Single(ctx, opts)
		Expect(err).NotTo(HaveOccurred())
		return p.GUID
	}

	BeforeEach(func() {
		ctx = context.Background()
		cf = fakecf.New(fakecf.Options{ClientID: "iron-registrar", ClientSecret: "registrar-secret"})
		cf.EnableRegistrarAPI()
		DeferCleanup(cf.Close)
		broker = newCatalogBroker("broker", "broker-password")
		DeferCleanup(broker.close)
		f := false
		mem, tasks := 4096, 20
		cfg = config.Registrar{
			CF: config.RegistrarCF{APIURL: cf.URL, ClientID: "iron-registrar", ClientSecret: "registrar-secret"},
			Marketplace: config.RegistrarMarketplace{
				Broker: config.RegistrarBroker{URL: broker.srv.URL, Username: "broker", Password: "broker-password"},
				Plans: []config.RegistrarPlan{
					{Name: "standard", Visibility: "organization", Orgs: []string{"customer"}},
					{Name: "internal", Visibility: "admin"},
				},
				Diego: &config.RegistrarDiego{Org: "system", Space: "ironworker",
					SpaceQuota: &config.RegistrarSpaceQuota{Name: "ironworker", TotalMemoryInMB: &mem, PerAppTasks: &tasks}},
			},
			Routes: config.RegistrarRoutes{Enabled: &f},
		}
		cc, err := cfconfig.New(cf.URL, cfconfig.ClientCredentials("iron-registrar", "registrar-secret"))
		Expect(err).NotTo(HaveOccurred())
		admin, err = client.New(cc)
		Expect(err).NotTo(HaveOccurred())
	})

	It("creates the broker, sets plan visibility and the diego org/space/quota; a second pass writes nothing", func() {
		customer, _ := cf.CreateOrgAndSpace("customer", "dev")
		other, _ := cf.CreateOrgAndSpace("other", "dev")
		r := newRegistrar()
		Expect(r.PassOnce(ctx)).To(Succeed())

		// What `cf marketplace` shows: free everywhere, standard in customer only,
		// internal to admins only.
		Expect(cf.Marketplace("")).To(ConsistOf("ironworker/free"))
		Expect(cf.Marketplace(other)).To(ConsistOf("ironworker/free"))
		Expect(cf.Marketplace(customer)).To(ConsistOf("ironworker/free", "ironworker/standard"))
		vis, orgs := cf.PlanVisibility(planGUID("standard"))
		Expect(vis).To(Equal("organization"))
		Expect(orgs).To(ConsistOf(customer))
		vis, _ = cf.PlanVisibility(planGUID("internal"))
		Expect(vis).To(Equal("admin"))
		Expect(cf.Count(http.MethodPost, "/v3/service_brokers")).To(Equal(1))

		// The diego backend's org, space and space quota exist.
		oopts := client.NewOrganizationListOptions()
		oopts.Names.EqualTo("system")
		org, err := admin.Organizations.Single(ctx, oopts)
		Expect(err).NotTo(HaveOccurred())
		sopts := client.NewSpaceListOptions()
		sopts.Names.EqualTo("ironworker")
		sopts.OrganizationGUIDs.EqualTo(org.GUID)
		space, err := admin.Spaces.Single(ctx, sopts)
		Expect(err).NotTo(HaveOccurred())
		name, limits := cf.SpaceQuota(space.GUID)
		Expect(name).To(Equal("ironworker"))
		Expect(*limits["total_memory_in_mb"]).To(Equal(4096))
		Expect(*limits["per_app_tasks"]).To(Equal(20))
		Expect(limits["total_instances"]).To(BeNil())

		cf.ResetRequests()
		Expect(r.PassOnce(ctx)).To(Succeed())
		Expect(writes(cf)).To(BeEmpty())
		Expect(cf.Requests()).NotTo(BeEmpty(), "it did read")

		By("a third pass by a new process (no memory of the first) writes nothing either")
		cf.ResetRequests()
		Expect(newRegistrar().PassOnce(ctx)).To(Succeed())
		Expect(writes(cf)).To(BeEmpty())
	})

	It("pushes a changed password or URL with PATCH, then rests", func() {
		cf.CreateOrgAndSpace("customer", "dev")
		Expect(newRegistrar().PassOnce(ctx)).To(Succeed())
		opts := client.NewServiceBrokerListOptions()
		opts.Names.EqualTo("ironworker")
		b, err := admin.ServiceBrokers.Single(ctx, opts)
		Expect(err).NotTo(HaveOccurred())

		By("a new password")
		broker.setCredentials("broker", "new-broker-password")
		cfg.Marketplace.Broker.Password = "new-broker-password"
		cf.ResetRequests()
		r := newRegistrar()
		Expect(r.PassOnce(ctx)).To(Succeed())
		Expect(writes(cf)).To(ConsistOf("PATCH /v3/service_brokers/"+b.GUID, "PATCH /v3/service_brokers/"+b.GUID),
			"the credentials (a job that re-reads the catalog with them), then the digest annotation")
		Expect(cf.Count(http.MethodPost, "/v3/service_brokers")).To(Equal(0))
		cf.ResetRequests()
		Expect(r.PassOnce(ctx)).To(Succeed())
		Expect(writes(cf)).To(BeEmpty())

		By("a new URL (the broker moved)")
		moved := httptest.NewServer(broker.srv.Config.Handler)
		defer moved.Close()
		cfg.Marketplace.Broker.URL = moved.URL
		cf.ResetRequests()
		r = newRegistrar()
		Expect(r.PassOnce(ctx)).To(Succeed())
		Expect(writes(cf)).To(HaveLen(2))
		b, err = admin.ServiceBrokers.Get(ctx, b.GUID)
		Expect(err).NotTo(HaveOccurred())
		Expect(b.URL).To(Equal(moved.URL))
		cf.ResetRequests()
		Expect(r.PassOnce(ctx)).To(Succeed())
		Expect(writes(cf)).To(BeEmpty())

		By("the annotation never holds the password itself")
		Expect(*b.Metadata.Annotations[registrar.CredentialsAnnotation]).NotTo(ContainSubstring("new-broker-password"))
	})

	It("undoes changes made behind its back", func() {
		customer, _ := cf.CreateOrgAndSpace("customer", "dev")
		r := newRegistrar()
		Expect(r.PassOnce(ctx)).To(Succeed())

		_, err := admin.ServicePlansVisibility.Update(ctx, planGUID("free"), resource.NewServicePlanVisibilityUpdate(resource.ServicePlanVisibilityAdmin))
		Expect(err).NotTo(HaveOccurred())
		_, err = admin.ServicePlansVisibility.Update(ctx, planGUID("internal"), resource.NewServicePlanVisibilityUpdate(resource.ServicePlanVisibilityPublic))
		Expect(err).NotTo(HaveOccurred())
		Expect(admin.ServicePlansVisibility.Delete(ctx, planGUID("standard"), customer)).To(Succeed())
		cf.ChangeSpaceQuota("ironworker", 1)
		Expect(cf.Marketplace(customer)).To(ConsistOf("ironworker/internal"))

		cf.ResetRequests()
		Expect(r.PassOnce(ctx)).To(Succeed())
		Expect(cf.Marketplace(customer)).To(ConsistOf("ironworker/free", "ironworker/standard"))
		w := writes(cf)
		Expect(w).To(HaveLen(4))
		Expect(contains(w, "PATCH /v3/space_quotas/")).To(BeTrue())

		cf.ResetRequests()
		Expect(r.PassOnce(ctx)).To(Succeed())
		Expect(writes(cf)).To(BeEmpty())
	})

	It("reports a failed CC job, repairs the broker it left broken on the next pass, and shows it in /healthz and /metrics", func() {
		cfg.Marketplace.Plans = nil // everything public
		r := newRegistrar()
		h := httptest.NewServer(r.Handler())
		defer h.Close()

		cf.JobFailure("Service broker catalog is invalid: boom")
		err := r.PassOnce(ctx)
		Expect(err).To(MatchError(ContainSubstring("boom")))
		Expect(err.Error()).To(ContainSubstring("create broker ironworker: CC job"))
		Expect(cf.Marketplace("")).To(BeEmpty())
		resp, err := http.Get(h.URL + "/healthz")
		Expect(err).NotTo(HaveOccurred())
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusServiceUnavailable))
		Expect(string(body)).To(ContainSubstring("boom"))
		Expect(scrape(h.URL)).To(ContainSubstring(`iron_registrar_errors_total{loop="marketplace"} 1`))

		By("the broker left behind has no catalog; the next pass deletes and re-creates it")
		cf.ResetRequests()
		Expect(r.PassOnce(ctx)).To(Succeed())
		Expect(cf.Count(http.MethodPost, "/v3/service_brokers")).To(Equal(1))
		Expect(cf.CountRequests(http.MethodDelete, "/v3/service_brokers/", "")).To(Equal(1))
		Expect(cf.Marketplace("")).To(ConsistOf("ironworker/free", "ironworker/standard", "ironworker/internal"))
		resp, err = http.Get(h.URL + "/healthz")
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		m := scrape(h.URL)
		Expect(m).To(ContainSubstring(`iron_registrar_successes_total{loop="marketplace"} 1`))
		Expect(m).To(MatchRegexp(`iron_registrar_last_success_timestamp_seconds\{loop="marketplace"\} \d`))
	})

	It("retries a failed pass by itself in the running loop", func() {
		cfg.Marketplace.Interval = config.Duration(time.Hour)
		cfg.Marketplace.Plans = nil
		r := newRegistrar()
		cf.JobFailure("boom")
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = r.Run(runCtx) }()
		Eventually(func() []string { return cf.Marketplace("") }).Should(HaveLen(3))
		cancel()
		Eventually(done).Should(BeClosed())
	})

	It("reports a configured org that does not exist, and a configured plan missing from the catalog", func() {
		cfg.Marketplace.Plans = append(cfg.Marketplace.Plans, config.RegistrarPlan{Name: "gold", Visibility: "public"})
		err := newRegistrar().PassOnce(ctx)
		Expect(err).To(MatchError(ContainSubstring(`plan "standard": orgs not found: customer`)))
		Expect(err).To(MatchError(ContainSubstring(`plan "gold" is configured but not in broker "ironworker"'s catalog`)))
		Expect(cf.Marketplace("")).To(ConsistOf("ironworker/free"), "the rest is done")
	})

	Describe("deregister", func() {
		It("removes plan visibility and the broker, and is idempotent", func() {
			cf.CreateOrgAndSpace("customer", "dev")
			r := newRegistrar()
			Expect(r.PassOnce(ctx)).To(Succeed())
			Expect(cf.Marketplace("")).NotTo(BeEmpty())
			cf.ResetRequests()
			Expect(r.Deregister(ctx, false)).To(Succeed())
			Expect(cf.Marketplace("")).To(BeEmpty())
			Expect(cf.CountRequests(http.MethodPatch, "/v3/service_plans/", "")).To(Equal(2), "free and standard back to admin")
			brokers, err := admin.ServiceBrokers.ListAll(ctx, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(brokers).To(BeEmpty())
			plans, err := admin.ServicePlans.ListAll(ctx, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(plans).To(BeEmpty())
			Expect(r.Deregister(ctx, false)).To(Succeed())
		})

		It("refuses while service instances exist, unless purge", func() {
			customer, space := cf.CreateOrgAndSpace("customer", "dev")
			r := newRegistrar()
			Expect(r.PassOnce(ctx)).To(Succeed())
			cf.CreateServiceInstance("my-iron", planGUID("standard"), space)

			cf.ResetRequests()
			err := r.Deregister(ctx, false)
			Expect(err).To(MatchError(ContainSubstring("still has 1 service instance(s) (my-iron)")))
			Expect(err).To(MatchError(ContainSubstring("--purge")))
			Expect(writes(cf)).To(BeEmpty())
			Expect(cf.Marketplace(customer)).To(HaveLen(2))

			Expect(r.Deregister(ctx, true)).To(Succeed())
			Expect(cf.ServiceInstanceCount()).To(Equal(0))
			Expect(cf.CountRequests(http.MethodDelete, "/v3/service_offerings/", "")).To(Equal(1))
			brokers, err := admin.ServiceBrokers.ListAll(ctx, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(brokers).To(BeEmpty())
			Expect(cf.Marketplace(customer)).To(BeEmpty())
		})
	})
})

func scrape(base string) string {
	resp, err := http.Get(base + "/metrics")
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
