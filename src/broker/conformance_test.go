package broker_test

import (
	"context"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	osb "sigs.k8s.io/go-open-service-broker-client/v2"
)

// OSB conformance over real HTTP, with the status codes of the spec (v2.17) as Cloud
// Controller (which sends 2.15) relies on them.
var _ = Describe("OSB conformance", func() {
	Describe("catalog", func() {
		It("has one bindable, plan-updateable service with metadata and the configured plans", func() {
			r := osbDo("GET", "/v2/catalog", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			services := r.JSON()["services"].([]any)
			Expect(services).To(HaveLen(1))
			svc := services[0].(map[string]any)
			Expect(svc).To(HaveKeyWithValue("id", serviceID))
			Expect(svc).To(HaveKeyWithValue("name", "ironworker"))
			Expect(svc).To(HaveKeyWithValue("description", "IronWorker tasks"))
			Expect(svc).To(HaveKeyWithValue("bindable", true))
			Expect(svc).To(HaveKeyWithValue("plan_updateable", true))
			Expect(svc).To(HaveKeyWithValue("instances_retrievable", true))
			Expect(svc).To(HaveKeyWithValue("bindings_retrievable", true))
			Expect(svc).To(HaveKeyWithValue("tags", ConsistOf("ironworker", "tasks")))
			Expect(svc["metadata"]).To(And(HaveKeyWithValue("displayName", "IronWorker"),
				HaveKeyWithValue("providerDisplayName", "ironcf"),
				HaveKeyWithValue("documentationUrl", "https://docs.example.com/ironworker")))
			plans := svc["plans"].([]any)
			Expect(plans).To(HaveLen(2))
			small, large := plans[0].(map[string]any), plans[1].(map[string]any)
			Expect(small).To(And(HaveKeyWithValue("id", smallPlan), HaveKeyWithValue("name", "small"),
				HaveKeyWithValue("description", "A few tasks"), HaveKeyWithValue("free", true)))
			Expect(small["metadata"]).To(HaveKeyWithValue("quotas", map[string]any{
				"max_concurrency": 1.0, "max_timeout_seconds": 60.0, "max_payload_bytes": 100.0,
				"max_queued_tasks": 2.0, "max_schedules": 1.0, "allowed_priorities": []any{0.0, 1.0}}))
			Expect(small["metadata"]).To(HaveKeyWithValue("bullets", ContainElement("Up to 2 queued tasks")))
			Expect(large).To(And(HaveKeyWithValue("id", largePlan), HaveKeyWithValue("name", "large"),
				HaveKeyWithValue("free", false)))
		})

		It("parses with the reference OSB client", func() {
			cat, err := osbClient().GetCatalog()
			Expect(err).NotTo(HaveOccurred())
			Expect(cat.Services).To(HaveLen(1))
			Expect(cat.Services[0].Bindable).To(BeTrue())
			Expect(cat.Services[0].PlanUpdatable).To(HaveValue(BeTrue()))
			Expect(cat.Services[0].Plans).To(HaveLen(2))
		})
	})

	Describe("authentication and version", func() {
		It("answers 401 without basic auth, or with a wrong password, on every endpoint", func() {
			Expect(osbDo("GET", "/v2/catalog", nil, withoutAuth).Status).To(Equal(http.StatusUnauthorized))
			Expect(osbDo("GET", "/v2/catalog", nil, withAuth(brokerUser, "wrong")).Status).To(Equal(http.StatusUnauthorized))
			Expect(osbDo("PUT", "/v2/service_instances/"+newGUID(), provisionBody(smallPlan), withoutAuth).Status).
				To(Equal(http.StatusUnauthorized))
			Expect(osbDo("DELETE", "/v2/service_instances/x"+instanceQuery(smallPlan), nil, withoutAuth).Status).
				To(Equal(http.StatusUnauthorized))
		})

		It("checks credentials before the version: 401 even without X-Broker-API-Version", func() {
			Expect(osbDo("GET", "/v2/catalog", nil, withoutAuth, withVersion("")).Status).To(Equal(http.StatusUnauthorized))
		})

		It("does not take an IronWorker token as broker credentials", func() {
			Expect(osbDo("GET", "/v2/catalog", nil, withoutAuth, withHeader("Authorization", "OAuth "+iron.Token)).Status).
				To(Equal(http.StatusUnauthorized))
		})

		DescribeTable("answers 412 for a missing or unsupported X-Broker-API-Version",
			func(version string) {
				r := osbDo("GET", "/v2/catalog", nil, withVersion(version), withHeader("X-Broker-API-Request-Identity", "req-412"))
				Expect(r.Status).To(Equal(http.StatusPreconditionFailed), string(r.Body))
				Expect(r.JSON()).To(HaveKeyWithValue("description", ContainSubstring("X-Broker-API-Version")))
				Expect(r.Header.Get("X-Broker-API-Request-Identity")).To(Equal("req-412"))
			},
			Entry("missing", ""),
			Entry("1.0", "1.0"),
			Entry("3.0", "3.0"),
			Entry("2.13 (older than served)", "2.13"),
			Entry("2.11", "2.11"),
			Entry("garbage", "two"),
		)

		DescribeTable("serves the 2.x versions from 2.14",
			func(version string) {
				Expect(osbDo("GET", "/v2/catalog", nil, withVersion(version)).Status).To(Equal(http.StatusOK))
			},
			Entry("2.14", "2.14"), Entry("2.15 (Cloud Controller)", "2.15"), Entry("2.16", "2.16"), Entry("2.17", "2.17"),
		)

		It("echoes the request identity and logs it with the originating user, never the password or tokens", func() {
			id := newGUID()
			r := osbDo("PUT", "/v2/service_instances/"+id, provisionBody(smallPlan),
				withHeader("X-Broker-API-Request-Identity", "req-echo-1"), withHeader("X-Broker-API-Originating-Identity", ccIdentity("user-abc")))
			Expect(r.Status).To(Equal(http.StatusCreated))
			Expect(r.Header.Get("X-Broker-API-Request-Identity")).To(Equal("req-echo-1"))
			_, creds := bind(id, smallPlan)
			Eventually(logBuf.String).Should(ContainSubstring(`"request_identity":"req-echo-1"`))
			logs := logBuf.String()
			Expect(containsAll(logs, `"user_id":"user-abc"`, `"identity_platform":"cloudfoundry"`, `"msg":"provisioned"`)).To(BeTrue(), logs)
			Expect(logs).NotTo(ContainSubstring(brokerPass))
			Expect(logs).NotTo(ContainSubstring(creds["token"].(string)))
		})
	})

	Describe("provision", func() {
		It("answers 201 for a new instance, 200 for an identical repeat and 409 for a conflicting one", func() {
			id := newGUID()
			path := "/v2/service_instances/" + id
			r := osbDo("PUT", path, provisionBody(smallPlan))
			Expect(r.Status).To(Equal(http.StatusCreated))
			Expect(r.JSON()).NotTo(HaveKey("operation"))

			r = osbDo("PUT", path, provisionBody(smallPlan))
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(osbDo("PUT", path+"?accepts_incomplete=true", provisionBody(smallPlan)).Status).To(Equal(http.StatusOK))

			other := provisionBody(largePlan)
			Expect(osbDo("PUT", path, other).Status).To(Equal(http.StatusConflict))
			otherSpace := provisionBody(smallPlan)
			otherSpace["space_guid"] = "space-2"
			Expect(osbDo("PUT", path, otherSpace).Status).To(Equal(http.StatusConflict))

			// The conflicting requests changed nothing.
			g := osbDo("GET", path, nil)
			Expect(g.Status).To(Equal(http.StatusOK))
			Expect(g.JSON()).To(And(HaveKeyWithValue("service_id", serviceID), HaveKeyWithValue("plan_id", smallPlan)))
		})

		It("is synchronous even when the platform accepts incomplete operations", func() {
			r := osbDo("PUT", "/v2/service_instances/"+newGUID()+"?accepts_incomplete=true", provisionBody(largePlan))
			Expect(r.Status).To(Equal(http.StatusCreated))
		})

		It("gives the project the plan's quotas and links it to the instance", func() {
			id := provision(smallPlan)
			in, err := iron.Store.GetInstance(context.Background(), id)
			Expect(err).NotTo(HaveOccurred())
			q, err := iron.Store.ProjectQuotas(context.Background(), in.ProjectID)
			Expect(err).NotTo(HaveOccurred())
			Expect(q.PlanID).To(Equal(smallPlan))
			Expect(q.MaxConcurrency).To(HaveValue(Equal(1)))
			Expect(q.MaxTimeoutSeconds).To(HaveValue(Equal(60)))
			Expect(q.MaxPayloadBytes).To(HaveValue(Equal(100)))
			Expect(q.MaxQueuedTasks).To(HaveValue(Equal(2)))
			Expect(q.MaxSchedules).To(HaveValue(Equal(1)))
			Expect(q.AllowedPriorities).To(Equal([]int{0, 1}))
			p, err := iron.Store.GetProject(context.Background(), in.ProjectID)
			Expect(err).NotTo(HaveOccurred())
			Expect(p.Name).To(Equal("my-worker"))
		})

		It("takes organization and space from the context when the top-level fields are absent", func() {
			body := provisionBody(smallPlan)
			delete(body, "organization_guid")
			delete(body, "space_guid")
			Expect(osbDo("PUT", "/v2/service_instances/"+newGUID(), body).Status).To(Equal(http.StatusCreated))
		})

		DescribeTable("answers 400 for a bad request and creates nothing",
			func(change func(map[string]any), want string) {
				id := newGUID()
				body := provisionBody(smallPlan)
				change(body)
				r := osbDo("PUT", "/v2/service_instances/"+id, body)
				Expect(r.Status).To(Equal(http.StatusBadRequest), string(r.Body))
				Expect(r.JSON()["description"]).To(ContainSubstring(want))
				Expect(osbDo("GET", "/v2/service_instances/"+id, nil).Status).To(Equal(http.StatusNotFound))
			},
			Entry("unknown service_id", func(b map[string]any) { b["service_id"] = "nope" }, "service"),
			Entry("unknown plan_id", func(b map[string]any) { b["plan_id"] = "nope" }, "plan"),
			Entry("missing service_id", func(b map[string]any) { delete(b, "service_id") }, "service_id"),
			Entry("missing plan_id", func(b map[string]any) { delete(b, "plan_id") }, "plan_id"),
			Entry("missing organization_guid", func(b map[string]any) {
				delete(b, "organization_guid")
				delete(b["context"].(map[string]any), "organization_guid")
			}, "organization_guid and space_guid are required"),
			Entry("missing space_guid", func(b map[string]any) {
				delete(b, "space_guid")
				delete(b["context"].(map[string]any), "space_guid")
			}, "organization_guid and space_guid are required"),
			Entry("parameters the service does not take", func(b map[string]any) { b["parameters"] = map[string]any{"size": 3} },
				"this service takes no parameters, got: size"),
		)

		It("answers 422 MaintenanceInfoConflict for maintenance_info the catalog does not have", func() {
			body := provisionBody(smallPlan)
			body["maintenance_info"] = map[string]any{"version": "1.0.0"}
			r := osbDo("PUT", "/v2/service_instances/"+newGUID(), body)
			Expect(r.Status).To(Equal(http.StatusUnprocessableEntity))
			Expect(r.JSON()).To(HaveKeyWithValue("error", "MaintenanceInfoConflict"))
		})
	})

	Describe("fetch instance and last operation", func() {
		It("returns the instance (200) and 404 for an unknown one", func() {
			id := provision(largePlan)
			r := osbDo("GET", "/v2/service_instances/"+id, nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(And(HaveKeyWithValue("service_id", serviceID), HaveKeyWithValue("plan_id", largePlan)))
			Expect(osbDo("GET", "/v2/service_instances/"+newGUID(), nil).Status).To(Equal(http.StatusNotFound))
		})

		It("reports succeeded for an instance (all operations are synchronous), 404 for an unknown one", func() {
			id := provision(largePlan)
			r := osbDo("GET", "/v2/service_instances/"+id+"/last_operation"+instanceQuery(largePlan), nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(HaveKeyWithValue("state", "succeeded"))
			Expect(osbDo("GET", "/v2/service_instances/"+newGUID()+"/last_operation", nil).Status).To(Equal(http.StatusNotFound))
		})
	})

	Describe("update", func() {
		It("changes the plan and the project's quotas (200), and an identical update is 200 too", func() {
			id := provision(smallPlan)
			path := "/v2/service_instances/" + id
			r := osbDo("PATCH", path, map[string]any{"service_id": serviceID, "plan_id": largePlan,
				"previous_values": map[string]any{"plan_id": smallPlan}})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			Expect(r.JSON()).To(BeEmpty())
			in, err := iron.Store.GetInstance(context.Background(), id)
			Expect(err).NotTo(HaveOccurred())
			Expect(in.PlanID).To(Equal(largePlan))
			q, err := iron.Store.ProjectQuotas(context.Background(), in.ProjectID)
			Expect(err).NotTo(HaveOccurred())
			Expect(q.PlanID).To(Equal(largePlan))
			Expect(q.MaxQueuedTasks).To(BeNil())
			Expect(q.AllowedPriorities).To(BeNil())

			Expect(osbDo("PATCH", path, map[string]any{"service_id": serviceID, "plan_id": largePlan}).Status).To(Equal(http.StatusOK))
			Expect(osbDo("PATCH", path, map[string]any{"service_id": serviceID}).Status).To(Equal(http.StatusOK))
			Expect(osbDo("GET", path, nil).JSON()).To(HaveKeyWithValue("plan_id", largePlan))
		})

		DescribeTable("answers 400 for unknown ids and leaves the plan",
			func(body map[string]any) {
				id := provision(smallPlan)
				r := osbDo("PATCH", "/v2/service_instances/"+id, body)
				Expect(r.Status).To(Equal(http.StatusBadRequest), string(r.Body))
				Expect(osbDo("GET", "/v2/service_instances/"+id, nil).JSON()).To(HaveKeyWithValue("plan_id", smallPlan))
			},
			Entry("unknown plan_id", map[string]any{"service_id": serviceID, "plan_id": "nope"}),
			Entry("unknown service_id", map[string]any{"service_id": "nope", "plan_id": largePlan}),
			Entry("missing service_id", map[string]any{"plan_id": largePlan}),
		)

		It("answers 404 for an unknown instance", func() {
			r := osbDo("PATCH", "/v2/service_instances/"+newGUID(), map[string]any{"service_id": serviceID, "plan_id": largePlan})
			Expect(r.Status).To(Equal(http.StatusNotFound))
		})

		It("refuses with 422 a downgrade that the project's current use exceeds", func() {
			id := provision(largePlan)
			in, err := iron.Store.GetInstance(context.Background(), id)
			Expect(err).NotTo(HaveOccurred())
			queueDirect(in.ProjectID, 3)
			r := osbDo("PATCH", "/v2/service_instances/"+id, map[string]any{"service_id": serviceID, "plan_id": smallPlan})
			Expect(r.Status).To(Equal(http.StatusUnprocessableEntity), string(r.Body))
			Expect(r.JSON()).To(HaveKeyWithValue("description",
				`Cannot change to plan "small": it allows at most 2 queued tasks (max_queued_tasks) and the instance has 3 now; cancel or wait for some, then retry`))
			Expect(osbDo("GET", "/v2/service_instances/"+id, nil).JSON()).To(HaveKeyWithValue("plan_id", largePlan))
			q, err := iron.Store.ProjectQuotas(context.Background(), in.ProjectID)
			Expect(err).NotTo(HaveOccurred())
			Expect(q.MaxQueuedTasks).To(BeNil())
		})
	})

	Describe("bind", func() {
		It("answers 201 with credentials, 200 with the same credentials for an identical repeat, 409 for a conflicting one", func() {
			inst := provision(smallPlan)
			bid := newGUID()
			path := "/v2/service_instances/" + inst + "/service_bindings/" + bid
			r := osbDo("PUT", path, bindBody(smallPlan, "app-1"))
			Expect(r.Status).To(Equal(http.StatusCreated), string(r.Body))
			creds := r.JSON()["credentials"].(map[string]any)
			in, err := iron.Store.GetInstance(context.Background(), inst)
			Expect(err).NotTo(HaveOccurred())
			Expect(creds).To(HaveLen(8))
			Expect(creds).To(And(HaveKeyWithValue("project_id", in.ProjectID), HaveKeyWithValue("token", MatchRegexp(`^[0-9a-f]{40}$`)),
				HaveKeyWithValue("host", externalHost), HaveKeyWithValue("port", float64(externalPort)),
				HaveKeyWithValue("scheme", "http"), HaveKeyWithValue("protocol", "http"), HaveKeyWithValue("api_version", 2.0),
				HaveKeyWithValue("url", "http://iron.test.internal:8443/2/projects/"+in.ProjectID)))

			again := osbDo("PUT", path, bindBody(smallPlan, "app-1"))
			Expect(again.Status).To(Equal(http.StatusOK))
			Expect(again.JSON()["credentials"]).To(Equal(creds))

			Expect(osbDo("PUT", path, bindBody(smallPlan, "app-2")).Status).To(Equal(http.StatusConflict))
			Expect(osbDo("GET", path, nil).JSON()["credentials"]).To(Equal(creds))
		})

		It("gives each binding its own token", func() {
			inst := provision(smallPlan)
			_, a := bind(inst, smallPlan)
			_, b := bind(inst, smallPlan)
			Expect(a["token"]).NotTo(Equal(b["token"]))
			Expect(a["project_id"]).To(Equal(b["project_id"]))
		})

		It("binds without an app (a service key)", func() {
			inst := provision(smallPlan)
			r := osbDo("PUT", "/v2/service_instances/"+inst+"/service_bindings/"+newGUID(),
				map[string]any{"service_id": serviceID, "plan_id": smallPlan})
			Expect(r.Status).To(Equal(http.StatusCreated))
		})

		DescribeTable("answers 400 for unknown ids or parameters",
			func(body map[string]any) {
				inst := provision(smallPlan)
				bid := newGUID()
				r := osbDo("PUT", "/v2/service_instances/"+inst+"/service_bindings/"+bid, body)
				Expect(r.Status).To(Equal(http.StatusBadRequest), string(r.Body))
				Expect(osbDo("GET", "/v2/service_instances/"+inst+"/service_bindings/"+bid, nil).Status).To(Equal(http.StatusNotFound))
			},
			Entry("unknown service_id", map[string]any{"service_id": "nope", "plan_id": smallPlan}),
			Entry("unknown plan_id", map[string]any{"service_id": serviceID, "plan_id": "nope"}),
			Entry("missing plan_id", map[string]any{"service_id": serviceID}),
			Entry("parameters", map[string]any{"service_id": serviceID, "plan_id": smallPlan, "parameters": map[string]any{"x": 1}}),
		)

		It("answers 404 for a binding to an unknown instance", func() {
			r := osbDo("PUT", "/v2/service_instances/"+newGUID()+"/service_bindings/"+newGUID(), bindBody(smallPlan, "app-1"))
			Expect(r.Status).To(Equal(http.StatusNotFound))
		})

		It("fetches a binding (200) and answers 404 for an unknown one", func() {
			inst := provision(smallPlan)
			bid, creds := bind(inst, smallPlan)
			r := osbDo("GET", "/v2/service_instances/"+inst+"/service_bindings/"+bid, nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()["credentials"]).To(Equal(creds))
			Expect(osbDo("GET", "/v2/service_instances/"+inst+"/service_bindings/"+newGUID(), nil).Status).To(Equal(http.StatusNotFound))
			Expect(osbDo("GET", "/v2/service_instances/"+newGUID()+"/service_bindings/"+bid, nil).Status).To(Equal(http.StatusNotFound))
			lo := osbDo("GET", "/v2/service_instances/"+inst+"/service_bindings/"+bid+"/last_operation", nil)
			Expect(lo.Status).To(Equal(http.StatusOK))
			Expect(lo.JSON()).To(HaveKeyWithValue("state", "succeeded"))
		})
	})

	Describe("unbind", func() {
		It("answers 200 and revokes the token at once, then 410", func() {
			inst := provision(smallPlan)
			bid, creds := bind(inst, smallPlan)
			token, projectID := creds["token"].(string), creds["project_id"].(string)
			Expect(iron.DoAs(token, "GET", "/2/projects/"+projectID, nil, nil).Status).To(Equal(http.StatusOK))

			path := "/v2/service_instances/" + inst + "/service_bindings/" + bid + instanceQuery(smallPlan)
			r := osbDo("DELETE", path, nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(BeEmpty())
			Expect(iron.DoAs(token, "GET", "/2/projects/"+projectID, nil, nil).Status).To(Equal(http.StatusUnauthorized))
			Expect(osbDo("DELETE", path, nil).Status).To(Equal(http.StatusGone))
			Expect(osbDo("GET", "/v2/service_instances/"+inst+"/service_bindings/"+bid, nil).Status).To(Equal(http.StatusNotFound))
		})

		It("answers 410 for an unknown binding or instance", func() {
			inst := provision(smallPlan)
			Expect(osbDo("DELETE", "/v2/service_instances/"+inst+"/service_bindings/"+newGUID()+instanceQuery(smallPlan), nil).Status).
				To(Equal(http.StatusGone))
			Expect(osbDo("DELETE", "/v2/service_instances/"+newGUID()+"/service_bindings/"+newGUID()+instanceQuery(smallPlan), nil).Status).
				To(Equal(http.StatusGone))
		})

		It("answers 400 for missing or unknown ids and keeps the binding", func() {
			inst := provision(smallPlan)
			bid, creds := bind(inst, smallPlan)
			base := "/v2/service_instances/" + inst + "/service_bindings/" + bid
			Expect(osbDo("DELETE", base+"?plan_id="+smallPlan, nil).Status).To(Equal(http.StatusBadRequest))
			Expect(osbDo("DELETE", base+"?service_id="+serviceID, nil).Status).To(Equal(http.StatusBadRequest))
			Expect(osbDo("DELETE", base+"?service_id=nope&plan_id="+smallPlan, nil).Status).To(Equal(http.StatusBadRequest))
			Expect(osbDo("DELETE", base+"?service_id="+serviceID+"&plan_id=nope", nil).Status).To(Equal(http.StatusBadRequest))
			Expect(iron.DoAs(creds["token"].(string), "GET", "/2/projects/"+creds["project_id"].(string), nil, nil).Status).
				To(Equal(http.StatusOK))
		})
	})

	Describe("deprovision", func() {
		It("answers 200, then 410; 410 for an unknown instance; and touches no other instance", func() {
			keep := provision(smallPlan)
			_, keepCreds := bind(keep, smallPlan)
			gone := provision(smallPlan)
			_, goneCreds := bind(gone, smallPlan)

			path := "/v2/service_instances/" + gone + instanceQuery(smallPlan)
			r := osbDo("DELETE", path, nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(BeEmpty())
			Expect(osbDo("DELETE", path, nil).Status).To(Equal(http.StatusGone))
			Expect(osbDo("DELETE", "/v2/service_instances/"+newGUID()+instanceQuery(smallPlan), nil).Status).To(Equal(http.StatusGone))
			Expect(osbDo("GET", "/v2/service_instances/"+gone, nil).Status).To(Equal(http.StatusNotFound))
			Expect(iron.DoAs(goneCreds["token"].(string), "GET", "/2/projects/"+goneCreds["project_id"].(string), nil, nil).Status).
				To(Equal(http.StatusUnauthorized))

			Expect(osbDo("GET", "/v2/service_instances/"+keep, nil).Status).To(Equal(http.StatusOK))
			Expect(iron.DoAs(keepCreds["token"].(string), "GET", "/2/projects/"+keepCreds["project_id"].(string), nil, nil).Status).
				To(Equal(http.StatusOK))
		})

		It("answers 400 for missing or unknown ids and keeps the instance", func() {
			id := provision(smallPlan)
			base := "/v2/service_instances/" + id
			Expect(osbDo("DELETE", base+"?plan_id="+smallPlan, nil).Status).To(Equal(http.StatusBadRequest))
			Expect(osbDo("DELETE", base+"?service_id="+serviceID, nil).Status).To(Equal(http.StatusBadRequest))
			Expect(osbDo("DELETE", base+"?service_id=nope&plan_id="+smallPlan, nil).Status).To(Equal(http.StatusBadRequest))
			Expect(osbDo("DELETE", base+"?service_id="+serviceID+"&plan_id=nope", nil).Status).To(Equal(http.StatusBadRequest))
			Expect(osbDo("GET", base, nil).Status).To(Equal(http.StatusOK))
		})

		It("lets the same instance id be provisioned again afterwards", func() {
			id := provision(smallPlan)
			Expect(osbDo("DELETE", "/v2/service_instances/"+id+instanceQuery(smallPlan), nil).Status).To(Equal(http.StatusOK))
			Expect(osbDo("PUT", "/v2/service_instances/"+id, provisionBody(largePlan)).Status).To(Equal(http.StatusCreated))
		})
	})

	Describe("the reference Go OSB client (go-open-service-broker-client, API 2.14)", func() {
		It("provisions, fetches, updates, binds, fetches the binding, unbinds and deprovisions", func() {
			c := osbClient()
			id, bid := newGUID(), newGUID()
			_, err := c.ProvisionInstance(&osb.ProvisionRequest{InstanceID: id, ServiceID: serviceID, PlanID: smallPlan,
				OrganizationGUID: "org-c", SpaceGUID: "space-c",
				OriginatingIdentity: &osb.OriginatingIdentity{Platform: "cloudfoundry", Value: `{"user_id":"client-user"}`}})
			Expect(err).NotTo(HaveOccurred())
			_, err = c.ProvisionInstance(&osb.ProvisionRequest{InstanceID: id, ServiceID: serviceID, PlanID: largePlan,
				OrganizationGUID: "org-c", SpaceGUID: "space-c"})
			Expect(osb.IsConflictError(err)).To(BeTrue(), "%v", err)

			got, err := c.GetInstance(&osb.GetInstanceRequest{InstanceID: id})
			Expect(err).NotTo(HaveOccurred())
			Expect(got.PlanID).To(Equal(smallPlan))

			large := largePlan
			_, err = c.UpdateInstance(&osb.UpdateInstanceRequest{InstanceID: id, ServiceID: serviceID, PlanID: &large})
			Expect(err).NotTo(HaveOccurred())

			app := "client-app"
			b, err := c.Bind(&osb.BindRequest{BindingID: bid, InstanceID: id, ServiceID: serviceID, PlanID: largePlan, AppGUID: &app})
			Expect(err).NotTo(HaveOccurred())
			Expect(b.Credentials).To(HaveKey("token"))
			gb, err := c.GetBinding(&osb.GetBindingRequest{InstanceID: id, BindingID: bid})
			Expect(err).NotTo(HaveOccurred())
			Expect(gb.Credentials).To(Equal(b.Credentials))

			_, err = c.Unbind(&osb.UnbindRequest{InstanceID: id, BindingID: bid, ServiceID: serviceID, PlanID: largePlan})
			Expect(err).NotTo(HaveOccurred())
			// Like a platform, the client takes the 410 of a repeat as done.
			_, err = c.Unbind(&osb.UnbindRequest{InstanceID: id, BindingID: bid, ServiceID: serviceID, PlanID: largePlan})
			Expect(err).NotTo(HaveOccurred())
			_, err = c.GetBinding(&osb.GetBindingRequest{InstanceID: id, BindingID: bid})
			httpErr, ok := osb.IsHTTPError(err)
			Expect(ok).To(BeTrue(), "%v", err)
			Expect(httpErr.StatusCode).To(Equal(http.StatusNotFound))

			_, err = c.DeprovisionInstance(&osb.DeprovisionRequest{InstanceID: id, ServiceID: serviceID, PlanID: largePlan})
			Expect(err).NotTo(HaveOccurred())
			_, err = c.DeprovisionInstance(&osb.DeprovisionRequest{InstanceID: id, ServiceID: serviceID, PlanID: largePlan})
			Expect(err).NotTo(HaveOccurred())
			_, err = c.GetInstance(&osb.GetInstanceRequest{InstanceID: id})
			httpErr, ok = osb.IsHTTPError(err)
			Expect(ok).To(BeTrue(), "%v", err)
			Expect(httpErr.StatusCode).To(Equal(http.StatusNotFound))
			Expect(logBuf.String()).To(ContainSubstring(`"user_id":"client-user"`))
		})
	})
})
