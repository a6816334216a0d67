#!/usr/bin/env bash
# bench/conformance.sh: the conformance scenarios (internal/conformance)
# through ustack sandbox, slirp4netns and pasta, in one run, as a table.
#
# A kernel guest in each helper's sandbox runs `conform guest` against a
# `conform peer` on the host's loopback (the sandbox's 10.0.2.2, or
# pasta's gateway address). Each scenario runs in a sandbox of its own,
# so that one helper's failure cannot spoil the next row and the helper's
# peak RSS (its VmHWM) is that scenario's. Everything
# runs inside a private network namespace made for the run, so "host
# loopback" is that namespace's loopback and nothing leaves the machine.
#
# The table (markdown) goes to stdout and, with OUT=FILE, to FILE:
#   sudo OUT=docs/CONFORMANCE.md bench/conformance.sh
# Variables:
#   LONG=1          real-scale parameters (3-minute zero windows, 1 GiB
#                   each way with loss) and the scenarios that only make
#                   sense at real scale (guest-vanishes: the 60 s FIN timeout)
#   TOOLS="ustack pasta"   a subset of the helpers
#   SCENARIOS="keepalive reset"   a subset of the scenarios
#   MTU=65520       the sandbox interface's MTU, the same for every helper
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${TOOLS:-ustack slirp4netns pasta}
MTU=${MTU:-65520}
LONG=${LONG:-}
OUT=${OUT:-}

. bench/lib.sh

if [ "${USTACK_BENCH_INNER:-}" != 1 ]; then
  bench_need bench/conformance.sh slirp4netns:slirp4netns passt:pasta nftables:nft
  work=$(mktemp -d)
  chmod 755 "$work"
  trap 'rm -rf "$work"' EXIT
  bench_build "$work"
  go build -o "$work/conform" ./bench/conform
  USTACK_BENCH_INNER=1 WORK=$work exec unshare --net "$0" "$@"
fi

# Inside the private namespace.
bench_template_veth

longflag=
[ -z "$LONG" ] || longflag=-long
all=$("$WORK/conform" list $longflag)
SCENARIOS=${SCENARIOS:-$all}
for s in $SCENARIOS; do
  grep -qx "$s" <<<"$all" || { echo "unknown scenario $s (want: $(echo $all))" >&2; exit 2; }
done
"$WORK/conform" peer >"$WORK/peer.out" 2>&1 &
peer=$!
# A named namespace (pasta's) outlives the script unless deleted.
NAMED=()
trap 'kill $peer 2>/dev/null; wait 2>/dev/null; for n in "${NAMED[@]}"; do ip netns delete "$n" 2>/dev/null || true; done' EXIT
for _ in $(seq 200); do grep -q '^listening' "$WORK/peer.out" && break; sleep 0.05; done
port=$(awk '/^listening/ {sub(/.*:/, "", $2); print $2}' "$WORK/peer.out")
[ -n "$port" ] || { echo "conform peer did not start:" >&2; cat "$WORK/peer.out" >&2; exit 1; }

# guest_script ADDR NAMES: what runs inside each sandbox.
guest_script() {
  echo "$WORK/conform guest -peer $1:$port $longflag $2 > $WORK/results.txt 2>&1"
}

# watch_hwm PID: the helper's peak RSS (VmHWM, KiB) into $WORK/rss until
# it exits. The helper alone: GNU time would count the guest's processes
# too where they are the helper's children.
watch_hwm() {
  local v
  while v=$(awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null) && [ -n "$v" ]; do
    echo "$v" >"$WORK/rss"
    sleep 0.1
  done
}

# wait_netns PID: until PID (an `unshare --net`) is in a network namespace
# of its own, so that a helper attached to it serves the guest and not the
# run's namespace.
wait_netns() {
  local own
  own=$(readlink /proc/self/ns/net)
  for _ in $(seq 200); do
    [ "$(readlink "/proc/$1/ns/net" 2>/dev/null || echo "$own")" = "$own" ] || return 0
    sleep 0.01
  done
  echo "process $1 never entered a network namespace of its own" >&2
  return 1
}

# helper_gone PID: once the guest is done, stop the helper; if it had
# already exited (crashed), say so in $WORK/helper.
helper_gone() {
  local st=0
  if kill -0 "$1" 2>/dev/null; then
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    return
  fi
  wait "$1" 2>/dev/null || st=$?
  if [ "$st" -gt 128 ]; then
    echo "the helper died of signal $((st - 128)) ($(kill -l $((st - 128))))" >"$WORK/helper"
  else
    echo "the helper exited with status $st" >"$WORK/helper"
  fi
}

run_ustack() { # NAMES
  "$WORK/ustack" sandbox --allow-host-loopback --mtu "$MTU" -- sh -c "$(guest_script 10.0.2.2 "$1")" &
  local helper=$!
  watch_hwm "$helper" &
  local watcher=$!
  wait "$helper" || true
  wait "$watcher" || true
}

