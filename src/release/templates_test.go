package release_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
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
	"iron-api":         func(p string) error { _, err := config.LoadAPI(p); return err },
	"iron-runner":      func(p string) error { _, err := config.LoadRunner(p); return err },
	"iron-registrar":   func(p string) error { _, err := config.LoadRegistrar(p); return err },
	"iron-deregistrar": func(p string) error { _, err := config.LoadRegistrar(p); return err },
	"smoke-tests":      func(p string) error { _, err := config.LoadSmokeTests(p); return err },
}

// configTypes are the structs the config templates render, for the drift check.
var configTypes = map[string]reflect.Type{
	"iron-api":         reflect.TypeOf(config.API{}),
	"iron-runner":      reflect.TypeOf(config.Runner{}),
	"iron-registrar":   reflect.TypeOf(config.Registrar{}),
	"iron-deregistrar": reflect.TypeOf(config.Registrar{}),
	"smoke-tests":      reflect.TypeOf(config.SmokeTests{}),
}

// registrarExtras are the iron-registrar/iron-deregistrar properties no manifest case sets.
var registrarExtras = map[string]map[string]any{
	"plan visibility by plan and a space quota for the diego space": {"marketplace": map[string]any{
		"plans": []any{map[string]any{"name": "standard", "visibility": "organization", "orgs": []any{"team-a"}}},
		"diego": map[string]any{"org": "ironworker", "space": "tasks", "space_quota": map[string]any{"name": "ironworker-tasks",
			"total_memory_in_mb": 65536, "per_process_memory_in_mb": 4096, "total_instances": 100, "per_app_tasks": 50}}}},
}

