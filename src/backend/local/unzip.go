package local

import (
	"archive/zip"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ironcf/ironworker-release/src/backend"
)

// unzipLimits stop a code package from filling the runner's disk.
type unzipLimits struct {
	maxBytes int64 // total uncompressed bytes
	maxFiles int   // entries, directories included
}

func badCode(format string, args ...any) error {
	return fmt.Errorf("%w: %s", backend.ErrBadCode, fmt.Sprintf(format, args...))
}

// fetchArchive copies the code package into a temporary file next to (not inside) the
// task directory: zip needs random access, and the worker must not see the archive.
func fetchArchive(ctx context.Context, open func(context.Context) (io.ReadCloser, error), tmpDir string, limit int64) (*os.File, int64, error) {
	rc, err := open(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("open code package: %w", err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(tmpDir, ".archive-*.zip")
	if err != nil {
		return nil, 0, fmt.Errorf("code package temp file: %w", err)
	}
	os.Remove(f.Name()) // unlinked: nothing to clean up whatever happens next
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, rc}, limit+1))
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("download code package: %w", err)
	}
	if n > limit {
		f.Close()
		return nil, 0, badCode("zip archive is larger than the %d byte limit", limit)
	}
	return f, n, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// entryPath turns a zip entry name into a path relative to the task directory, refusing
// anything that could land outside it.
func entryPath(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", badCode("zip entry %q has a NUL byte in its name", name)
	}
	// Zips written on Windows may use backslashes; treat them as separators so that
	// "..\\x" is caught like "../x".
	p := strings.ReplaceAll(name, `\`, "/")
	if strings.HasPrefix(p, "/") || (len(p) > 1 && p[1] == ':') {
		return "", badCode("zip entry %q is an absolute path; entries must stay inside the task directory", name)
	}
	clean := path.Clean(strings.TrimSuffix(p, "/"))
	if clean == "." {
		return "", nil // the root itself ("./")
	}
	if !filepath.IsLocal(clean) {
		return "", badCode("zip entry %q escapes the task directory (zip-slip)", name)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", badCode("zip entry %q escapes the task directory (zip-slip)", name)
		}
	}
	return clean, nil
}

// unzipInto unpacks a code package into dir. Every entry is checked before anything is
// written, sizes are counted as they are actually decompressed (headers can lie), and
// all writes go through an os.Root so nothing can land outside dir even if a check here
// were wrong.
func unzipInto(ctx context.Context, zf *os.File, size int64, dir string, lim unzipLimits) error {
	zr, err := zip.NewReader(zf, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return badCode("not a valid zip archive: %v", err)
	}
	if len(zr.File) > lim.maxFiles {
		return badCode("zip archive has %d entries, more than the limit of %d", len(zr.File), lim.maxFiles)
	}
	var declared uint64
	paths := make([]string, len(zr.File))
	for i, f := range zr.File {
		p, err := entryPath(f.Name)
		if err != nil {
			return err
		}
		mode := f.Mode()
		switch {
		case mode&fs.ModeSymlink != 0:
			return badCode("zip entry %q is a symbolic link; symlinks are not allowed in code packages", f.Name)
		case mode.IsDir(), mode.IsRegular():
		default:
			return badCode("zip entry %q is not a regular file or directory (%v)", f.Name, mode.Type())
		}
		declared += f.UncompressedSize64
		if declared > uint64(lim.maxBytes) {
			return badCode("zip archive unpacks to more than the limit of %d bytes", lim.maxBytes)
		}
		paths[i] = p
	}

	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	budget := lim.maxBytes
	for i, f := range zr.File {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := paths[i]
		if p == "" {
			continue
		}
		if f.Mode().IsDir() {
			if err := root.MkdirAll(p, 0o755); err != nil {
				return badCode("zip entry %q: %v", f.Name, err)
			}
			continue
		}
		if d := path.Dir(p); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return badCode("zip entry %q: %v", f.Name, err)
			}
		}
		n, err := writeEntry(root, p, f, budget, lim.maxBytes)
		if err != nil {
			return err
		}
		budget -= n
	}
	return nil
}

func writeEntry(root *os.Root, p string, f *zip.File, budget, total int64) (int64, error) {
	perm := os.FileMode(0o644)
	if f.Mode()&0o111 != 0 {
		perm = 0o755
	}
	rc, err := f.Open()
	if err != nil {
		return 0, badCode("zip entry %q: %v", f.Name, err)
	}
	defer rc.Close()
	out, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return 0, badCode("zip entry %q: %v", f.Name, err)
	}
	n, err := io.Copy(out, io.LimitReader(rc, budget+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if n > budget {
		return n, badCode("zip archive unpacks to more than the limit of %d bytes (at entry %q)", total, f.Name)
	}
	if err != nil {
		var corrupt flate.CorruptInputError
		if errors.Is(err, zip.ErrFormat) || errors.Is(err, zip.ErrChecksum) ||
			errors.As(err, &corrupt) || errors.Is(err, io.ErrUnexpectedEOF) {
			return n, badCode("zip entry %q is corrupt: %v", f.Name, err)
		}
		return n, fmt.Errorf("unpack zip entry %q: %w", f.Name, err)
	}
	return n, nil
}
