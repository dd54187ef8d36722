package boshtool_test

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

var _ = Describe("RepackToolchain", func() {
	var zipPath string

	BeforeEach(func() {
		zipPath = filepath.Join(GinkgoT().TempDir(), "toolchain.zip")
		f, err := os.Create(zipPath)
		Expect(err).NotTo(HaveOccurred())
		zw := zip.NewWriter(f)
		prefix := "golang.org/toolchain@v0.0.1-go1.26.8.linux-amd64/"
		for _, name := range []string{"bin/go", "pkg/tool/linux_amd64/compile", "lib/wasm/go_js_wasm_exec",
			"lib/wasm/wasm_exec.js", "src/_go.mod", "src/cmd/_go.mod", "src/fmt/print.go", "VERSION"} {
			w, err := zw.CreateHeader(&zip.FileHeader{Name: prefix + name, Method: zip.Deflate,
				Modified: time.Date(2026, 8, 28, 16, 20, 0, 0, time.UTC)})
			Expect(err).NotTo(HaveOccurred())
			_, err = w.Write([]byte("content of " + name))
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(zw.Close()).To(Succeed())
		Expect(f.Close()).To(Succeed())
	})

	It("lays out go/ like the official tarball, with exec bits and go.mod files restored", func() {
		out := filepath.Join(GinkgoT().TempDir(), "go.tar.gz")
		_, _, err := boshtool.RepackToolchain(zipPath, out)
		Expect(err).NotTo(HaveOccurred())
		modes := map[string]int64{}
		f, err := os.Open(out)
		Expect(err).NotTo(HaveOccurred())
		defer f.Close()
		gz, err := gzip.NewReader(f)
		Expect(err).NotTo(HaveOccurred())
		tr := tar.NewReader(gz)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			Expect(err).NotTo(HaveOccurred())
			modes[h.Name] = h.Mode
		}
		Expect(modes).To(HaveKeyWithValue("go/bin/go", int64(0o755)))
		Expect(modes).To(HaveKeyWithValue("go/pkg/tool/linux_amd64/compile", int64(0o755)))
		Expect(modes).To(HaveKeyWithValue("go/lib/wasm/go_js_wasm_exec", int64(0o755)))
		Expect(modes).To(HaveKeyWithValue("go/lib/wasm/wasm_exec.js", int64(0o644)))
		Expect(modes).To(HaveKeyWithValue("go/src/go.mod", int64(0o644)))
		Expect(modes).To(HaveKey("go/src/cmd/go.mod"))
		Expect(modes).NotTo(HaveKey("go/src/_go.mod"))
		Expect(modes).To(HaveKeyWithValue("go/src/", int64(0o755)))
	})

	It("is byte-for-byte reproducible", func() {
		dir := GinkgoT().TempDir()
		sum1, size1, err := boshtool.RepackToolchain(zipPath, filepath.Join(dir, "a.tar.gz"))
		Expect(err).NotTo(HaveOccurred())
		sum2, size2, err := boshtool.RepackToolchain(zipPath, filepath.Join(dir, "b.tar.gz"))
		Expect(err).NotTo(HaveOccurred())
		Expect(sum2).To(Equal(sum1))
		Expect(size2).To(Equal(size1))
	})
})