// extraPropertyCases render each job with properties that no manifest case sets (a
// database URL, TLS files, the broker), so that the drift check sees every config key.
var extraPropertyCases = map[string]map[string]map[string]any{
	"iron-registrar":   registrarExtras,
	"iron-deregistrar": registrarExtras,
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

var _ = Describe("job templates", Ordered, ContinueOnFailure, func() {
	var rendered []renderedJob
	var base, withSmokeTests deploymentManifest

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

	It("runs every process under bpm with the rendered config and logs where BOSH expects them", func() {
		for _, r := range rendered {
			for name, body := range r.Files {
				if strings.HasPrefix(name, "bin/") {
					cmd := exec.Command("bash", "-n")
					cmd.Stdin = strings.NewReader(body)
					out, err := cmd.CombinedOutput()
					Expect(err).NotTo(HaveOccurred(), "%s: %s/%s is not valid bash: %s", r.Case, r.Job, name, out)
				}
			}
			if _, errand := r.Files["bin/run"]; errand {
				Expect(r.Files).NotTo(HaveKey("config/bpm.yml"), "%s is an errand (bin/run) and runs no process", r.Job)
				Expect(strings.TrimSpace(r.Files["monit"])).To(BeEmpty(), "%s is an errand: its monit is empty", r.Job)
				Expect(r.Files["bin/run"]).To(ContainSubstring("/var/vcap/sys/log/"+r.Job+"/"), "%s logs under its log dir", r.Job)
				continue
			}
			var bpm struct {
				Processes []struct {
					Name       string            `json:"name"`
					Executable string            `json:"executable"`
					Args       []string          `json:"args"`
					Env        map[string]string `json:"env"`
				} `json:"processes"`
			}
			Expect(yaml.Unmarshal([]byte(r.Files["config/bpm.yml"]), &bpm)).To(Succeed())
			Expect(bpm.Processes).NotTo(BeEmpty(), "%s: %s", r.Case, r.Job)
			if r.Job == "iron-api" || r.Job == "iron-runner" {
				Expect(bpm.Processes[0].Env).To(HaveKeyWithValue("GOGC", "400"), "%s: %s's gc_percent", r.Case, r.Job)
			}
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
		}
		r := findRendered(rendered, "base manifest", "iron-api")
		Expect(r.Files["bin/post-start"]).To(ContainSubstring("http://127.0.0.1:8080/healthz"))
		Expect(r.Files["bin/post-start"]).To(ContainSubstring("/var/vcap/sys/log/iron-api/"))
	})

	It("points iron-runner at the iron-api link with its runner credential, on diego by default", func() {
		r := findRendered(rendered, "base manifest", "iron-runner")
		var c config.Runner
		Expect(yaml.UnmarshalStrict([]byte(r.Files["config/config.yml"]), &c)).To(Succeed())
		Expect(c.APIURL).To(Equal("http://q-s0.api.default.ironworker.bosh:8080"))
		Expect(c.Credential.Name).To(Equal("iron-runner"))
		Expect(c.Credential.Secret).NotTo(BeEmpty())
		Expect(c.RunnerID).To(Equal("runner/00000000-0000-4000-8000-000000000000"))
		Expect(c.Backend.Type).To(Equal("diego"))
		Expect(c.Backend.Diego.APIURL).To(Equal("https://api.sys.example.com"))
		Expect(c.Slots).To(Equal(10))
		Expect(r.Files["bin/post-start"]).To(ContainSubstring("http://127.0.0.1:8081/healthz"))

		local := findRendered(rendered, "use-local-backend.yml", "iron-runner")
		Expect(local.Files["config/config.yml"]).To(ContainSubstring(`"work_dir": "/var/vcap/data/iron-runner/tasks"`))
		Expect(local.Files["config/config.yml"]).NotTo(ContainSubstring(`"diego"`))
		tls := findRendered(rendered, "use-tls-for-api.yml", "iron-runner")
		Expect(tls.Files["config/config.yml"]).To(ContainSubstring(`"api_url": "https://iron.sys.example.com"`))
	})

	It("drains iron-runner and iron-registrar by SIGTERM, printing only an integer", func() {
		for _, job := range []string{"iron-runner", "iron-registrar"} {
			r := findRendered(rendered, "base manifest", job)
			root := GinkgoT().TempDir()
			script := strings.ReplaceAll(r.Files["bin/drain"], "/var/vcap/", root+"/")
			script = strings.ReplaceAll(script, "sleep 2\n", "\n")
			// The process, as bpm runs it, with bpm's pidfile.
			proc := exec.Command("sleep", "300")
			Expect(proc.Start()).To(Succeed())
			done := make(chan error, 1)
			go func() { done <- proc.Wait() }()
			pidfile := filepath.Join(root, "sys", "run", "bpm", job, job+".pid")
			Expect(os.MkdirAll(filepath.Dir(pidfile), 0o755)).To(Succeed())
			Expect(os.WriteFile(pidfile, []byte(strconv.Itoa(proc.Process.Pid)), 0o644)).To(Succeed())
			cmd := exec.Command("bash", "-c", script, "drain", "job_shutdown", "hash_unchanged")
			var stdout bytes.Buffer
			cmd.Stdout = &stdout
			Expect(cmd.Run()).To(Succeed())
			Expect(stdout.String()).To(Equal("0\n"), "%s drain printed more than an integer", job)
			Eventually(done).Should(Receive(), "%s drain should have sent SIGTERM", job)
			logged, err := os.ReadFile(filepath.Join(root, "sys", "log", job, "drain.log"))
			Expect(err).NotTo(HaveOccurred())
			Expect(string(logged)).To(ContainSubstring("drained"))
			// Not running: still only 0.
			stdout.Reset()
			cmd = exec.Command("bash", "-c", script, "drain", "job_shutdown", "hash_unchanged")
			cmd.Stdout = &stdout
			Expect(cmd.Run()).To(Succeed())
			Expect(stdout.String()).To(Equal("0\n"))
		}
		Expect(findRendered(rendered, "set-runner-concurrency.yml", "iron-runner").Files["bin/drain"]).To(ContainSubstring("waiting up to 330s"))
	})

	It("wires NATS from cf-deployment's nats-tls link and the iron-api link into iron-registrar; the deregistrar errand renders the same config", func() {
		r := findRendered(rendered, "base manifest", "iron-registrar")
		var c config.Registrar
		Expect(yaml.UnmarshalStrict([]byte(r.Files["config/config.yml"]), &c)).To(Succeed())
		Expect(c.Routes.NATS.Servers).To(Equal([]string{"nats.service.cf.internal:4224"}))
		Expect(c.Routes.NATS.User).To(Equal("nats"))
		Expect(c.Routes.NATS.TLS.Enabled).To(BeTrue())
		Expect(c.Routes.NATS.TLS.ClientCert).To(ContainSubstring("BEGIN CERTIFICATE"))
		Expect(c.Routes.Host).To(Equal("10.0.16.10"))
		Expect(c.Routes.Port).To(Equal(8080))
		Expect(c.Routes.URIs).To(Equal([]string{"iron.sys.example.com"}))
		Expect(c.Routes.PrivateInstanceID).To(Equal("00000000-0000-4000-8000-000000000000"))
		Expect(c.Marketplace.Broker.URL).To(Equal("https://iron.sys.example.com"))
		Expect(c.Marketplace.Broker.Username).To(Equal("ironworker-broker"))
		Expect(c.CF.APIURL).To(Equal("https://api.sys.example.com"))
		d := findRendered(rendered, "base manifest", "iron-deregistrar")
		Expect(d.Files["config/config.yml"]).To(Equal(r.Files["config/config.yml"]))
		Expect(d.Files["bin/run"]).To(ContainSubstring("iron-registrar deregister"))
		Expect(d.Files["bin/run"]).NotTo(ContainSubstring("config.yml --purge"))
		g, j := findJob(base, "iron-deregistrar")
		j.Properties = deepMerge(j.Properties, map[string]any{"purge": true})
		purged, err := renderJob(base, g, j)
		Expect(err).NotTo(HaveOccurred())
		Expect(purged["bin/run"]).To(ContainSubstring("config.yml --purge"))

		off := findRendered(rendered, "disable-route-registration.yml", "iron-registrar")
		Expect(off.Files["config/config.yml"]).To(ContainSubstring(`"url": "https://ironworker.example.com"`))
		Expect(off.Files["bin/drain"]).NotTo(ContainSubstring("sleep 2"))
		orgs := findRendered(rendered, "enable-service-access-for-orgs.yml", "iron-deregistrar")
		Expect(orgs.Files["config/config.yml"]).To(ContainSubstring(`"default_visibility": "organization"`))
	})

	It("points the smoke-tests errand at the broker through the iron-api link", func() {
		r := findRendered(rendered, "add-smoke-tests.yml", "smoke-tests")
		var c config.SmokeTests
		Expect(yaml.UnmarshalStrict([]byte(r.Files["config/config.yml"]), &c)).To(Succeed())
		Expect(c.Broker.URL).To(Equal("http://q-s0.api.default.ironworker.bosh:8080"))
		Expect(c.Broker.Password).NotTo(BeEmpty())
		Expect(r.Files["bin/run"]).To(ContainSubstring("/var/vcap/packages/ironworker/bin/smoke-tests --config /var/vcap/jobs/smoke-tests/config/config.yml"))
	})

	DescribeTable("refuses bad iron-runner, iron-registrar and smoke-tests values, naming the property",
		func(job string, props map[string]any, message string) {
			if withSmokeTests.Name == "" {
				var err error
				withSmokeTests, _, err = interpolate(deploymentCase{Name: "add-smoke-tests.yml", Ops: []string{"add-smoke-tests.yml"}})
				Expect(err).NotTo(HaveOccurred())
			}
			m := withSmokeTests
			g, j := findJob(m, job)
			j.Properties = deepMerge(j.Properties, props)
			files, err := renderJob(m, g, j)
			if err == nil {
				path := filepath.Join(GinkgoT().TempDir(), "config.yml")
				Expect(os.WriteFile(path, []byte(files["config/config.yml"]), 0o600)).To(Succeed())
				err = configLoaders[job](path)
			}
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("runner: non-integer slots", "iron-runner", map[string]any{"slots": "many"}, `iron-runner: property slots must be an integer, got "many"`),
		Entry("runner: a bad gc_percent", "iron-runner", map[string]any{"gc_percent": "off"}, `iron-runner: property gc_percent must be an integer from 1 to 10000, got "off"`),
		Entry("runner: too many slots (the loader)", "iron-runner", map[string]any{"slots": 5000}, "property slots must be at most 1000"),
		Entry("runner: a bad drain timeout", "iron-runner", map[string]any{"drain_timeout": "a while"}, "property drain_timeout must be a duration"),
		Entry("runner: an unknown backend", "iron-runner", map[string]any{"backend": map[string]any{"type": "k8s"}}, "property backend.type must be local, diego or noop"),
		Entry("runner: diego without a client", "iron-runner", map[string]any{"backend": map[string]any{"diego": map[string]any{"client_id": ""}}}, "property backend.diego.client_id is required"),
		Entry("runner: a bad memory limiter (the loader)", "iron-runner", map[string]any{"backend": map[string]any{"type": "local", "local": map[string]any{"memory_limiter": "magic"}}}, "backend.local.memory_limiter"),
		Entry("registrar: a non-integer route port", "iron-registrar", map[string]any{"routes": map[string]any{"port": "http"}}, `iron-registrar: property routes.port must be an integer, got "http"`),
		Entry("registrar: a bad visibility (the loader)", "iron-registrar", map[string]any{"marketplace": map[string]any{"default_visibility": "everyone"}}, "marketplace.default_visibility"),
		Entry("registrar: a route with a scheme (the loader)", "iron-registrar", map[string]any{"routes": map[string]any{"uris": []any{"https://iron.example.com"}}}, "routes.uris[0]"),
		Entry("smoke-tests: a bad task timeout", "smoke-tests", map[string]any{"task_timeout": "forever"}, "property task_timeout must be a duration"),
		Entry("smoke-tests: a bad broker URL (the loader)", "smoke-tests", map[string]any{"broker": map[string]any{"url": "ftp://x"}}, "broker.url"),
	)

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
		Entry("a gc_percent out of range", map[string]any{"gc_percent": 0}, "iron-api: property gc_percent must be an integer from 1 to 10000, got 0"),
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
