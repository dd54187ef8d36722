package boshtool

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bicrypto "github.com/cloudfoundry/bosh-cli/v7/crypto"
	birel "github.com/cloudfoundry/bosh-cli/v7/release"
	birelman "github.com/cloudfoundry/bosh-cli/v7/release/manifest"
	boshidx "github.com/cloudfoundry/bosh-cli/v7/releasedir/index"
	boshblob "github.com/cloudfoundry/bosh-utils/blobstore"
	boshcrypto "github.com/cloudfoundry/bosh-utils/crypto"
	boshfu "github.com/cloudfoundry/bosh-utils/fileutil"
	boshlog "github.com/cloudfoundry/bosh-utils/logger"
	boshsys "github.com/cloudfoundry/bosh-utils/system"
	boshuuid "github.com/cloudfoundry/bosh-utils/uuid"
	yamlv2 "gopkg.in/yaml.v2"
	"sigs.k8s.io/yaml"
)

// ReleaseOptions says which tarball CreateRelease builds.
type ReleaseOptions struct {
	// Dir is the release directory (jobs/, packages/, src/, config/, blobs/).
	Dir string
	// Name defaults to config/final.yml's name.
	Name string
	// Version defaults to 0+dev.<unix time> for a dev release; a final release needs one.
	Version string
	// Final also records the release under releases/<name>/ and its jobs and packages in
	// .final_builds/, uploading their archives to config/final.yml's blobstore (only the
	// `local` provider works offline).
	Final bool
	// Tarball is where the release tarball is written.
	Tarball string
	// WorkDir holds the dev build index and its archive cache (default Dir/.dev_builds).
	WorkDir string
	// CommitHash defaults to `git rev-parse --short HEAD` in Dir ("0000000" outside git),
	// marked dirty (with a "+") when `git status` lists changes.
	CommitHash string
}

// ReleaseSummary is what the tarball holds, as recorded in its release.MF.
type ReleaseSummary struct {
	Name, Version, Tarball string
	Jobs                   map[string]string // name → fingerprint
	Packages               map[string]string // name → fingerprint
	PackageDeps            map[string][]string
}

type finalConfig struct {
	Name      string `json:"name"`
	Blobstore struct {
		Provider string         `json:"provider"`
		Options  map[string]any `json:"options"`
	} `json:"blobstore"`
}

func readFinalConfig(dir string) (finalConfig, error) {
	var c finalConfig
	b, err := os.ReadFile(filepath.Join(dir, "config", "final.yml"))
	if err != nil {
		return c, err
	}
	return c, yaml.Unmarshal(b, &c)
}

type quietReporter struct{}

func (quietReporter) IndexEntryStartedAdding(string, string)           {}
func (quietReporter) IndexEntryFinishedAdding(string, string, error)   {}
func (quietReporter) IndexEntryDownloadStarted(string, string)         {}
func (quietReporter) IndexEntryDownloadFinished(string, string, error) {}
func (quietReporter) IndexEntryUploadStarted(string, string)           {}
func (quietReporter) IndexEntryUploadFinished(string, string, error)   {}

