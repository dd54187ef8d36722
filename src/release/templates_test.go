package release_test

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

// configLoaders are the binaries' own config loaders, by job. Every job that renders
// config/config.yml must have one here.
var configLoaders = map[string]func(path string) error{
	"iron-api": func(p string) error { _, err := config.LoadAPI(p); return err },
}

// configTypes are the structs the config templates render, for the drift check.
var configTypes = map[string]reflect.Type{
	"iron-api": reflect.TypeOf(config.API{}),
}

// extraPropertyCases render each job with properties that no manifest case sets (a
// database URL, TLS files, the broker), so that the drift check sees every config key.
var extraPropertyCases = map[string]map[string]map[string]any{
	"iron-api": {
		"database by URL": {"database": map[string]any{"url": "postgres://ironworker:secret@db.example.com:5432/ironworker"}},
		"TLS database and the broker with a full plan": {
			"database": map[string]any{"sslmode": "verify-full", "ca_cert": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
				"client_cert": "-----BEGIN CERTIFICATE-----\nC\n-----END CERTIFICATE-----\n", "client_key": "-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n"},
			"broker": map[string]any{
				"enabled": true, "password": "broker-secret",
				"service": map[string]any{"id": "5b9ec2f3-3a6b-4bf5-9fd8-0c2a7bd1a4a0", "tags": []any{"ironworker", "tasks"}},
				"plans": []any{map[string]any{"id": "0b8c5e55-7c1e-4f55-8d8b-1c3b1e1f7a01", "name": "standard", "description": "Standard",
					"free": false, "display_name": "Standard", "bullets": []any{"10 concurrent tasks"},
					"quotas": map[string]any{"max_concurrency": 10, "max_timeout_seconds": 3600, "max_payload_bytes": 65536,
						"max_queued_tasks": 1000, "max_schedules": 50, "allowed_priorities": []any{0, 1}}}},
				"external_api": map[string]any{"host": "iron.sys.example.com"},
			},
		},
	},
}

