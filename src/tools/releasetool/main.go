// releasetool is what scripts/create-release, scripts/make-golang-blob,
// scripts/sync-package-gomod and scripts/manifest run (`go run ./src/tools/releasetool`).
// It is tooling, not part of the release: bosh-cli/v7 is used as a library, no `bosh`
// binary and no network.
//
//	releasetool golang-blob ZIP OUT                  repack the toolchain module zip as a Go distribution tarball
//	releasetool sync-package-gomod [--check]         regenerate (or check) the src/ module mirror
//	releasetool create-release [flags]               build a dev or final release tarball
//	releasetool interpolate [bosh int flags] MANIFEST interpolate a manifest like `bosh int`
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: releasetool golang-blob|sync-package-gomod|create-release|interpolate ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "golang-blob":
		err = golangBlob(os.Args[2:])
	case "sync-package-gomod":
		err = syncGomod(os.Args[2:])
	case "create-release":
		err = createRelease(os.Args[2:])
	case "interpolate":
		err = interpolate(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func golangBlob(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: releasetool golang-blob TOOLCHAIN.zip OUT.tar.gz")
	}
	sum, size, err := boshtool.RepackToolchain(args[0], args[1])
	if err != nil {
		return err
	}
	fmt.Printf("%s %d\n", sum, size)
	return nil
}

func syncGomod(args []string) error {
	fs := flag.NewFlagSet("sync-package-gomod", flag.ContinueOnError)
	check := fs.Bool("check", false, "only check that the mirror is fresh; exit 1 if it is not")
	root := fs.String("root", ".", "release directory (the module root)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*check {
		return boshtool.SyncMirror(*root)
	}
	diffs, err := boshtool.CheckMirror(*root)
	if err != nil {
		return err
	}
	if len(diffs) > 0 {
		if len(diffs) > 20 {
			diffs = append(diffs[:20], fmt.Sprintf("... and %d more", len(diffs)-20))
		}
		return fmt.Errorf("the module mirror under src/ is stale (run scripts/sync-package-gomod):\n  %s", strings.Join(diffs, "\n  "))
	}
	fmt.Println("module mirror under src/ is fresh")
	return nil
}
