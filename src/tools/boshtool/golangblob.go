// Package boshtool builds and checks this BOSH release without a director or a `bosh`
// binary, through bosh-cli/v7 as a library: the Go toolchain blob, the module mirror under
// src/, the release tarball, job template rendering and manifest interpolation. It is
// tooling: only scripts/ and tests import it, never a binary shipped in the release.
package boshtool

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// GolangToolchainModule is the Go module proxy's name for the Go distribution that the
// golang-1.26-linux package ships.
const (
	GoVersion             = "1.26.8"
	GolangToolchainModule = "golang.org/toolchain@v0.0.1-go" + GoVersion + ".linux-amd64"
	GolangBlobPath        = "golang/go" + GoVersion + ".linux-amd64.tar.gz"
)

var toolchainExec = regexp.MustCompile(`^go/(bin/[^/]+|pkg/tool/.+|lib/(.+/)?go_[^/]+_[^/]+_exec)$`)

// RepackToolchain turns the toolchain module zip into go<version>.linux-amd64.tar.gz with
// a top-level go/ directory, as the official distribution is laid out. It applies the two
// fix-ups the go command applies when it installs a toolchain from the proxy (exec bits on
// bin/*, pkg/tool/** and lib/**/go_*_*_exec; nested _go.mod files named go.mod again). The
// output is byte-for-byte reproducible: sorted entries, the zip's timestamps, root owner,
// no gzip name or time. It returns the sha256 (hex) and size of the tarball.
func RepackToolchain(zipPath, outPath string) (string, int64, error) {
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		return "", 0, err
	}
	defer zr.Close()
	type entry struct {
		name string
		f    *zip.File
	}
	var entries []entry
	dirs := map[string]bool{}
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		// Entries are "golang.org/toolchain@v0.0.1-go1.26.8.linux-amd64/<path>".
		parts := strings.SplitN(strings.TrimPrefix(f.Name, "golang.org/"), "/", 2)
		if !strings.HasPrefix(f.Name, "golang.org/toolchain@") || len(parts) != 2 {
			return "", 0, fmt.Errorf("unexpected entry %q in toolchain zip", f.Name)
		}
		rel := parts[1]
		if path.Base(rel) == "_go.mod" {
			rel = path.Join(path.Dir(rel), "go.mod")
		}
		name := "go/" + rel
		entries = append(entries, entry{name, f})
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	if len(entries) == 0 {
		return "", 0, fmt.Errorf("empty toolchain zip %s", zipPath)
	}
	var dirNames []string
	for d := range dirs {
		dirNames = append(dirNames, d)
	}
	sort.Strings(dirNames)
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })

	if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
		return "", 0, err
	}
	out, err := os.CreateTemp(filepath.Dir(outPath), ".golang-blob-*")
	if err != nil {
		return "", 0, err
	}
	tmp := out.Name()
	defer os.Remove(tmp)
	if err := out.Chmod(0o644); err != nil {
		return "", 0, err
	}
	h := sha256.New()
	gz, _ := gzip.NewWriterLevel(io.MultiWriter(out, h), gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	mtime := entries[0].f.Modified.UTC()
	for _, d := range dirNames {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return "", 0, err
		}
	}
	for _, e := range entries {
		mode := int64(0o644)
		if toolchainExec.MatchString(e.name) {
			mode = 0o755
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: mode, Size: int64(e.f.UncompressedSize64),
			ModTime: e.f.Modified.UTC().Truncate(1e9), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", 0, err
		}
		rc, err := e.f.Open()
		if err != nil {
			return "", 0, err
		}
		_, err = io.Copy(tw, rc)
		rc.Close()
		if err != nil {
			return "", 0, fmt.Errorf("%s: %w", e.f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return "", 0, err
	}
	if err := gz.Close(); err != nil {
		return "", 0, err
	}
	if err := out.Close(); err != nil {
		return "", 0, err
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, outPath); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), st.Size(), nil
}
