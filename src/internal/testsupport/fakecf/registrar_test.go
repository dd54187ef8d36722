package fakecf_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/cloudfoundry/go-cfclient/v3/client"
	cfconfig "github.com/cloudfoundry/go-cfclient/v3/config"
	"github.com/cloudfoundry/go-cfclient/v3/resource"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
)

var _ = Describe("fake Cloud Foundry: the registrar's endpoints", func() {
	var (
		fake *fakecf.Server
		cf   *client.Client
		ctx  = context.Background()
	)

	raw := func(method, path, body string) (int, string) {
		req, err := http.NewRequest(method, fake.URL+path, strings.NewReader(body))
		Expect(err).NotTo(HaveOccurred())
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "bearer "+bearer(fake))
		res, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}

	BeforeEach(func() {
		fake = fakecf.New(fakecf.Options{})
		DeferCleanup(fake.Close)
		cc, err := cfconfig.New(fake.URL, cfconfig.ClientCredentials(fake.ClientID(), fake.ClientSecret()))
		Expect(err).NotTo(HaveOccurred())
		cf, err = client.New(cc)
		Expect(err).NotTo(HaveOccurred())
	})

	It("adds nothing until enabled", func() {
		_, err := cf.ServiceInstances.ListAll(ctx, nil)
		Expect(err).To(MatchError(ContainSubstring("CF-NotFound")))
		fake.EnableRegistrarAPI()
		fake.EnableRegistrarAPI() // idempotent
		list, err := cf.ServiceInstances.ListAll(ctx, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(list).To(BeEmpty())
	})

	It("keeps space quotas as CC does, strictly", func() {
		fake.EnableRegistrarAPI()
		orgGUID, spaceGUID := fake.CreateOrgAndSpace("o", "s")
		mem := 1024
		req := resource.NewSpaceQuotaCreate("q", orgGUID)
		req.Apps = &resource.AppsQuota{TotalMemoryInMB: &mem}
		req.Relationships.Spaces = resource.NewToManyRelationships([]string{spaceGUID})
		q, err := cf.SpaceQuotas.Create(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		Expect(*q.Apps.TotalMemoryInMB).To(Equal(1024))
		Expect(q.Apps.PerAppTasks).To(BeNil())
		Expect(q.Relationships.Spaces.Data).To(HaveLen(1))
		name, limits := fake.SpaceQuota(spaceGUID)
		Expect(name).To(Equal("q"))
		Expect(*limits["total_memory_in_mb"]).To(Equal(1024))

		_, err = cf.SpaceQuotas.Create(ctx, resource.NewSpaceQuotaCreate("q", orgGUID))
		Expect(err).To(MatchError(ContainSubstring("already exists")))

		By("an explicit null is unlimited")
		upd := resource.NewSpaceQuotaUpdate()
		upd.Apps = &resource.AppsQuota{}
		q, err = cf.SpaceQuotas.Update(ctx, q.GUID, upd)
		Expect(err).NotTo(HaveOccurred())
		Expect(q.Apps.TotalMemoryInMB).To(BeNil())

		status, body := raw(http.MethodPatch, "/v3/space_quotas/"+q.GUID, `{"apps":{"total_memory":1}}`)
		Expect(status).To(Equal(http.StatusUnprocessableEntity), body)
		status, body = raw(http.MethodPost, "/v3/space_quotas", `{"name":"x","bogus":1}`)
		Expect(status).To(Equal(http.StatusUnprocessableEntity), body)
		Expect(body).To(ContainSubstring("Unknown field(s): 'bogus'"))
		status, body = raw(http.MethodGet, "/v3/space_quotas?nmes=q", "")
		Expect(status).To(Equal(http.StatusBadRequest), body)

		opts := client.NewSpaceQuotaListOptions()
		opts.Names.EqualTo("q")
		opts.OrganizationGUIDs.EqualTo(orgGUID)
		list, err := cf.SpaceQuotas.ListAll(ctx, opts)
		Expect(err).NotTo(HaveOccurred())
		Expect(list).To(HaveLen(1))
	})

	It("refuses to delete an offering with instances unless purge", func() {
		fake.EnableRegistrarAPI()
		_, spaceGUID := fake.CreateOrgAndSpace("o", "s")
		catalog := newCatalogServer()
		DeferCleanup(catalog.Close)
		job, err := cf.ServiceBrokers.Create(ctx, resource.NewServiceBrokerCreate("b", catalog.URL, "u", "p"))
		Expect(err).NotTo(HaveOccurred())
		Expect(cf.Jobs.PollComplete(ctx, job, nil)).To(Succeed())
		plans, err := cf.ServicePlans.ListAll(ctx, nil)
		Expect(err).NotTo(HaveOccurred())
		fake.CreateServiceInstance("si", plans[0].GUID, spaceGUID)
		opts := client.NewServiceInstanceListOptions()
		opts.ServicePlanGUIDs.EqualTo(plans[0].GUID)
		insts, err := cf.ServiceInstances.ListAll(ctx, opts)
		Expect(err).NotTo(HaveOccurred())
		Expect(insts).To(HaveLen(1))
		Expect(insts[0].Name).To(Equal("si"))
		Expect(fake.Marketplace("")).To(BeEmpty(), "new plans are admin-only")

		offs, err := cf.ServiceOfferings.ListAll(ctx, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(cf.ServiceOfferings.Delete(ctx, offs[0].GUID)).To(MatchError(ContainSubstring("CF-AssociationNotEmpty")))
		status, body := raw(http.MethodDelete, "/v3/service_offerings/"+offs[0].GUID+"?purge=true", "")
		Expect(status).To(Equal(http.StatusNoContent), body)
		Expect(fake.ServiceInstanceCount()).To(Equal(0))
		plans, err = cf.ServicePlans.ListAll(ctx, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(plans).To(BeEmpty())
	})
})

func bearer(fake *fakecf.Server) string {
	req, _ := http.NewRequest(http.MethodPost, fake.URL+"/oauth/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(fake.ClientID(), fake.ClientSecret())
	res, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer res.Body.Close()
	var t struct {
		AccessToken string `json:"access_token"`
	}
	Expect(json.NewDecoder(res.Body).Decode(&t)).To(Succeed())
	return t.AccessToken
}

func newCatalogServer() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b, _ := json.Marshal(map[string]any{"services": []any{map[string]any{"id": "svc", "name": "svc", "description": "d",
			"plans": []any{map[string]any{"id": "plan", "name": "plan", "description": "d"}}}}})
		_, _ = io.Copy(w, bytes.NewReader(b))
	}))
}
