#!/usr/bin/env bash
# bench/udpburst.sh: a burst of new UDP flows through ustack sandbox,
# slirp4netns and pasta, in one run. Inside each sandbox bench/udpburst
# opens N UDP sockets and sends one datagram from each to one port on the
# host's loopback, back to back, so that every datagram is a new flow for
# the helper; a counting server on the host says how many arrived. Each
# helper runs REPS times, interleaved; the table gives the median and the
# range, and ustack's ratio to each peer. Everything runs inside a private
# network namespace made for the run, so "host loopback" is that
# namespace's loopback and nothing leaves the machine.
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
  bench_need bench/udpburst.sh slirp4netns:slirp4netns passt:pasta
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
trap 'kill $srv 2>/dev/null; wait 2>/dev/null' EXIT
while ! "$WORK/udpburst" -query 127.0.0.1:7001 -quiet 0 >/dev/null 2>&1; do sleep 0.05; done

# txdrops: the TX drops of the namespace's interfaces but lo, summed.
txdrops="sed 's/:/ /' /proc/net/dev | awk 'NR>2 && \$1!=\"lo\" {d+=\$13} END {print d+0}'"

# guest_script ADDR: what runs inside each sandbox. After its burst the
# guest waits (through the sandbox) until the server's count has stopped
# growing, so that the helper is not torn down while it still carries
# datagrams; it leaves its interface's TX drops in $WORK/drops.
guest_script() {
  echo "d0=\$($txdrops); $WORK/udpburst -c $1:7001 -n $N 2>/dev/null; $WORK/udpburst -query $1:7001 >/dev/null; echo \$((\$($txdrops) - d0)) > $WORK/drops"
}

run_ustack() {
  # shellcheck disable=SC2086
  "$WORK/ustack" sandbox --allow-host-loopback $USTACK_FLAGS -- sh -c "$(guest_script 10.0.2.2)"
}

run_slirp() {
  unshare --net --fork sh -c "while ! ip link show tap0 >/dev/null 2>&1; do sleep 0.05; done; sleep 0.2; $(guest_script 10.0.2.2)" &
  local guest=$!
  sleep 0.2
  slirp4netns --configure --mtu 65520 "$guest" tap0 >/dev/null 2>&1 &
  local helper=$!
  wait "$guest"
  kill "$helper" 2>/dev/null || true
  wait "$helper" 2>/dev/null || true
}

run_pasta() {
  pasta --config-net -f --runas 0 -t none -u none -T none -U none -- sh -c "$(guest_script 198.18.99.254)" >/dev/null 2>&1
}

declare -A R D
total=0
for rep in $(seq "$REPS"); do
  for tool in $TOOLS; do
    case $tool in
      ustack) run_ustack ;;
      slirp4netns) run_slirp ;;
      pasta) run_pasta ;;
    esac
    now=$("$WORK/udpburst" -query 127.0.0.1:7001)
    got=$((now - total))
    total=$now
    drops=$(cat "$WORK/drops" 2>/dev/null || echo "?")
    rm -f "$WORK/drops"
    R[$tool]="${R[$tool]:-} $got"
    D[$tool]="${D[$tool]:-} $drops"
    echo "# run $rep: $tool: $got of $N arrived; guest TX drops $drops" >&2
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print NR ? v[int((NR+1)/2)] : 0}'; }
range() { tr ' ' '\n' | grep . | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
ratio() { python3 -c "a,b=float('$1'),float('$2'); print('%.2fx' % (a/b) if b else '-')"; }
echo
echo "machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: sudo bench/udpburst.sh (N=$N flows, one datagram each; REPS=$REPS runs per helper, interleaved)${USTACK_FLAGS:+; ustack flags: $USTACK_FLAGS}"
echo
echo "| helper | arrived, median of $REPS | range | share | guest TX drops, median | ustack/helper |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
u=$(echo "${R[ustack]:-}" | median)
for tool in $TOOLS; do
  m=$(echo "${R[$tool]}" | median)
  echo "| $tool | $m | $(echo "${R[$tool]}" | range) | $(python3 -c "print('%d%%' % round(100*$m/$N))") | $(echo "${D[$tool]}" | median) | $(ratio "$u" "$m") |"
done
