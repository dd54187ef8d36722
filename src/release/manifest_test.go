package release_test

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

var _ = Describe("manifests and ops-files", func() {
	for _, c := range deploymentCases() {
		It("interpolates "+c.Name+" with --var-errs and names only existing jobs, properties and links", func() {
			m, _, err := interpolate(c)
			Expect(err).NotTo(HaveOccurred())
			releases := map[string]bool{}
			for _, r := range m.Releases {
				releases[r.Name] = true
			}
			for _, g := range m.InstanceGroups {
				for _, j := range g.Jobs {
					Expect(releases).To(HaveKey(j.Release), "%s/%s uses release %s, which the manifest does not list", g.Name, j.Name, j.Release)
					if j.Release != "ironworker" {
						continue
					}
					spec, err := boshtool.ReadJobSpec(filepath.Join(repoRoot, "jobs", j.Name))
					Expect(err).NotTo(HaveOccurred(), "instance group %s names job %s, which jobs/ lacks", g.Name, j.Name)
					Expect(unknownProperties(j.Properties, "", spec)).To(BeEmpty(), "%s/%s sets properties its spec does not declare", g.Name, j.Name)
					consumed := map[string]bool{}
					for _, l := range spec.Consumes {
						consumed[l.Name] = true
					}
					for name := range j.Consumes {
						Expect(consumed).To(HaveKey(name), "%s/%s consumes %s, which its spec does not", g.Name, j.Name, name)
					}
					provided := map[string]bool{}
					for _, l := range spec.Provides {
						provided[l.Name] = true
					}
					for name := range j.Provides {
						Expect(provided).To(HaveKey(name), "%s/%s provides %s, which its spec does not", g.Name, j.Name, name)
					}
					_, err = resolveLinks(m, j, spec)
					Expect(err).NotTo(HaveOccurred())
				}
			}
		})
	}

	It("fails, naming the variables, when an ops-file's variables are missing (--var-errs)", func() {
		store := filepath.Join(GinkgoT().TempDir(), "vars.yml")
		_, err := boshtool.InterpolateFiles(filepath.Join(repoRoot, "manifests", "ironworker.yml"),
			[]string{filepath.Join(repoRoot, "ops-files", "use-external-database.yml")}, nil, store)
		Expect(err).To(MatchError(ContainSubstring("external_database_host")))
	})

	It("has a README row for every ops-file, and a file for every row and example vars file", func() {
		readme, err := os.ReadFile(filepath.Join(repoRoot, "ops-files", "README.md"))
		Expect(err).NotTo(HaveOccurred())
		rows := map[string]bool{}
		row := regexp.MustCompile("(?m)^\\| \\[`([^`]+)`\\]\\(([^)]+)\\) \\|[^|]+\\|[^|]*\\|$")
		for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
			Expect(m[1]).To(Equal(m[2]))
			rows[m[1]] = true
		}
		files := opsFiles()
		for _, f := range files {
			Expect(rows).To(HaveKey(f), "ops-files/%s has no row in ops-files/README.md", f)
		}
		for r := range rows {
			Expect(files).To(ContainElement(r), "ops-files/README.md has a row for %s, which does not exist", r)
		}
		vars, err := filepath.Glob(filepath.Join(repoRoot, "ops-files", "example-vars-files", "*.yml"))
		Expect(err).NotTo(HaveOccurred())
		for _, v := range vars {
			Expect(files).To(ContainElement(strings.TrimPrefix(filepath.Base(v), "vars-")), "%s belongs to no ops-file", v)
		}
		for _, combo := range documentedCombinations() {
			for _, f := range combo {
				Expect(files).To(ContainElement(f), "ops-files/README.md combines %s, which does not exist", f)
			}
		}
	})

	It("describes every job property, with a default or an example", func() {
		jobs, err := os.ReadDir(filepath.Join(repoRoot, "jobs"))
		Expect(err).NotTo(HaveOccurred())
		for _, j := range jobs {
			if !j.IsDir() {
				continue
			}
			raw, err := os.ReadFile(filepath.Join(repoRoot, "jobs", j.Name(), "spec"))
			Expect(err).NotTo(HaveOccurred())
			var spec struct {
				Properties map[string]map[string]any `json:"properties"`
			}
			Expect(yaml.Unmarshal(raw, &spec)).To(Succeed())
			spec2, err := boshtool.ReadJobSpec(filepath.Join(repoRoot, "jobs", j.Name()))
			Expect(err).NotTo(HaveOccurred(), "spec of %s has keys BOSH does not know", j.Name())
			Expect(spec2.Name).To(Equal(j.Name()))
			for name, def := range spec.Properties {
				Expect(def["description"]).NotTo(BeEmpty(), "%s: property %s has no description", j.Name(), name)
				_, hasDefault := def["default"]
				_, hasExample := def["example"]
				Expect(hasDefault || hasExample).To(BeTrue(), "%s: property %s has neither a default nor an example", j.Name(), name)
			}
			for src := range spec2.Templates {
				Expect(filepath.Join(repoRoot, "jobs", j.Name(), "templates", src)).To(BeAnExistingFile())
			}
			Expect(filepath.Join(repoRoot, "jobs", j.Name(), "monit")).To(BeAnExistingFile())
		}
	})

	It("has package specs with only the keys BOSH knows, naming existing packages", func() {
		pkgs, err := os.ReadDir(filepath.Join(repoRoot, "packages"))
		Expect(err).NotTo(HaveOccurred())
		names := map[string]bool{}
		for _, p := range pkgs {
			if p.IsDir() {
				names[p.Name()] = true
			}
		}
		for name := range names {
			var spec struct {
				Name          string   `json:"name"`
				Dependencies  []string `json:"dependencies"`
				Files         []string `json:"files"`
				ExcludedFiles []string `json:"excluded_files"`
			}
			raw, err := os.ReadFile(filepath.Join(repoRoot, "packages", name, "spec"))
			Expect(err).NotTo(HaveOccurred())
			Expect(yaml.UnmarshalStrict(raw, &spec)).To(Succeed(), "packages/%s/spec", name)
			Expect(spec.Name).To(Equal(name))
			for _, d := range spec.Dependencies {
				Expect(names).To(HaveKey(d))
			}
			Expect(filepath.Join(repoRoot, "packages", name, "packaging")).To(BeAnExistingFile())
		}
	})
})

// unknownProperties lists the dotted properties set in the manifest that the spec does not
// declare. A declared property may hold any value (maps and lists included).
func unknownProperties(props map[string]any, prefix string, spec boshtool.JobSpec) []string {
	var unknown []string
	for k, v := range props {
		name := prefix + k
		if _, ok := spec.Properties[name]; ok {
			continue
		}
		sub, isMap := v.(map[string]any)
		hasChildren := false
		for declared := range spec.Properties {
			if strings.HasPrefix(declared, name+".") {
				hasChildren = true
				break
			}
		}
		if isMap && hasChildren {
			unknown = append(unknown, unknownProperties(sub, name+".", spec)...)
			continue
		}
		unknown = append(unknown, name)
	}
	sort.Strings(unknown)
	return unknown
}
