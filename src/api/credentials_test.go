package api_test

import (
	"context"
	"encoding/base64"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("POST /2/projects/:project_id/credentials", func() {
	auth := func(json string) map[string]string {
		return map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(json))}
	}

	It("stores registry credentials as `iron docker login` sends them, sealed at rest", func() {
		r := iron.Do("POST", iron.Project()+"/credentials",
			auth(`{"email":"a@b.c","username":"me","password":"pa55-word","serveraddress":"registry.example.com"}`))
		Expect(r.Status).To(Equal(http.StatusOK))
		Expect(r.JSON()).To(Equal(map[string]any{"msg": "Credentials saved"}))

		stored, err := iron.Store.RegistryCredentials(context.Background(), iron.ProjectID, "registry.example.com")
		Expect(err).NotTo(HaveOccurred())
		Expect(string(stored)).To(ContainSubstring(`"username":"me"`))

		conn, err := iron.DB.SQL()
		Expect(err).NotTo(HaveOccurred())
		defer conn.Close()
		var sealed []byte
		Expect(conn.QueryRow(`SELECT auth_sealed FROM registry_credentials WHERE project_id = $1`, iron.ProjectID).Scan(&sealed)).To(Succeed())
		Expect(string(sealed)).NotTo(ContainSubstring("pa55-word"))
	})

	It("defaults the registry to Docker Hub", func() {
		r := iron.Do("POST", iron.Project()+"/credentials", auth(`{"username":"me","password":"pw"}`))
		Expect(r.Status).To(Equal(http.StatusOK))
		_, err := iron.Store.RegistryCredentials(context.Background(), iron.ProjectID, "https://index.docker.io/v1/")
		Expect(err).NotTo(HaveOccurred())
	})

	DescribeTable("refuses unusable credentials with a 400 msg",
		func(body any, wantMsg string) {
			r := iron.Do("POST", iron.Project()+"/credentials", body)
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()["msg"]).To(ContainSubstring(wantMsg))
		},
		Entry("no auth", map[string]string{}, `"auth" is required`),
		Entry("not base64", map[string]string{"auth": "%%%"}, "base64"),
		Entry("not JSON inside", map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte("nope"))}, "JSON object"),
		Entry("no password", auth(`{"username":"me"}`), "username and a password"),
		Entry("malformed JSON body", `{"auth":`, "Invalid JSON"),
	)

	It("refuses a body over the request limit with 413", func() {
		big := make([]byte, iron.Limits.MaxRequestBytes+10)
		for i := range big {
			big[i] = 'a'
		}
		r := iron.Do("POST", iron.Project()+"/credentials", big)
		Expect(r.Status).To(Equal(http.StatusRequestEntityTooLarge))
		Expect(r.JSON()["msg"]).To(ContainSubstring("larger than"))
	})
})
