#!/usr/bin/env bash
# Runs the whole ustack test suite: formatting, vet, the cross-build of
# every other target system (scripts/crossbuild.sh: vet, build, and the
# test binaries of other systems compiled), then every package's tests
# under the race detector. As root it first installs the Debian
# packages the privileged integration tests and examples use. Set USTACK_REQUIRE_PRIV=1
# to make tests that need root or /dev/net/tun fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  for pkg in curl:curl iproute2:ip iputils-ping:ping nftables:nft redis-server:redis-server rootlesskit:rootlesskit tcpdump:tcpdump uidmap:newuidmap util-linux:nsenter; do
    command -v "${pkg#*:}" >/dev/null || need+=("${pkg%%:*}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then
  echo "gofmt would change:"; echo "$bad"; exit 1
fi
go vet ./...
./scripts/crossbuild.sh
go test -race -count=1 -timeout 30m "$@" ./...
