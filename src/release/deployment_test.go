package release_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

// A deployment case: the base manifest with some ops-files and their example vars files,
// interpolated like `bosh int --var-errs --vars-store`.
type deploymentCase struct {
	Name  string
	Ops   []string // ops-files/<name>
	Extra []string // vars files, relative to the repository
}

// deploymentCases is the base manifest, each ops-file alone, and the documented
// combinations (ops-files/README.md, "Combinations").
func deploymentCases() []deploymentCase {
	cases := []deploymentCase{{Name: "base manifest"}}
	for _, op := range opsFiles() {
		cases = append(cases, deploymentCase{Name: op, Ops: []string{op}})
	}
	for _, combo := range documentedCombinations() {
		cases = append(cases, deploymentCase{Name: strings.Join(combo, " + "), Ops: combo})
	}
	return cases
}

func opsFiles() []string {
	matches, err := filepath.Glob(filepath.Join(repoRootDir(), "ops-files", "*.yml"))
	Expect(err).NotTo(HaveOccurred())
	var names []string
	for _, m := range matches {
		names = append(names, filepath.Base(m))
	}
	sort.Strings(names)
	return names
}

func documentedCombinations() [][]string {
	readme, err := os.ReadFile(filepath.Join(repoRootDir(), "ops-files", "README.md"))
	Expect(err).NotTo(HaveOccurred())
	var combos [][]string
	_, section, found := strings.Cut(string(readme), "## Combinations")
	if !found {
		return nil
	}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "Tested together:") {
			continue
		}
		var combo []string
		for _, f := range strings.Split(strings.TrimPrefix(line, "Tested together:"), "+") {
			f = strings.Trim(strings.TrimSpace(f), "`.")
			if f != "" {
				combo = append(combo, f)
			}
		}
		combos = append(combos, combo)
	}
	return combos
}

