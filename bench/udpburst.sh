#!/usr/bin/env bash
# bench/udpburst.sh: a burst of new UDP flows through ustack sandbox,
# slirp4netns and pasta, in one run. For each run a helper starts around a
# guest that only sleeps; from inside the guest's namespace bench/udpburst
# opens N UDP sockets and sends one datagram from each to one port on the
# host's loopback, back to back, so that every datagram is a new flow for
# the helper; a counting server on the host says how many arrived once
# its count stops growing. The script also reads the guest interface's TX
# drops and the helper's own CPU time over the burst (/proc/PID/stat, all
# its threads, none of its children; 10 ms ticks), given per datagram
# that arrived. Each helper runs REPS times,
# interleaved, a fresh helper each time; the table gives medians and
# ustack's ratio to each peer. Everything runs inside a private network
# namespace made for the run, so "host loopback" is that namespace's
# loopback and nothing leaves the machine.
#
# Usage: sudo bench/udpburst.sh               (N=3000 flows, REPS=5)
#        N=5000 REPS=9 TOOLS="ustack pasta" bench/udpburst.sh
#        USTACK_FLAGS="--tx-queue-len 500" bench/udpburst.sh
#          (extra flags for ustack sandbox, e.g. the kernel's default queue)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-3000}
REPS=${REPS:-5}
TOOLS=${TOOLS:-ustack slirp4netns pasta}
USTACK_FLAGS=${USTACK_FLAGS:-}

. bench/lib.sh

if [ "${USTACK_BENCH_INNER:-}" != 1 ]; then
  bench_need bench/udpburst.sh slirp4netns:slirp4netns passt:pasta util-linux:nsenter
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  go build -o "$work/ustack" ./cmd/ustack
  go build -o "$work/udpburst" ./bench/udpburst
  USTACK_BENCH_INNER=1 WORK=$work exec unshare --net "$0" "$@"
fi

# Inside the private namespace.
bench_template_veth

"$WORK/udpburst" -serve 127.0.0.1:7001 &
srv=$!
helper= g=
trap 'kill $srv $helper $g 2>/dev/null; wait 2>/dev/null' EXIT
while ! "$WORK/udpburst" -query 127.0.0.1:7001 -quiet 0 >/dev/null 2>&1; do sleep 0.05; done

# guestpid HELPERPID: the sleeping guest below the helper.
guestpid() {
  local p
  for _ in $(seq 100); do
    p=$(pgrep -n -x sleep -P "$(pgrep -d, -P "$1"),$1" 2>/dev/null || true)
    [ -n "$p" ] && { echo "$p"; return; }
    sleep 0.05
  done
  echo "no guest under $1" >&2
  exit 1
}

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in ticks
# txdrops: the TX drops of the namespace's interfaces but lo, summed.
txdrops() { sed 's/:/ /' /proc/net/dev | awk 'NR>2 && $1!="lo" {d+=$13} END {print d+0}'; }
export -f txdrops

hz=$(getconf CLK_TCK)
declare -A R D C
for rep in $(seq "$REPS"); do
  for tool in $TOOLS; do
    g=
    case $tool in
      ustack)
        # shellcheck disable=SC2086
        "$WORK/ustack" sandbox --allow-host-loopback $USTACK_FLAGS -- sleep 600 &
        helper=$!; addr=10.0.2.2 ;;
      slirp4netns)
        unshare --net sleep 600 &
        g=$!
        sleep 0.2
        slirp4netns --configure --mtu 65520 "$g" tap0 >/dev/null 2>&1 &
        helper=$!; addr=10.0.2.2 ;;
      pasta)
        pasta --config-net -f --runas 0 -t none -u none -T none -U none -- sleep 600 >/dev/null 2>&1 &
        helper=$!; addr=198.18.99.254 ;;
    esac
    sleep 1
    guest=${g:-$(guestpid "$helper")}
    enter=(nsenter -t "$guest" -n)
    [ "$(readlink /proc/$guest/ns/user)" != "$(readlink /proc/self/ns/user)" ] && enter+=(-U --preserve-credentials)
    before=$("$WORK/udpburst" -query 127.0.0.1:7001)
    d0=$("${enter[@]}" bash -c txdrops)
    c0=$(cpu "$helper")
    "${enter[@]}" "$WORK/udpburst" -c "$addr:7001" -n "$N" 2>/dev/null
    after=$("$WORK/udpburst" -query 127.0.0.1:7001)
    c1=$(cpu "$helper")
    d1=$("${enter[@]}" bash -c txdrops)
    kill "$helper" $g 2>/dev/null || true
    wait "$helper" $g 2>/dev/null || true
    helper= g=
    got=$((after - before))
    R[$tool]="${R[$tool]:-} $got"
    D[$tool]="${D[$tool]:-} $((d1 - d0))"
    # per datagram that arrived: a helper that dropped most of the burst
    # set up fewer flows
    C[$tool]="${C[$tool]:-} $(python3 -c "print('%.0f' % (($c1-$c0)*1e6/$hz/$got) if $got else 0)")"
    echo "# run $rep: $tool: $got of $N arrived; guest TX drops $((d1 - d0)); helper CPU $(((c1 - c0) * 1000 / hz)) ms" >&2
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print NR ? v[int((NR+1)/2)] : 0}'; }
range() { tr ' ' '\n' | grep . | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
ratio() { python3 -c "a,b=float('$1'),float('$2'); print('%.2fx' % (a/b) if b else '-')"; }
echo
echo "machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: sudo bench/udpburst.sh (N=$N flows, one datagram each; REPS=$REPS runs per helper, interleaved)${USTACK_FLAGS:+; ustack flags: $USTACK_FLAGS}"
echo
echo "| helper | arrived, median of $REPS | range | share | guest TX drops, median | helper CPU per flow that arrived, us, median | ustack/helper, arrived | ustack/helper, CPU |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
u=$(echo "${R[ustack]:-}" | median)
uc=$(echo "${C[ustack]:-}" | median)
for tool in $TOOLS; do
  m=$(echo "${R[$tool]}" | median)
  c=$(echo "${C[$tool]}" | median)
  echo "| $tool | $m | $(echo "${R[$tool]}" | range) | $(python3 -c "print('%d%%' % round(100*$m/$N))") | $(echo "${D[$tool]}" | median) | $c | $(ratio "$u" "$m") | $(ratio "$uc" "$c") |"
done
