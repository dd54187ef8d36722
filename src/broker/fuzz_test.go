package broker

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"

	"code.cloudfoundry.org/brokerapi/v13/domain"
	"code.cloudfoundry.org/brokerapi/v13/domain/apiresponses"
)

// FuzzBrokerBodies: the OSB request bodies as brokerapi decodes them, then the broker's
// own checks of parameters and context, and the originating-identity header. Every
// refusal is a 4xx failure response; nothing panics. The store-backed part of each call
// runs in the broker's Ginkgo suites. Seeds in testdata/fuzz/FuzzBrokerBodies.
func FuzzBrokerBodies(f *testing.F) {
	for _, s := range []string{
		`{"service_id":"s","plan_id":"p","organization_guid":"o","space_guid":"sp","context":{"platform":"cloudfoundry","organization_guid":"o","space_guid":"sp","instance_name":"w"}}`,
		`{"service_id":"s","plan_id":"p","parameters":{"a":1}}`,
		`{"parameters":[1,2],"context":"nope"}`,
		`{"parameters":null,"context":null}`,
		`{"context":{"organization_guid":7}}`,
		`{"maintenance_info":{"version":"1.0"}}`,
		`{"bind_resource":{"app_guid":"a"}}`,
		`[]`, ``, `{`,
	} {
		f.Add([]byte(s), "cloudfoundry eyJ1c2VyX2lkIjoiYWJjIn0=")
	}
	f.Add([]byte(`{}`), "cloudfoundry !!!")
	f.Add([]byte(`{}`), "kubernetes eyJ1c2VyIjoiYSJ9")
	f.Add([]byte(`{}`), "")
	check := func(t *testing.T, what string, err error) {
		t.Helper()
		if err == nil {
			return
		}
		var fr *apiresponses.FailureResponse
		if !errors.As(err, &fr) {
			t.Fatalf("%s: not a failure response: %v", what, err)
		}
		if st := fr.ValidatedStatusCode(slog.New(slog.NewTextHandler(io.Discard, nil))); st < 400 || st >= 500 {
			t.Fatalf("%s: status %d", what, st)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, identity string) {
		_ = originatingIdentity(identity)
		var p domain.ProvisionDetails
		if json.Unmarshal(raw, &p) == nil {
			check(t, "provision parameters", noParameters(p.RawParameters))
			_, err := parseContext(p.RawContext)
			check(t, "provision context", err)
			check(t, "provision maintenance_info", noMaintenanceInfo(p.MaintenanceInfo))
		}
		var u domain.UpdateDetails
		if json.Unmarshal(raw, &u) == nil {
			check(t, "update parameters", noParameters(u.RawParameters))
			_, err := parseContext(u.RawContext)
			check(t, "update context", err)
		}
		var b domain.BindDetails
		if json.Unmarshal(raw, &b) == nil {
			check(t, "bind parameters", noParameters(b.RawParameters))
			_, err := parseContext(b.RawContext)
			check(t, "bind context", err)
		}
	})
}
