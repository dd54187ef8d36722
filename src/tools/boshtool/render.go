package boshtool

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cloudfoundry/bosh-cli/v7/templatescompiler/erbrenderer"
	boshlog "github.com/cloudfoundry/bosh-utils/logger"
	boshsys "github.com/cloudfoundry/bosh-utils/system"
	"sigs.k8s.io/yaml"
)

//go:embed prelude.rb
var preludeRb string

// JobSpec is a job's spec file, links included (bosh-cli's own spec parser drops them).
type JobSpec struct {
	Name        string                 `json:"name"`
	Description string                 `json:"description"`
	Templates   map[string]string      `json:"templates"`
	Packages    []string               `json:"packages"`
	Provides    []LinkDef              `json:"provides"`
	Consumes    []LinkDef              `json:"consumes"`
	Properties  map[string]PropertyDef `json:"properties"`
}

type LinkDef struct {
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	Optional   bool     `json:"optional"`
	Properties []string `json:"properties"`
}

type PropertyDef struct {
	Description string `json:"description"`
	Default     any    `json:"default"`
	Example     any    `json:"example"`
}

// ReadJobSpec reads jobs/<name>/spec, refusing keys BOSH does not know.
func ReadJobSpec(jobDir string) (JobSpec, error) {
	var s JobSpec
	b, err := os.ReadFile(filepath.Join(jobDir, "spec"))
	if err != nil {
		return s, err
	}
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		return s, fmt.Errorf("%s/spec: %w", jobDir, err)
	}
	return s, nil
}

// Instance is what the director knows about the instance a job is rendered for.
type Instance struct {
	Deployment string
	Group      string // instance group name (spec.name)
	Index      int
	ID         string
	AZ         string
	Address    string
	IP         string
	Bootstrap  bool
	Network    string
}

// LinkInstance is one instance behind a link.
type LinkInstance struct {
	Name      string `json:"name"`
	Index     int    `json:"index"`
	ID        string `json:"id"`
	AZ        string `json:"az"`
	Address   string `json:"address"`
	Bootstrap bool   `json:"bootstrap"`
}

// Link is a resolved link as a consuming job sees it.
type Link struct {
	Address    string         `json:"address"`
	Instances  []LinkInstance `json:"instances"`
	Properties map[string]any `json:"properties"`
}

// Renderer renders job templates as the director does, with bosh-cli's ERB renderer and
// the system ruby, plus link support.
type Renderer struct {
	dir     string
	prelude string
	erb     erbrenderer.ERBRenderer
	fs      boshsys.FileSystem
}

type preludeRunner struct {
	boshsys.CmdRunner
	prelude string
}

func (r preludeRunner) RunComplexCommand(cmd boshsys.Command) (string, string, int, error) {
	if cmd.Name == "ruby" {
		cmd.Args = append([]string{"-r", r.prelude}, cmd.Args...)
	}
	return r.CmdRunner.RunComplexCommand(cmd)
}

// NewRenderer needs `ruby` on PATH. Close removes its temporary files.
func NewRenderer() (*Renderer, error) {
	dir, err := os.MkdirTemp("", "ironworker-render-")
	if err != nil {
		return nil, err
	}
	prelude := filepath.Join(dir, "prelude.rb")
	if err := os.WriteFile(prelude, []byte(preludeRb), 0o644); err != nil {
		return nil, err
	}
	logger := boshlog.NewLogger(boshlog.LevelNone)
	fs := boshsys.NewOsFileSystem(logger)
	runner := preludeRunner{boshsys.NewExecCmdRunner(logger), prelude}
	return &Renderer{dir: dir, prelude: prelude, erb: erbrenderer.NewERBRenderer(fs, runner, logger), fs: fs}, nil
}

func (r *Renderer) Close() error { return os.RemoveAll(r.dir) }

// templateContext is the JSON the ERB renderer reads: the director's template spec plus
// the job_properties/default_properties keys bosh-cli's script merges.
type templateContext map[string]any

func (c templateContext) MarshalJSON() ([]byte, error) { return json.Marshal(map[string]any(c)) }

// RenderJob renders every template of the job in jobDir, and its monit file, for the given
// instance, job properties (as in the manifest) and links. It returns the rendered files by
// their path under /var/vcap/jobs/<job>/ ("monit" for the monit file). A link the job does
// not consume is refused; a non-optional consumed link must be given.
func (r *Renderer) RenderJob(jobDir string, inst Instance, props map[string]any, links map[string]Link) (map[string]string, error) {
	spec, err := ReadJobSpec(jobDir)
	if err != nil {
		return nil, err
	}
	consumed := map[string]LinkDef{}
	for _, c := range spec.Consumes {
		consumed[c.Name] = c
	}
	for name := range links {
		if _, ok := consumed[name]; !ok {
			return nil, fmt.Errorf("job %s does not consume a link named %q", spec.Name, name)
		}
	}
	for _, c := range spec.Consumes {
		if _, ok := links[c.Name]; !ok && !c.Optional {
			return nil, fmt.Errorf("job %s needs link %q (type %s)", spec.Name, c.Name, c.Type)
		}
	}
	defaults := map[string]any{}
	for name, def := range spec.Properties {
		defaults[name] = def.Default
	}
	if props == nil {
		props = map[string]any{}
	}
	if links == nil {
		links = map[string]Link{}
	}
	network := inst.Network
	if network == "" {
		network = "default"
	}
	ctx := templateContext{
		"deployment":         inst.Deployment,
		"name":               inst.Group,
		"job":                map[string]any{"name": inst.Group},
		"index":              inst.Index,
		"id":                 inst.ID,
		"az":                 inst.AZ,
		"bootstrap":          inst.Bootstrap,
		"address":            inst.Address,
		"ip":                 inst.IP,
		"networks":           map[string]any{network: map[string]any{"ip": inst.IP, "default": []string{"dns", "gateway"}}},
		"properties":         props,
		"job_properties":     props,
		"default_properties": defaults,
		"links":              links,
		"release":            map[string]any{"name": "ironworker", "version": "0+dev.1"},
	}
	out := map[string]string{}
	work, err := os.MkdirTemp(r.dir, spec.Name+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	type tpl struct{ src, dst string }
	tpls := []tpl{{filepath.Join(jobDir, "monit"), "monit"}}
	var srcs []string
	for src := range spec.Templates {
		srcs = append(srcs, src)
	}
	sort.Strings(srcs)
	for _, src := range srcs {
		tpls = append(tpls, tpl{filepath.Join(jobDir, "templates", src), spec.Templates[src]})
	}
	for i, t := range tpls {
		dst := filepath.Join(work, fmt.Sprint(i))
		if err := r.erb.Render(t.src, dst, ctx); err != nil {
			return nil, fmt.Errorf("rendering %s/%s: %s", spec.Name, filepath.Base(t.src), cleanRubyError(err))
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			return nil, err
		}
		out[t.dst] = string(b)
	}
	return out, nil
}

// cleanRubyError keeps the ruby error line that names the template and the problem.
func cleanRubyError(err error) string {
	msg := err.Error()
	for _, l := range strings.Split(msg, "\n") {
		if i := strings.Index(l, "Error filling in template"); i >= 0 {
			return strings.TrimSpace(l[i:])
		}
	}
	return msg
}