// repoRootDir works before BeforeSuite too (tree construction time).
func repoRootDir() string {
	if repoRoot != "" {
		return repoRoot
	}
	wd, err := os.Getwd()
	Expect(err).NotTo(HaveOccurred())
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

func exampleVarsFile(op string) string {
	p := filepath.Join(repoRoot, "ops-files", "example-vars-files", "vars-"+op)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

type manifestJob struct {
	Name       string                    `json:"name"`
	Release    string                    `json:"release"`
	Properties map[string]any            `json:"properties"`
	Consumes   map[string]map[string]any `json:"consumes"`
	Provides   map[string]map[string]any `json:"provides"`
}

type instanceGroup struct {
	Name      string                  `json:"name"`
	Instances int                     `json:"instances"`
	AZs       []string                `json:"azs"`
	Lifecycle string                  `json:"lifecycle"`
	Networks  []struct{ Name string } `json:"networks"`
	Jobs      []manifestJob           `json:"jobs"`
}

type deploymentManifest struct {
	Name     string `json:"name"`
	Releases []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		URL     string `json:"url"`
	} `json:"releases"`
	InstanceGroups []instanceGroup `json:"instance_groups"`
	Variables      []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"variables"`
}

// interpolate evaluates the case's manifest, generating credentials into a vars store.
func interpolate(c deploymentCase) (deploymentManifest, []byte, error) {
	var ops, vars []string
	for _, op := range c.Ops {
		ops = append(ops, filepath.Join(repoRoot, "ops-files", op))
		if v := exampleVarsFile(op); v != "" {
			vars = append(vars, v)
		}
	}
	// The operator's own variables (system domain, cf-deployment's NATS client certificate).
	vars = append([]string{filepath.Join(repoRoot, "manifests", "example-vars.yml")}, vars...)
	for _, v := range c.Extra {
		vars = append(vars, filepath.Join(repoRoot, v))
	}
	store := filepath.Join(GinkgoT().TempDir(), "vars-store.yml")
	out, err := boshtool.InterpolateFiles(filepath.Join(repoRoot, "manifests", "ironworker.yml"), ops, vars, store)
	if err != nil {
		return deploymentManifest{}, nil, err
	}
	var m deploymentManifest
	if err := yaml.Unmarshal(out, &m); err != nil {
		return m, out, err
	}
	return m, out, nil
}

// External link providers (other releases' jobs) the manifests use: their provided links
// as those releases' specs declare them.
type externalProvider struct {
	Link       string
	Type       string
	Properties map[string]any // property name → spec default (nil: none)
}

var externalProviders = map[string]externalProvider{
	"postgres/postgres": {Link: "postgres", Type: "database", Properties: map[string]any{
		"databases.port": 5432, "databases.databases": nil, "databases.roles": nil, "databases.tls.ca": "",
	}},
}

// Links the manifests consume from other deployments (`consumes: {x: {from: L, deployment:
// D}}`), keyed D/L, as those deployments provide them (cf-deployment's nats-tls: the
// nats-release spec's provided properties).
var crossDeploymentProviders = map[string]struct {
	Type   string
	Group  instanceGroup
	Deploy string
	Props  map[string]any
}{
	"cf/nats-tls": {Type: "nats-tls", Group: instanceGroup{Name: "nats", Instances: 2, AZs: []string{"z1", "z2"}}, Deploy: "cf",
		Props: map[string]any{"nats": map[string]any{"user": "nats", "password": "nats-secret", "hostname": "nats.service.cf.internal", "port": 4224}}},
}

type provider struct {
	Group    instanceGroup
	Job      manifestJob
	Link     string // link name in the provider's spec
	Alias    string // provides.<link>.as, or the link name
	Type     string
	Props    map[string]any
	Deploy   string
	External bool
}

func providersOf(m deploymentManifest) []provider {
	var ps []provider
	for _, g := range m.InstanceGroups {
		for _, j := range g.Jobs {
			var links []provider
			if ext, ok := externalProviders[j.Release+"/"+j.Name]; ok {
				links = append(links, provider{Link: ext.Link, Type: ext.Type, Props: linkProps(ext.Properties, j.Properties), External: true})
			} else if j.Release == "ironworker" {
				spec, err := boshtool.ReadJobSpec(filepath.Join(repoRoot, "jobs", j.Name))
				Expect(err).NotTo(HaveOccurred())
				for _, p := range spec.Provides {
					defaults := map[string]any{}
					for _, name := range p.Properties {
						defaults[name] = spec.Properties[name].Default
					}
					links = append(links, provider{Link: p.Name, Type: p.Type, Props: linkProps(defaults, j.Properties)})
				}
			}
			for _, l := range links {
				l.Group, l.Job, l.Deploy, l.Alias = g, j, m.Name, l.Link
				if as, ok := j.Provides[l.Link]["as"].(string); ok {
					l.Alias = as
				}
				ps = append(ps, l)
			}
		}
	}
	return ps
}

func linkProps(defaults map[string]any, props map[string]any) map[string]any {
	out := map[string]any{}
	for name, def := range defaults {
		v, ok := lookup(props, name)
		if !ok {
			v = def
		}
		setDotted(out, name, v)
	}
	return out
}

func lookup(m map[string]any, dotted string) (any, bool) {
	var cur any = m
	for _, k := range strings.Split(dotted, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func setDotted(m map[string]any, dotted string, v any) {
	keys := strings.Split(dotted, ".")
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}

func instanceAddress(g instanceGroup, deployment string, i int) string {
	network := "default"
	if len(g.Networks) > 0 {
		network = g.Networks[0].Name
	}
	return fmt.Sprintf("%08d-0000-4000-8000-%012d.%s.%s.%s.bosh", i, i, g.Name, network, deployment)
}

// resolveLinks does what the director does for the job's consumed links: an explicit
// `from:` names a provider alias, `nil` switches the link off, and otherwise the one
// provider of the link's type in the deployment is used (an error if there are several).
func resolveLinks(m deploymentManifest, j manifestJob, spec boshtool.JobSpec) (map[string]boshtool.Link, error) {
	links := map[string]boshtool.Link{}
	ps := providersOf(m)
	for _, c := range spec.Consumes {
		var candidates []provider
		cfg, explicit := j.Consumes[c.Name]
		if explicit && cfg == nil {
			continue // consumes: {name: nil}
		}
		if d, ok := cfg["deployment"].(string); ok && d != m.Name {
			from, _ := cfg["from"].(string)
			x, ok := crossDeploymentProviders[d+"/"+from]
			if !ok || x.Type != c.Type {
				return nil, fmt.Errorf("job %s consumes %s from deployment %s link %s (type %s), which the tests know no provider for", j.Name, c.Name, d, from, c.Type)
			}
			candidates = append(candidates, provider{Group: x.Group, Props: x.Props, Deploy: x.Deploy, Type: x.Type, Alias: from, External: true})
		}
		for _, p := range ps {
			if _, cross := cfg["deployment"].(string); cross && cfg["deployment"] != m.Name {
				break
			}
			if p.Type != c.Type {
				continue
			}
			if from, ok := cfg["from"].(string); ok && from != p.Alias {
				continue
			}
			candidates = append(candidates, p)
		}
		if _, ok := cfg["from"]; ok && len(candidates) == 0 {
			return nil, fmt.Errorf("job %s consumes %s from %v, which no job provides", j.Name, c.Name, cfg["from"])
		}
		if len(candidates) > 1 {
			return nil, fmt.Errorf("job %s: link %s (type %s) has %d providers; name one with from:", j.Name, c.Name, c.Type, len(candidates))
		}
		if len(candidates) == 0 {
			if !c.Optional {
				return nil, fmt.Errorf("job %s: no provider for its link %s (type %s)", j.Name, c.Name, c.Type)
			}
			continue
		}
		p := candidates[0]
		l := boshtool.Link{Properties: p.Props, Address: fmt.Sprintf("q-s0.%s.%s.%s.bosh", p.Group.Name, "default", p.Deploy)}
		for i := 0; i < p.Group.Instances; i++ {
			az := ""
			if len(p.Group.AZs) > 0 {
				az = p.Group.AZs[i%len(p.Group.AZs)]
			}
			l.Instances = append(l.Instances, boshtool.LinkInstance{Name: p.Group.Name, Index: i,
				ID: fmt.Sprintf("%08d-0000-4000-8000-%012d", i, i), AZ: az, Address: instanceAddress(p.Group, p.Deploy, i), Bootstrap: i == 0})
		}
		links[c.Name] = l
	}
	return links, nil
}

// renderedJob is one ironworker job rendered for instance 0 of its instance group.
type renderedJob struct {
	Case  string
	Group string
	Job   string
	Files map[string]string
}

// renderDeployment renders every ironworker job of the manifest.
func renderDeployment(c deploymentCase, m deploymentManifest) []renderedJob {
	var out []renderedJob
	for _, g := range m.InstanceGroups {
		for _, j := range g.Jobs {
			if j.Release != "ironworker" {
				continue
			}
			files, err := renderJob(m, g, j)
			Expect(err).NotTo(HaveOccurred(), "%s: %s/%s", c.Name, g.Name, j.Name)
			out = append(out, renderedJob{Case: c.Name, Group: g.Name, Job: j.Name, Files: files})
		}
	}
	return out
}

func renderJob(m deploymentManifest, g instanceGroup, j manifestJob) (map[string]string, error) {
	jobDir := filepath.Join(repoRoot, "jobs", j.Name)
	spec, err := boshtool.ReadJobSpec(jobDir)
	if err != nil {
		return nil, err
	}
	links, err := resolveLinks(m, j, spec)
	if err != nil {
		return nil, err
	}
	az := ""
	if len(g.AZs) > 0 {
		az = g.AZs[0]
	}
	inst := boshtool.Instance{Deployment: m.Name, Group: g.Name, Index: 0, ID: "00000000-0000-4000-8000-000000000000",
		AZ: az, Address: instanceAddress(g, m.Name, 0), IP: "10.0.16.10", Bootstrap: true}
	return renderer.RenderJob(jobDir, inst, j.Properties, links)
}
