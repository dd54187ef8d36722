package local

import (
	"archive/zip"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// FuzzUnzip feeds arbitrary bytes to the code package unpacker: no panic, nothing
// written outside the task directory, no symlink created, never more than the byte
// limit on disk. Seeds: testdata/fuzz/FuzzUnzip and the archives built below (zip-slip,
// absolute paths, symlinks, a small zip bomb, duplicate and nested entries).
func FuzzUnzip(f *testing.F) {
	build := func(entries ...func(*zip.Writer)) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for _, e := range entries {
			e(zw)
		}
		_ = zw.Close()
		return buf.Bytes()
	}
	file := func(name, body string) func(*zip.Writer) {
		return func(zw *zip.Writer) {
			w, _ := zw.Create(name)
			_, _ = w.Write([]byte(body))
		}
	}
	link := func(name, target string) func(*zip.Writer) {
		return func(zw *zip.Writer) {
			h := &zip.FileHeader{Name: name}
			h.SetMode(fs.ModeSymlink | 0o777)
			w, _ := zw.CreateHeader(h)
			_, _ = w.Write([]byte(target))
		}
	}
	f.Add(build(file("hello.sh", "#!/bin/sh\necho hi\n"), file("lib/a.txt", "a")))
	f.Add(build(file("../escape.txt", "x")))
	f.Add(build(file("a/../../escape.txt", "x")))
	f.Add(build(file("/abs.txt", "x")))
	f.Add(build(file(`..\win.txt`, "x")))
	f.Add(build(file("C:/win.txt", "x")))
	f.Add(build(link("ln", "/etc/passwd"), file("ln", "overwrite through the link")))
	f.Add(build(file("bomb.txt", string(make([]byte, 1<<20)))))
	f.Add(build(file("d/", ""), file("d", "file over dir"), file("d/x", "x")))
	f.Add(build(file("x", "1"), file("x", "2"), file("./", "")))
	f.Add([]byte("PK\x05\x06" + string(make([]byte, 18))))
	f.Add([]byte("not a zip"))

	const maxBytes = 64 << 10
	f.Fuzz(func(t *testing.T, raw []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "task")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		zf, err := os.CreateTemp(t.TempDir(), "a-*.zip")
		if err != nil {
			t.Fatal(err)
		}
		defer zf.Close()
		if _, err := zf.Write(raw); err != nil {
			t.Fatal(err)
		}
		_ = unzipInto(context.Background(), zf, int64(len(raw)), dir, unzipLimits{maxBytes: maxBytes, maxFiles: 64})

		top, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(top) != 1 || top[0].Name() != "task" {
			t.Fatalf("something was written outside the task directory: %v", top)
		}
		var total int64
		err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type()&fs.ModeSymlink != 0 {
				t.Fatalf("a symlink was created: %s", p)
			}
			if d.Type().IsRegular() {
				info, err := d.Info()
				if err != nil {
					return err
				}
				total += info.Size()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// One entry may overshoot by the byte that detects it.
		if total > maxBytes+1 {
			t.Fatalf("%d bytes unpacked, more than the %d byte limit", total, maxBytes)
		}
	})
}
