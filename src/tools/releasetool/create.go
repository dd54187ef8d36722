package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

func createRelease(args []string) error {
	fs := flag.NewFlagSet("create-release", flag.ContinueOnError)
	dir := fs.String("dir", ".", "release directory")
	name := fs.String("name", "", "release name (default: config/final.yml's name)")
	version := fs.String("version", "", "release version (default 0+dev.<unix time>; required with --final)")
	final := fs.Bool("final", false, "create a final release (records releases/ and .final_builds/, uploads to config/final.yml's blobstore)")
	tarball := fs.String("tarball", "", "where to write the release tarball (default dev_releases/<name>-<version>.tgz or releases/...)")
	workDir := fs.String("work-dir", "", "dev build index and archive cache (default <dir>/.dev_builds)")
	noSync := fs.Bool("no-sync", false, "do not regenerate the src/ module mirror; fail if it is stale")
	asJSON := fs.Bool("json", false, "print the release summary as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *noSync {
		diffs, err := boshtool.CheckMirror(*dir)
		if err != nil {
			return err
		}
		if len(diffs) > 0 {
			return fmt.Errorf("the module mirror under src/ is stale (%s ...); run scripts/sync-package-gomod", diffs[0])
		}
	} else if err := boshtool.SyncMirror(*dir); err != nil {
		return fmt.Errorf("syncing the module mirror: %w", err)
	}
	o := boshtool.ReleaseOptions{Dir: *dir, Name: *name, Version: *version, Final: *final, Tarball: *tarball, WorkDir: *workDir}
	if o.Tarball == "" {
		n := o.Name
		if n == "" {
			n = "ironworker"
		}
		v := o.Version
		if v == "" {
			v = "latest"
		}
		sub := "dev_releases"
		if o.Final {
			sub = "releases"
		}
		o.Tarball = filepath.Join(*dir, sub, n, n+"-"+v+".tgz")
	}
	sum, err := boshtool.CreateRelease(o)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(sum)
	}
	fmt.Printf("Release name:    %s\nRelease version: %s\nTarball:         %s\n", sum.Name, sum.Version, sum.Tarball)
	for _, j := range boshtool.SortedKeys(sum.Jobs) {
		fmt.Printf("  job     %-20s %s\n", j, sum.Jobs[j])
	}
	for _, p := range boshtool.SortedKeys(sum.Packages) {
		fmt.Printf("  package %-20s %s\n", p, sum.Packages[p])
	}
	return nil
}