// CreateRelease builds the release tarball from the release directory as
// `bosh create-release --tarball` does (same archives, same job and package fingerprints),
// offline. The module mirror under src/ must be in place (see SyncMirror).
func CreateRelease(o ReleaseOptions) (ReleaseSummary, error) {
	var sum ReleaseSummary
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return sum, err
	}
	cfg, err := readFinalConfig(dir)
	if err != nil {
		return sum, fmt.Errorf("config/final.yml: %w", err)
	}
	if o.Name == "" {
		o.Name = cfg.Name
	}
	if o.Name == "" {
		return sum, fmt.Errorf("no release name: set name in config/final.yml")
	}
	if o.Version == "" {
		if o.Final {
			return sum, fmt.Errorf("a final release needs a version")
		}
		o.Version = fmt.Sprintf("0+dev.%d", time.Now().Unix())
	}
	if o.Final {
		existing := filepath.Join(dir, "releases", o.Name, o.Name+"-"+o.Version+".yml")
		if _, err := os.Stat(existing); err == nil {
			return sum, fmt.Errorf("release %s version %s already exists (%s)", o.Name, o.Version, existing)
		}
	}
	if o.WorkDir == "" {
		o.WorkDir = filepath.Join(dir, ".dev_builds")
	}
	if o.Tarball == "" {
		return sum, fmt.Errorf("no tarball path given")
	}
	commit, dirty := o.CommitHash, false
	if commit == "" {
		commit, dirty = gitCommit(dir)
	}

	logger := boshlog.NewLogger(boshlog.LevelNone)
	fs := boshsys.NewOsFileSystemWithStrictTempRoot(logger)
	tmpRoot, err := os.MkdirTemp("", "ironworker-release-")
	if err != nil {
		return sum, err
	}
	defer os.RemoveAll(tmpRoot)
	if err := fs.ChangeTempRoot(tmpRoot); err != nil {
		return sum, err
	}
	runner := boshsys.NewExecCmdRunner(logger)
	compressor := boshfu.NewTarballCompressor(runner, fs)
	algos := []boshcrypto.Algorithm{boshcrypto.DigestAlgorithmSHA256}
	digests := bicrypto.NewDigestCalculator(fs, algos)
	provider := birel.NewProvider(runner, compressor, digests, fs, logger)

	rel, err := provider.NewDirReader(dir).Read(dir)
	if err != nil {
		return sum, fmt.Errorf("reading the release directory %s: %w", dir, err)
	}
	defer rel.CleanUp()
	rel.SetName(o.Name)
	rel.SetVersion(o.Version)
	rel.SetCommitHash(commit)
	rel.SetUncommittedChanges(dirty)

	rep := quietReporter{}
	cache := filepath.Join(o.WorkDir, "cache")
	devBlobs := boshidx.NewFSIndexBlobs(cache, rep, nil, fs)
	var finalStore boshblob.DigestBlobstore
	if o.Final {
		if cfg.Blobstore.Provider != "local" {
			return sum, fmt.Errorf("config/final.yml: blobstore provider %q: only `local` is supported offline", cfg.Blobstore.Provider)
		}
		opts := map[string]any{}
		for k, v := range cfg.Blobstore.Options {
			opts[k] = v
		}
		if p, ok := opts["blobstore_path"].(string); ok && !filepath.IsAbs(p) {
			opts["blobstore_path"] = filepath.Join(dir, p)
		}
		if p, ok := opts["blobstore_path"].(string); ok {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return sum, err
			}
		}
		local := boshblob.NewLocalBlobstore(fs, boshuuid.NewGenerator(), opts)
		finalStore = boshblob.NewDigestVerifiableBlobstore(local, fs, algos)
	}
	finalBlobs := boshidx.NewFSIndexBlobs(cache, rep, finalStore, fs)
	index := func(base string, blobs boshidx.FSIndexBlobs, final bool) birel.ArchiveIndicies {
		return birel.ArchiveIndicies{
			Jobs:     boshidx.NewFSIndex("job", filepath.Join(base, "jobs"), true, final, rep, blobs, fs),
			Packages: boshidx.NewFSIndex("package", filepath.Join(base, "packages"), true, final, rep, blobs, fs),
			Licenses: boshidx.NewFSIndex("license", filepath.Join(base, "license"), false, final, rep, blobs, fs),
		}
	}
	dev := index(o.WorkDir, devBlobs, false)
	final := index(filepath.Join(dir, ".final_builds"), finalBlobs, true)
	if err := rel.Build(dev, final, 1); err != nil {
		return sum, fmt.Errorf("building jobs and packages: %w", err)
	}
	if o.Final {
		if err := rel.Finalize(final, 1); err != nil {
			return sum, fmt.Errorf("finalizing: %w", err)
		}
		if err := recordFinal(dir, rel.Manifest()); err != nil {
			return sum, err
		}
	}
	path, err := provider.NewArchiveWriter().Write(rel, nil)
	if err != nil {
		return sum, fmt.Errorf("writing the release tarball: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.Tarball), 0o755); err != nil {
		return sum, err
	}
	if err := fs.Rename(path, o.Tarball); err != nil {
		if err := fs.CopyFile(path, o.Tarball); err != nil {
			return sum, err
		}
		_ = fs.RemoveAll(path)
	}
	m := rel.Manifest()
	sum = ReleaseSummary{Name: m.Name, Version: m.Version, Tarball: o.Tarball,
		Jobs: map[string]string{}, Packages: map[string]string{}, PackageDeps: map[string][]string{}}
	for _, j := range m.Jobs {
		sum.Jobs[j.Name] = j.Fingerprint
	}
	for _, p := range m.Packages {
		sum.Packages[p.Name] = p.Fingerprint
		sum.PackageDeps[p.Name] = p.Dependencies
	}
	return sum, nil
}

// recordFinal writes releases/<name>/<name>-<version>.yml and the index, as `bosh
// create-release --final` does.
func recordFinal(dir string, m birelman.Manifest) error {
	base := filepath.Join(dir, "releases", m.Name)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	manifestPath := filepath.Join(base, m.Name+"-"+m.Version+".yml")
	if _, err := os.Stat(manifestPath); err == nil {
		return fmt.Errorf("release %s version %s already exists (%s)", m.Name, m.Version, manifestPath)
	}
	b, err := yamlv2.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.WriteFile(manifestPath, b, 0o644); err != nil {
		return err
	}
	type build struct {
		Version string `json:"version"`
	}
	idx := struct {
		Builds        map[string]build `json:"builds"`
		FormatVersion string           `json:"format-version"`
	}{Builds: map[string]build{}, FormatVersion: "2"}
	idxPath := filepath.Join(base, "index.yml")
	if raw, err := os.ReadFile(idxPath); err == nil {
		if err := yaml.Unmarshal(raw, &idx); err != nil {
			return fmt.Errorf("%s: %w", idxPath, err)
		}
		if idx.Builds == nil {
			idx.Builds = map[string]build{}
		}
	}
	id, err := boshuuid.NewGenerator().Generate()
	if err != nil {
		return err
	}
	idx.Builds[id] = build{Version: m.Version}
	out, err := yaml.Marshal(idx)
	if err != nil {
		return err
	}
	return os.WriteFile(idxPath, out, 0o644)
}

func gitCommit(dir string) (string, bool) {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "0000000", false
	}
	status, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output()
	return strings.TrimSpace(string(out)), err == nil && len(strings.TrimSpace(string(status))) > 0
}

// SortedKeys is a small helper for stable output.
func SortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
