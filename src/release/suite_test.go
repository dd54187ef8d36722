// Package release_test checks the BOSH release without a director or a `bosh` binary: the
// tarball builds offline with stable fingerprints, the module mirror is fresh, templates
// render (director-shaped context, links included) into configs the binaries load,
// manifests and ops-files interpolate and name only existing jobs and properties, and the
// packages compile from the tarball as a BOSH compilation VM would compile them (about 2-3
// minutes on 2 cores; IRON_SKIP_COMPILE_REPLAY=1 skips it for quick local runs).
package release_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

func TestRelease(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "BOSH release suite")
}

var (
	repoRoot string // the checkout
	snapshot string // a copy of the release directory, with its module mirror generated
	renderer *boshtool.Renderer

	snapshotCleanup string
)

var _ = AfterSuite(func() {
	if snapshotCleanup != "" {
		Expect(os.RemoveAll(snapshotCleanup)).To(Succeed())
	}
})

var _ = BeforeSuite(func() {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	_, err := exec.LookPath("ruby")
	Expect(err).NotTo(HaveOccurred(), "the template tests need ruby (scripts/test installs Debian's ruby)")
	renderer, err = boshtool.NewRenderer()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(renderer.Close)
})

// releaseSnapshot copies the release directory (so that other work in the checkout cannot
// change it between two builds) and generates its module mirror. Built once, lazily: only
// the tarball and compile tests need it.
func releaseSnapshot() string {
	if snapshot != "" {
		return snapshot
	}
	blob := filepath.Join(repoRoot, "blobs", filepath.FromSlash(boshtool.GolangBlobPath))
	_, err := os.Stat(blob)
	Expect(err).NotTo(HaveOccurred(), "the Go toolchain blob is missing: run scripts/make-golang-blob")
	dir, err := os.MkdirTemp("", "ironworker-release-snapshot-")
	Expect(err).NotTo(HaveOccurred())
	snapshotCleanup = dir
	for _, p := range []string{"go.mod", "go.sum", "jobs", "packages", "config"} {
		copyTree(filepath.Join(repoRoot, p), filepath.Join(dir, p))
	}
	copyTree(filepath.Join(repoRoot, "src"), filepath.Join(dir, "src"), "vendor", "ironworker.mod", "ironworker.sum")
	Expect(os.MkdirAll(filepath.Dir(filepath.Join(dir, "blobs", boshtool.GolangBlobPath)), 0o755)).To(Succeed())
	dst := filepath.Join(dir, "blobs", filepath.FromSlash(boshtool.GolangBlobPath))
	if os.Link(blob, dst) != nil {
		copyFile(blob, dst)
	}
	Expect(boshtool.SyncMirror(dir)).To(Succeed())
	snapshot = dir
	return dir
}

// copyTree copies regular files and directories, skipping the top-level names in skip and
// anything under a directory whose name starts with ".".
func copyTree(src, dst string, skip ...string) {
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[filepath.Join(src, s)] = true
	}
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if skipped[p] || (p != src && filepath.Base(p)[0] == '.' && info.IsDir()) {
			if info.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case info.IsDir():
			return os.MkdirAll(target, 0o755)
		case info.Mode().IsRegular():
			copyFile(p, target)
			return os.Chmod(target, info.Mode().Perm())
		}
		return nil
	})
	Expect(err).NotTo(HaveOccurred())
}

func copyFile(src, dst string) {
	b, err := os.ReadFile(src)
	Expect(err).NotTo(HaveOccurred())
	Expect(os.MkdirAll(filepath.Dir(dst), 0o755)).To(Succeed())
	Expect(os.WriteFile(dst, b, 0o644)).To(Succeed())
}
