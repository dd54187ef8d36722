package boshtool

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// The module mirror under src/: BOSH package `files:` resolve against src/ only, so the
// ironworker package carries byte copies of go.mod and go.sum (named ironworker.mod and
// ironworker.sum, so that src/ is not a nested module) and a vendored tree. All three are
// generated (and git-ignored): scripts/create-release and the tests regenerate them, and
// `scripts/sync-package-gomod --check` fails when they differ from what go.mod, go.sum and
// the module cache give now.
//
// The vendored tree is `go mod vendor` pruned to the packages that the shipped binaries
// (./src/cmd/...) import for linux/amd64 without cgo: test and tooling dependencies (ginkgo,
// gomega, bosh-cli, ...) are required by go.mod but never reach the release.
const (
	MirrorMod    = "src/ironworker.mod"
	MirrorSum    = "src/ironworker.sum"
	MirrorVendor = "src/vendor"
	// BinariesPattern is what the ironworker package builds.
	BinariesPattern = "./src/cmd/..."
)

// goEnv is the environment for go commands that must neither reach the network nor
// change go.mod or go.sum (an untidy go.mod is an error, not something to repair here).
func goEnv(extra ...string) []string {
	env := append(os.Environ(), "GOFLAGS=-mod=readonly", "GOPROXY=off", "GOTOOLCHAIN=local", "GOWORK=off")
	return append(env, extra...)
}

func runGo(dir string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// GenerateMirror writes the mirror for the module at root into dst (a directory that will
// hold ironworker.mod, ironworker.sum and vendor/), offline from the module cache.
func GenerateMirror(root, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for src, name := range map[string]string{"go.mod": "ironworker.mod", "go.sum": "ironworker.sum"} {
		b, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			return err
		}
	}
	full, err := os.MkdirTemp("", "ironworker-vendor-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(full)
	if _, err := runGo(root, goEnv(), "mod", "vendor", "-o", filepath.Join(full, "vendor")); err != nil {
		return err
	}
	out, err := runGo(root, goEnv("GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0"),
		"list", "-deps", "-f", "{{if not .Standard}}{{if .Module}}{{if not .Module.Main}}{{.ImportPath}}\t{{join .IgnoredGoFiles \",\"}},{{join .IgnoredOtherFiles \",\"}}{{end}}{{end}}{{end}}", BinariesPattern)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	ignored := map[string]bool{} // vendor-relative files that linux/amd64 builds never read
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, files, _ := strings.Cut(l, "\t")
		if pkg == "" {
			continue
		}
		keep[pkg] = true
		for _, f := range strings.Split(files, ",") {
			if f != "" {
				ignored[pkg+"/"+f] = true
			}
		}
	}
	return pruneVendor(filepath.Join(full, "vendor"), filepath.Join(dst, "vendor"), keep, ignored)
}

// pruneVendor copies the vendored packages named in keep (and the license and notice files
// at the root of their modules) from src to dst, and writes a modules.txt that lists every
// module of go.mod (the go command checks them against go.mod) but only the kept packages.
// Files that the linux/amd64 build ignores (other GOOS/GOARCH, build tags) are dropped.
func pruneVendor(src, dst string, keep, ignored map[string]bool) error {
	mt, err := os.ReadFile(filepath.Join(src, "modules.txt"))
	if err != nil {
		return err
	}
	var out bytes.Buffer
	keptModules := map[string]bool{}
	module := ""
	sc := bufio.NewScanner(bytes.NewReader(mt))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# "):
			module = strings.Fields(line)[1]
			out.WriteString(line + "\n")
		case strings.HasPrefix(line, "## "):
			out.WriteString(line + "\n")
		case keep[line]:
			keptModules[module] = true
			out.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dst, "modules.txt"), out.Bytes(), 0o644); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		dir := path.Dir(rel)
		if rel == "modules.txt" {
			return nil
		}
		if ignored[rel] || (!keep[dir] && !(keptModules[dir] && !isSource(rel))) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

func isSource(name string) bool {
	switch path.Ext(name) {
	case ".go", ".s", ".c", ".h", ".cc", ".cpp", ".hh", ".hpp", ".hxx", ".m", ".f", ".F", ".for", ".f90", ".syso", ".swig", ".swigcxx":
		return true
	}
	return false
}

// SyncMirror regenerates the mirror in place under root/src.
func SyncMirror(root string) error {
	tmp, err := os.MkdirTemp(filepath.Join(root, "src"), ".mirror-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := GenerateMirror(root, tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(root, MirrorVendor)); err != nil {
		return err
	}
	for _, m := range []struct{ from, to string }{
		{"vendor", MirrorVendor}, {"ironworker.mod", MirrorMod}, {"ironworker.sum", MirrorSum},
	} {
		if err := os.Rename(filepath.Join(tmp, m.from), filepath.Join(root, m.to)); err != nil {
			return err
		}
	}
	return nil
}

// CheckMirror regenerates the mirror in a temporary directory and lists how the one under
// root/src differs from it (missing, extra or changed files). Empty means fresh.
func CheckMirror(root string) ([]string, error) {
	tmp, err := os.MkdirTemp("", "ironworker-mirror-check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := GenerateMirror(root, tmp); err != nil {
		return nil, err
	}
	want, err := readTree(tmp)
	if err != nil {
		return nil, err
	}
	have := map[string][]byte{}
	for _, f := range []string{"ironworker.mod", "ironworker.sum"} {
		if b, err := os.ReadFile(filepath.Join(root, "src", f)); err == nil {
			have[f] = b
		}
	}
	if vend, err := readTree(filepath.Join(root, MirrorVendor)); err == nil {
		for k, v := range vend {
			have["vendor/"+k] = v
		}
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	var diffs []string
	for name, b := range want {
		h, ok := have[name]
		switch {
		case !ok:
			diffs = append(diffs, "missing src/"+name)
		case !bytes.Equal(h, b):
			diffs = append(diffs, "stale src/"+name)
		}
	}
	for name := range have {
		if _, ok := want[name]; !ok {
			diffs = append(diffs, "unexpected src/"+name)
		}
	}
	sort.Strings(diffs)
	return diffs, nil
}

func readTree(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	return files, err
}