run_slirp() { # NAMES
  unshare --net --fork sh -c "for i in \$(seq 200); do ip link show tap0 >/dev/null 2>&1 && break; sleep 0.05; done; sleep 0.2; $(guest_script 10.0.2.2 "$1")" &
  local guest=$!
  wait_netns "$guest"
  slirp4netns --configure --mtu "$MTU" "$guest" tap0 >/dev/null 2>&1 &
  local helper=$!
  watch_hwm "$helper" &
  local watcher=$!
  wait "$guest" || true
  helper_gone "$helper"
  wait "$watcher" || true
}

run_pasta() { # NAMES
  # pasta attaches to the guest's namespace, as slirp4netns does (a
  # command that pasta starts runs in a user namespace of pasta's, where
  # the guest cannot change its packet filter). It opens the namespace by
  # name: the Debian build cannot open another process's /proc/PID/ns.
  unshare --net --fork sh -c "for i in \$(seq 200); do ip -4 route show default | grep -q 198.18.99.254 && break; sleep 0.05; done; sleep 0.2; $(guest_script 198.18.99.254 "$1")" &
  local guest=$!
  wait_netns "$guest"
  local name=conformance$guest
  ip netns attach "$name" "$guest"
  NAMED+=("$name")
  pasta --config-net -f --runas 0 --mtu "$MTU" -t none -u none -T none -U none --netns "$name" >/dev/null 2>&1 &
  local helper=$!
  watch_hwm "$helper" &
  local watcher=$!
  wait "$guest" || true
  helper_gone "$helper"
  wait "$watcher" || true
  ip netns delete "$name"
}

declare -A R
for tool in $TOOLS; do
  for s in $SCENARIOS; do
    rm -f "$WORK/results.txt" "$WORK/rss" "$WORK/helper"
    case $tool in
      ustack) run_ustack "$s" ;;
      slirp4netns) run_slirp "$s" ;;
      pasta) run_pasta "$s" ;;
      *) echo "unknown tool $tool (want ustack, slirp4netns, pasta)" >&2; exit 2 ;;
    esac
    line=$(grep -m1 "^RESULT $s " "$WORK/results.txt" 2>/dev/null || true)
    echo "# $tool: ${line:-no result}" >&2
    if [ -z "$line" ]; then
      R[$tool,$s]="FAIL: no result (the guest did not finish)"
    else
      verdict=$(awk '{print $3}' <<<"$line")
      figs=$(cut -d' ' -f4- <<<"$line" | sed 's/|/\\|/g')
      R[$tool,$s]="$verdict${figs:+: $figs}"
    fi
    if [ -s "$WORK/helper" ]; then
      R[$tool,$s]="${R[$tool,$s]}; $(cat "$WORK/helper")"
    fi
    R[$tool,$s,rss]=$(tail -1 "$WORK/rss" 2>/dev/null || echo 0)
  done
done

table() {
  echo "# Conformance of the sandbox helpers"
  echo
  echo "Each scenario runs a Linux kernel guest inside the helper's sandbox against"
  echo "a peer on the host's loopback (\`bench/conform\`, scenarios in"
  echo "\`internal/conformance\`; the same scenarios run in \`integration/\` for"
  echo "ustack). PASS or FAIL, then what was measured or why it failed."
  echo
  echo "machine: $(nproc) cores, $(uname -r); MTU $MTU; $( [ -n "$LONG" ] && echo 'real-scale parameters (LONG=1)' || echo 'default (shortened) parameters')"
  echo "versions: $(slirp4netns --version 2>/dev/null | head -1); pasta $(dpkg-query -W -f '${Version}' passt 2>/dev/null)"
  echo "run: $(date -u +%F), commit $(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "command: sudo $( [ -n "$LONG" ] && echo 'LONG=1 ')OUT=docs/CONFORMANCE.md bench/conformance.sh"
  echo
  printf '| scenario |'; for t in $TOOLS; do printf ' %s |' "$t"; done; echo
  printf '| --- |'; for t in $TOOLS; do printf ' --- |'; done; echo
  for s in $SCENARIOS; do
    printf '| %s |' "$s"; for t in $TOOLS; do printf ' %s |' "${R[$t,$s]:-}"; done; echo
  done
  if [[ " $(echo $SCENARIOS) " == *" stalled-flows "* ]]; then
    # Goal of the relay: at most twice pasta's peak RSS in the same run.
    p=${R[pasta,stalled-flows,rss]:-}
    printf '| stalled-flows: helper peak RSS (goal: at most 2x pasta) |'
    for t in $TOOLS; do
      k=${R[$t,stalled-flows,rss]:-0}
      v=$(awk -v k="$k" -v p="$p" 'BEGIN { if (p == "" || p == 0) print "-"; else if (k <= 2*p) print "PASS"; else print "FAIL" }')
      printf ' %s: %s MiB |' "$v" "$(awk -v k="$k" 'BEGIN { printf "%.0f", k/1024 }')"
    done
    echo
  fi
  echo
  echo "Scenarios (the figures above use these parameters):"
  echo
  "$WORK/conform" list -doc $longflag | sed 's/^/- /'
}

table > "$WORK/table.md"
cat "$WORK/table.md"
[ -z "$OUT" ] || cp "$WORK/table.md" "$OUT"
