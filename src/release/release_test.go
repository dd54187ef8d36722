package release_test

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

var _ = Describe("the release tarball", Ordered, func() {
	var first boshtool.ReleaseSummary

	BeforeAll(func() {
		dir := releaseSnapshot()
		start := time.Now()
		var err error
		first, err = boshtool.CreateRelease(boshtool.ReleaseOptions{Dir: dir, Version: "0+dev.1", CommitHash: "abcdef0",
			Tarball: filepath.Join(dir, "out", "first.tgz"), WorkDir: filepath.Join(dir, "work-1")})
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("release tarball built in %s\n", time.Since(start).Round(time.Millisecond))
	})

	It("holds every job and package, with the golang package a dependency of ironworker", func() {
		jobs, err := os.ReadDir(filepath.Join(repoRoot, "jobs"))
		Expect(err).NotTo(HaveOccurred())
		for _, j := range jobs {
			if j.IsDir() {
				Expect(first.Jobs).To(HaveKey(j.Name()))
			}
		}
		Expect(first.Packages).To(HaveKey("golang-1.26-linux"))
		Expect(first.Packages).To(HaveKey("ironworker"))
		Expect(first.PackageDeps["ironworker"]).To(ConsistOf("golang-1.26-linux"))
		Expect(tarNames(first.Tarball)).To(ContainElements("release.MF", "jobs/iron-api.tgz",
			"packages/ironworker.tgz", "packages/golang-1.26-linux.tgz"))
	})

	It("has the same job and package fingerprints when built again from scratch", func() {
		dir := releaseSnapshot()
		second, err := boshtool.CreateRelease(boshtool.ReleaseOptions{Dir: dir, Version: "0+dev.2", CommitHash: "abcdef0",
			Tarball: filepath.Join(dir, "out", "second.tgz"), WorkDir: filepath.Join(dir, "work-2")})
		Expect(err).NotTo(HaveOccurred())
		Expect(second.Jobs).To(Equal(first.Jobs))
		Expect(second.Packages).To(Equal(first.Packages))
	})

	It("packs the module mirror and the sources, but no tests or tooling", func() {
		names := innerTarNames(first.Tarball, "packages/ironworker.tgz")
		Expect(names).To(ContainElements("ironworker.mod", "ironworker.sum", "vendor/modules.txt",
			"cmd/iron-api/main.go", "config/api.go", "packaging"))
		for _, n := range names {
			Expect(n).NotTo(HaveSuffix("_test.go"))
			Expect(n).NotTo(HavePrefix("tools/"))
			Expect(n).NotTo(HavePrefix("internal/testsupport/"))
			Expect(n).NotTo(ContainSubstring("vendor/github.com/onsi/"))
			Expect(n).NotTo(ContainSubstring("vendor/github.com/cloudfoundry/bosh-"))
		}
	})

	It("creates a final release: recorded under releases/ and .final_builds/, the same version refused twice", func() {
		dir := releaseSnapshot()
		final, err := boshtool.CreateRelease(boshtool.ReleaseOptions{Dir: dir, Version: "1", Final: true, CommitHash: "abcdef0",
			Tarball: filepath.Join(dir, "out", "final.tgz"), WorkDir: filepath.Join(dir, "work-1")})
		Expect(err).NotTo(HaveOccurred())
		Expect(final.Jobs).To(Equal(first.Jobs))
		Expect(final.Packages).To(Equal(first.Packages))
		Expect(filepath.Join(dir, "releases", "ironworker", "ironworker-1.yml")).To(BeAnExistingFile())
		Expect(filepath.Join(dir, "releases", "ironworker", "index.yml")).To(BeAnExistingFile())
		Expect(filepath.Join(dir, ".final_builds", "packages", "ironworker", "index.yml")).To(BeAnExistingFile())
		_, err = boshtool.CreateRelease(boshtool.ReleaseOptions{Dir: dir, Version: "1", Final: true,
			Tarball: filepath.Join(dir, "out", "final-again.tgz"), WorkDir: filepath.Join(dir, "work-1")})
		Expect(err).To(MatchError(ContainSubstring("version 1 already exists")))
	})

	It("records the golang blob that config/blobs.yml names", func() {
		var blobs map[string]struct {
			Size int64  `json:"size"`
			SHA  string `json:"sha"`
		}
		raw, err := os.ReadFile(filepath.Join(repoRoot, "config", "blobs.yml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(yaml.Unmarshal(raw, &blobs)).To(Succeed())
		Expect(blobs).To(HaveKey(boshtool.GolangBlobPath))
		f, err := os.Open(filepath.Join(repoRoot, "blobs", filepath.FromSlash(boshtool.GolangBlobPath)))
		Expect(err).NotTo(HaveOccurred())
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(blobs[boshtool.GolangBlobPath].Size))
		Expect("sha256:"+hex.EncodeToString(h.Sum(nil))).To(Equal(blobs[boshtool.GolangBlobPath].SHA),
			"blobs/ does not hold the blob config/blobs.yml records: run scripts/make-golang-blob")
	})
})

var _ = Describe("the module mirror under src/", func() {
	It("is fresh after a sync, and stale (naming the files) once go.sum, go.mod or vendor/ change", func() {
		dir := releaseSnapshot()
		Expect(boshtool.CheckMirror(dir)).To(BeEmpty())

		sum := filepath.Join(dir, "src", "ironworker.sum")
		orig, err := os.ReadFile(sum)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(sum, append(orig, []byte("example.com/x v1.0.0 h1:AAAA=\n")...), 0o644)).To(Succeed())
		extra := filepath.Join(dir, "src", "vendor", "example.com", "stray", "stray.go")
		Expect(os.MkdirAll(filepath.Dir(extra), 0o755)).To(Succeed())
		Expect(os.WriteFile(extra, []byte("package stray\n"), 0o644)).To(Succeed())
		DeferCleanup(func() {
			Expect(os.WriteFile(sum, orig, 0o644)).To(Succeed())
			Expect(os.RemoveAll(filepath.Join(dir, "src", "vendor", "example.com"))).To(Succeed())
		})
		Expect(boshtool.CheckMirror(dir)).To(ConsistOf("stale src/ironworker.sum", "unexpected src/vendor/example.com/stray/stray.go"))
	})

	It("vendors only what the binaries import", func() {
		dir := releaseSnapshot()
		mt, err := os.ReadFile(filepath.Join(dir, "src", "vendor", "modules.txt"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(mt)).To(ContainSubstring("\ngithub.com/lib/pq\n"))
		Expect(string(mt)).NotTo(ContainSubstring("\ngithub.com/onsi/gomega\n"))
		Expect(string(mt)).NotTo(ContainSubstring("\ngithub.com/cloudfoundry/bosh-cli/v7/release\n"))
	})
})

func tarNames(path string) []string {
	var names []string
	eachTarEntry(path, func(h *tar.Header, _ io.Reader) { names = append(names, filepath.Clean(h.Name)) })
	sort.Strings(names)
	return names
}

func innerTarNames(path, inner string) []string {
	var names []string
	eachTarEntry(path, func(h *tar.Header, r io.Reader) {
		if filepath.Clean(h.Name) != inner {
			return
		}
		tmp := filepath.Join(GinkgoT().TempDir(), "inner.tgz")
		f, err := os.Create(tmp)
		Expect(err).NotTo(HaveOccurred())
		_, err = io.Copy(f, r)
		Expect(err).NotTo(HaveOccurred())
		Expect(f.Close()).To(Succeed())
		names = tarNames(tmp)
	})
	return names
}

func eachTarEntry(path string, fn func(*tar.Header, io.Reader)) {
	f, err := os.Open(path)
	Expect(err).NotTo(HaveOccurred())
	defer f.Close()
	gz, err := gzip.NewReader(f)
	Expect(err).NotTo(HaveOccurred())
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		Expect(err).NotTo(HaveOccurred())
		fn(h, tr)
	}
}