var _ = Describe("job templates", Ordered, func() {
	var rendered []renderedJob
	var base deploymentManifest

	BeforeAll(func() {
		for _, c := range deploymentCases() {
			m, _, err := interpolate(c)
			Expect(err).NotTo(HaveOccurred(), c.Name)
			if c.Name == "base manifest" {
				base = m
			}
			rendered = append(rendered, renderDeployment(c, m)...)
		}
		// The extra property cases, on the base manifest's instance of each job.
		for job, cases := range extraPropertyCases {
			g, j := findJob(base, job)
			for name, props := range cases {
				jj := j
				jj.Properties = deepMerge(j.Properties, props)
				files, err := renderJob(base, g, jj)
				Expect(err).NotTo(HaveOccurred(), "%s: %s", job, name)
				rendered = append(rendered, renderedJob{Case: name, Group: g.Name, Job: job, Files: files})
			}
		}
	})

	It("renders every template of every job in every deployment case", func() {
		seen := map[string]bool{}
		for _, r := range rendered {
			spec, err := boshtool.ReadJobSpec(filepath.Join(repoRoot, "jobs", r.Job))
			Expect(err).NotTo(HaveOccurred())
			Expect(r.Files).To(HaveLen(len(spec.Templates)+1), "%s: %s", r.Case, r.Job)
			seen[r.Job] = true
		}
		jobs, err := os.ReadDir(filepath.Join(repoRoot, "jobs"))
		Expect(err).NotTo(HaveOccurred())
		for _, j := range jobs {
			if j.IsDir() {
				Expect(seen).To(HaveKey(j.Name()), "job %s is in no deployment case: add it to the manifest or an ops-file", j.Name())
			}
		}
	})

	It("renders configs that the binaries' own loaders accept", func() {
		for _, r := range rendered {
			cfg, ok := r.Files["config/config.yml"]
			if !ok {
				continue
			}
			load, ok := configLoaders[r.Job]
			Expect(ok).To(BeTrue(), "no config loader registered for job %s", r.Job)
			path := filepath.Join(GinkgoT().TempDir(), "config.yml")
			Expect(os.WriteFile(path, []byte(cfg), 0o600)).To(Succeed())
			Expect(load(path)).To(Succeed(), "%s: %s/%s config:\n%s", r.Case, r.Group, r.Job, cfg)
		}
	})

	It("renders every key of the config structs (template and code cannot drift apart)", func() {
		for job, typ := range configTypes {
			want := structKeys(typ, "")
			got := map[string]bool{}
			for _, r := range rendered {
				if r.Job != job {
					continue
				}
				var v any
				Expect(yaml.Unmarshal([]byte(r.Files["config/config.yml"]), &v)).To(Succeed())
				valueKeys(v, "", got)
			}
			var missing []string
			for _, k := range want {
				if !got[k] {
					missing = append(missing, k)
				}
			}
			Expect(missing).To(BeEmpty(), "jobs/%s/templates/config.yml.erb never renders these keys of %s", job, typ)
		}
	})

	It("wires the database link from postgres-release into the iron-api config", func() {
		r := findRendered(rendered, "base manifest", "iron-api")
		var c map[string]any
		Expect(json.Unmarshal([]byte(r.Files["config/config.yml"]), &c)).To(Succeed())
		db := c["database"].(map[string]any)
		Expect(db["host"]).To(Equal("q-s0.database.default.ironworker.bosh"))
		Expect(db["port"]).To(BeEquivalentTo(5432))
		Expect(db["name"]).To(Equal("ironworker"))
		Expect(db["password"]).NotTo(BeEmpty(), "the password of the link's databases.roles entry")
		Expect(c["listen_address"]).To(Equal("0.0.0.0:8080"))
	})

	It("runs iron-api under bpm with the rendered config and logs where BOSH expects them", func() {
		for _, r := range rendered {
			var bpm struct {
				Processes []struct {
					Name       string   `json:"name"`
					Executable string   `json:"executable"`
					Args       []string `json:"args"`
				} `json:"processes"`
			}
			Expect(yaml.Unmarshal([]byte(r.Files["config/bpm.yml"]), &bpm)).To(Succeed())
			Expect(bpm.Processes).NotTo(BeEmpty(), "%s: %s", r.Case, r.Job)
			for _, p := range bpm.Processes {
				bin := strings.TrimPrefix(p.Executable, "/var/vcap/packages/ironworker/bin/")
				Expect(filepath.Join(repoRoot, "src", "cmd", bin, "main.go")).To(BeAnExistingFile(), "%s runs %s", r.Job, p.Executable)
				for _, a := range p.Args {
					if rel, ok := strings.CutPrefix(a, "/var/vcap/jobs/"+r.Job+"/"); ok {
						Expect(r.Files).To(HaveKey(rel), "%s: bpm passes %s, which no template renders", r.Job, a)
					}
				}
			}
			Expect(r.Files["monit"]).To(ContainSubstring("/var/vcap/sys/run/bpm/" + r.Job + "/" + r.Job + ".pid"))
			Expect(r.Files["monit"]).To(ContainSubstring("/var/vcap/jobs/bpm/bin/bpm start " + r.Job))
			for name, body := range r.Files {
				if strings.HasPrefix(name, "bin/") {
					cmd := exec.Command("bash", "-n")
					cmd.Stdin = strings.NewReader(body)
					out, err := cmd.CombinedOutput()
					Expect(err).NotTo(HaveOccurred(), "%s: %s/%s is not valid bash: %s", r.Case, r.Job, name, out)
				}
			}
		}
		r := findRendered(rendered, "base manifest", "iron-api")
		Expect(r.Files["bin/post-start"]).To(ContainSubstring("http://127.0.0.1:8080/healthz"))
		Expect(r.Files["bin/post-start"]).To(ContainSubstring("/var/vcap/sys/log/iron-api/"))
	})

	DescribeTable("refuses bad property values, naming the property",
		func(props map[string]any, message string) {
			g, j := findJob(base, "iron-api")
			j.Properties = deepMerge(j.Properties, props)
			files, err := renderJob(base, g, j)
			if err == nil {
				path := filepath.Join(GinkgoT().TempDir(), "config.yml")
				Expect(os.WriteFile(path, []byte(files["config/config.yml"]), 0o600)).To(Succeed())
				err = configLoaders["iron-api"](path)
			}
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("a non-integer port", map[string]any{"port": "eighty"}, `property port must be an integer, got "eighty"`),
		Entry("a port out of range", map[string]any{"port": 70000}, "property port must be at most 65535"),
		Entry("a bad duration", map[string]any{"runner": map[string]any{"lease_wait": "soon"}}, "property runner.lease_wait must be a duration"),
		Entry("a short encryption passphrase", map[string]any{"encryption": map[string]any{"keys": []any{map[string]any{"label": "k", "passphrase": "short"}}}}, "encryption.keys[0].passphrase"),
		Entry("an unknown active key (refused by the loader)", map[string]any{"encryption": map[string]any{"active_key": "nope"}}, "encryption.active_key"),
		Entry("a negative limit", map[string]any{"limits": map[string]any{"max_payload_bytes": -1}}, "property limits.max_payload_bytes must be at least 1"),
	)

	It("refuses a link the job does not consume", func() {
		_, err := renderer.RenderJob(filepath.Join(repoRoot, "jobs", "iron-api"), boshtool.Instance{Deployment: "d", Group: "api"},
			nil, map[string]boshtool.Link{"nats": {}})
		Expect(err).To(MatchError(ContainSubstring(`does not consume a link named "nats"`)))
	})
})

func findJob(m deploymentManifest, job string) (instanceGroup, manifestJob) {
	for _, g := range m.InstanceGroups {
		for _, j := range g.Jobs {
			if j.Name == job && j.Release == "ironworker" {
				return g, j
			}
		}
	}
	Fail("no job " + job + " in the manifest")
	return instanceGroup{}, manifestJob{}
}

func findRendered(rs []renderedJob, c, job string) renderedJob {
	for _, r := range rs {
		if r.Case == c && r.Job == job {
			return r
		}
	}
	Fail("nothing rendered for " + job + " in " + c)
	return renderedJob{}
}

func deepMerge(base, over map[string]any) map[string]any {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]any{}
	}
	for k, v := range over {
		if om, ok := v.(map[string]any); ok {
			if bm, ok := out[k].(map[string]any); ok {
				out[k] = deepMerge(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// structKeys lists the dotted JSON keys of a config struct ("[]" for list elements).
func structKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			keys = append(keys, prefix+name)
			keys = append(keys, structKeys(f.Type, prefix+name+".")...)
		}
	case reflect.Slice:
		if e := t.Elem(); e.Kind() == reflect.Struct || (e.Kind() == reflect.Pointer && e.Elem().Kind() == reflect.Struct) {
			keys = append(keys, structKeys(e, strings.TrimSuffix(prefix, ".")+"[].")...)
		}
	}
	sort.Strings(keys)
	return keys
}

func valueKeys(v any, prefix string, into map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, vv := range x {
			into[prefix+k] = true
			valueKeys(vv, prefix+k+".", into)
		}
	case []any:
		for _, e := range x {
			valueKeys(e, strings.TrimSuffix(prefix, ".")+"[].", into)
		}
	}
}
