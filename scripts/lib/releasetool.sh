# shellcheck shell=bash
# Builds src/tools/releasetool (the bosh-cli-as-a-library tooling behind the release
# scripts) into .dev_builds/bin and prints its path. Sourced by scripts/create-release,
# scripts/make-golang-blob, scripts/manifest and scripts/sync-package-gomod.
releasetool_bin() {
  local bin=.dev_builds/bin/releasetool
  mkdir -p .dev_builds/bin
  go build -o "$bin.$$" ./src/tools/releasetool && mv -f "$bin.$$" "$bin"
  printf '%s\n' "$bin"
}
