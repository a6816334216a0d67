#!/usr/bin/env bash
# Cross-builds ustack for every system it supports besides the Linux host:
# go vet and go build of every package, and the test binaries compiled
# (go test -c, not run) of the packages with tests written for that
# system. sandbox, slirp4netns and the integration tests are Linux-only;
# elsewhere they build to packages that say so.
#
#   scripts/crossbuild.sh                  # every target below
#   scripts/crossbuild.sh windows/amd64    # some of them
#   USTACK_CROSS_TARGETS="windows/amd64 darwin/arm64" scripts/test.sh
#
# With a warm build cache all five targets cost about 35 s of CPU; from an
# empty cache about 110 s of CPU each (docs/BENCHMARKS.md, "Cross-build
# cost in CI").
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
if [ ${#targets[@]} -eq 0 ] && [ -n "${USTACK_CROSS_TARGETS:-}" ]; then
  read -r -a targets <<<"$USTACK_CROSS_TARGETS"
fi
if [ ${#targets[@]} -eq 0 ]; then
  targets=(darwin/amd64 darwin/arm64 freebsd/amd64 windows/amd64 linux/arm64)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
declare -A tested # GOOS values whose tests were compiled
for t in "${targets[@]}"; do
  export GOOS=${t%/*} GOARCH=${t#*/}
  start=$SECONDS
  go vet ./...
  go build ./...
  # Test binaries of the packages with test files for this system only
  # (a name ending in _$GOOS_test.go, or a build line with !linux), once
  # per system: the architecture changes nothing in them, and Linux's
  # tests are built and run by scripts/test.sh itself.
  pkgs=
  if [ "$GOOS" != linux ] && [ -z "${tested[$GOOS]:-}" ]; then
    tested[$GOOS]=1
    pkgs=$(go list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}}' ./... |
      while read -r pkg dir files; do
        for f in $files; do
          case $f in
            *_"${GOOS}"_test.go) echo "$pkg"; break ;;
          esac
          if head -1 "$dir/$f" | grep -q '^//go:build .*!linux'; then echo "$pkg"; break; fi
        done
      done)
  fi
  if [ -n "$pkgs" ]; then
    # shellcheck disable=SC2086 # one argument per package
    go test -c -o "$out/" $pkgs
  fi
  echo "crossbuild $t: vet, build, test -c of $(echo $pkgs | wc -w) packages: ok ($((SECONDS - start))s)"
done
