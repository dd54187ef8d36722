package api_test

import (
	"encoding/json"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("GET /2/projects/:project_id and authentication", func() {
	It("returns the project with string fields and RFC 3339 times", func() {
		r := iron.Do("GET", iron.Project(), nil)
		Expect(r.Status).To(Equal(http.StatusOK))
		body := r.JSON()
		Expect(body).To(HaveKeyWithValue("id", iron.ProjectID))
		Expect(body).To(HaveKeyWithValue("name", "test project"))
		Expect(body["created_at"]).To(MatchRegexp(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`))
		Expect(iron.ProjectID).To(MatchRegexp(`^[0-9a-f]{24}$`))
	})

	It("accepts the token in the oauth query parameter without an Authorization header", func() {
		r := iron.DoAs("", "GET", iron.Project()+"?oauth="+iron.Token, nil, nil)
		Expect(r.Status).To(Equal(http.StatusOK))
	})

	It("accepts a GET with a JSON body, as iron_go3 sends", func() {
		r := iron.Do("GET", iron.Project(), "{}")
		Expect(r.Status).To(Equal(http.StatusOK))
	})

	It("answers 401 with a msg when the token is missing", func() {
		r := iron.DoAs("", "GET", iron.Project(), nil, nil)
		Expect(r.Status).To(Equal(http.StatusUnauthorized))
		Expect(r.JSON()).To(Equal(map[string]any{"msg": "Token required for authentication"}))
	})

	It("answers 401 for a wrong token", func() {
		r := iron.DoAs("not-a-token", "GET", iron.Project(), nil, nil)
		Expect(r.Status).To(Equal(http.StatusUnauthorized))
		Expect(r.JSON()).To(Equal(map[string]any{"msg": "Invalid token"}))
	})

	It("answers 404 (never 403, never data) for another project's id", func() {
		otherID, _, err := iron.NewProject("other")
		Expect(err).NotTo(HaveOccurred())
		r := iron.Do("GET", "/2/projects/"+otherID, nil)
		Expect(r.Status).To(Equal(http.StatusNotFound))
		Expect(r.JSON()).To(Equal(map[string]any{"msg": "Project not found"}))
		Expect(string(r.Body)).NotTo(ContainSubstring("other"))
	})

	It("answers unknown paths with a JSON 404 that ironcli can decode", func() {
		r := iron.Do("GET", "/2/nothing-here", nil)
		Expect(r.Status).To(Equal(http.StatusNotFound))
		Expect(json.Valid(r.Body)).To(BeTrue())
	})

	It("answers a wrong verb with 405 and a msg", func() {
		r := iron.Do("DELETE", iron.Project()+"/tasks", nil)
		Expect(r.Status).To(Equal(http.StatusMethodNotAllowed))
		Expect(r.JSON()).To(HaveKey("msg"))
	})
})

var _ = Describe("operational endpoints", func() {
	It("reports health with the database checked", func() {
		r := iron.DoAs("", "GET", "/healthz", nil, nil)
		Expect(r.Status).To(Equal(http.StatusOK))
		Expect(r.JSON()).To(HaveKeyWithValue("database", "ok"))
	})

	It("exposes Prometheus metrics with requests by route and the queue by status", func() {
		iron.Do("GET", iron.Project(), nil)
		r := iron.DoAs("", "GET", "/metrics", nil, nil)
		Expect(r.Status).To(Equal(http.StatusOK))
		Expect(string(r.Body)).To(ContainSubstring(`iron_api_requests_total{method="GET",route="/2/projects/:project_id",status="200"}`))
		Expect(string(r.Body)).To(MatchRegexp(`(?m)^iron_tasks\{status="queued"\} \d+$`))
		Expect(string(r.Body)).To(MatchRegexp(`(?m)^iron_tasks\{status="killed"\} \d+$`))
	})
})
