#!/usr/bin/env bash
# bench/sandbox.sh: ustack sandbox against slirp4netns and pasta, in one run.
#
# For each helper and MTU (65520 and 1500) it runs iperf3 inside the
# sandbox against an iperf3 server on the host's loopback, uploading and
# downloading (-R), measures TCP connections per second (connect, 1-byte
# echo, close; 4 workers; median of 3 runs) and the helper's peak RSS, and
# prints ustack's ratio to each peer. Everything runs inside a private network namespace
# made for the run, so "host loopback" is that namespace's loopback and
# nothing leaves the machine.
#
# Usage: sudo bench/sandbox.sh            (DUR=5 seconds per iperf3 run)
#        DUR=10 CONNS=5000 REPS=5 WORKERS=1 bench/sandbox.sh
#        MTUS=1500 TOOLS="ustack pasta" SKIP_IPERF=1 bench/sandbox.sh
#          (a subset: the MTUs and helpers to run, connection rate only)
#        BASE=REV TOOLS="base ustack" bench/sandbox.sh
#          (ustack against itself as of git revision REV, built alongside)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-5}
CONNS=${CONNS:-5000}
REPS=${REPS:-3}        # connection-rate runs per helper; the median is reported
WORKERS=${WORKERS:-4}
MTUS=${MTUS:-65520 1500}
TOOLS=${TOOLS:-ustack slirp4netns pasta}

. bench/lib.sh

if [ "${USTACK_BENCH_INNER:-}" != 1 ]; then
  bench_need bench/sandbox.sh iperf3:iperf3 slirp4netns:slirp4netns passt:pasta time:/usr/bin/time
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  bench_build "$work"
  if [ -n "${BASE:-}" ]; then
    mkdir "$work/base"
    git archive "$BASE" | tar -x -C "$work/base"
    (cd "$work/base" && go build -o "$work/ustack-base" ./cmd/ustack)
  fi
  USTACK_BENCH_INNER=1 WORK=$work exec unshare --net "$0" "$@"
fi

# Inside the private namespace.
bench_template_veth

iperf3 -s -B 127.0.0.1 -p 5201 >/dev/null 2>&1 &
srv1=$!
"$WORK/connrate" -serve 127.0.0.1:7000 &
srv2=$!
trap 'kill $srv1 $srv2 2>/dev/null; wait 2>/dev/null' EXIT
sleep 0.5


# guest_script ADDR: what runs inside each sandbox.
guest_script() {
  cat <<EOS
[ -n "\${SKIP_IPERF:-}" ] || iperf3 -c $1 -p 5201 -t $DUR -J > $WORK/up.json
[ -n "\${SKIP_IPERF:-}" ] || iperf3 -c $1 -p 5201 -t $DUR -R -J > $WORK/down.json
for i in \$(seq $REPS); do $WORK/connrate -c $1:7000 -n $CONNS -w $WORKERS; done > $WORK/conns.txt
EOS
}

run_ustack() { # MTU [BINARY]
  /usr/bin/time -f %M -o "$WORK/rss" "${2:-$WORK/ustack}" sandbox --allow-host-loopback --mtu "$1" -- sh -c "$(guest_script 10.0.2.2)"
}

run_slirp() { # MTU
  unshare --net --fork sh -c "while ! ip link show tap0 >/dev/null 2>&1; do sleep 0.05; done; sleep 0.2; $(guest_script 10.0.2.2)" &
  local guest=$!
  sleep 0.2
  /usr/bin/time -f %M -o "$WORK/rss" slirp4netns --configure --mtu "$1" "$guest" tap0 >/dev/null 2>&1 &
  local helper=$!
  wait "$guest"
  kill "$(pgrep -P "$helper" slirp4netns || echo "$helper")" 2>/dev/null || true
  wait "$helper" 2>/dev/null || true
}

run_pasta() { # MTU
  /usr/bin/time -f %M -o "$WORK/rss" pasta --config-net -f --runas 0 --mtu "$1" -t none -u none -T none -U none -- sh -c "$(guest_script 198.18.99.254)" >/dev/null 2>&1
}

declare -A R
for mtu in $MTUS; do
  for tool in $TOOLS; do
    rm -f "$WORK"/up.json "$WORK"/down.json "$WORK"/conns.txt "$WORK"/rss
    case $tool in
      ustack) run_ustack "$mtu" ;;
      base) run_ustack "$mtu" "$WORK/ustack-base" ;;
      slirp4netns) run_slirp "$mtu" ;;
      pasta) run_pasta "$mtu" ;;
    esac
    up=$(gbps < "$WORK/up.json" 2>/dev/null || echo 0)
    down=$(gbps < "$WORK/down.json" 2>/dev/null || echo 0)
    conns=$(awk '{print $1}' "$WORK/conns.txt" 2>/dev/null | sort -n | awk '{v[NR]=$1} END {print NR ? v[int((NR+1)/2)] : 0}')
    rss=$(tail -1 "$WORK/rss" 2>/dev/null || echo 0)
    # A helper named more than once in TOOLS runs that often, taking
    # turns with the others; the tables give its medians.
    R[$tool,$mtu,up]+=" $up" R[$tool,$mtu,down]+=" $down" R[$tool,$mtu,conns]+=" $conns" R[$tool,$mtu,rss]+=" $rss"
    echo "# $tool mtu $mtu: up $up Gbps, down $down Gbps, $conns conns/s, peak RSS $rss KiB" >&2
  done
done
median() { printf '%s\n' $1 | sort -n | awk '{v[NR]=$1} END {print NR ? v[int((NR+1)/2)] : 0}'; }
for k in "${!R[@]}"; do R[$k]=$(median "${R[$k]}"); done

ratio() { python3 -c "a,b=float('$1'),float('$2'); print('%.2fx' % (a/b) if b else '-')"; }
echo
echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "command: sudo bench/sandbox.sh (DUR=$DUR s per iperf3 run; connection rate: median of $REPS runs of $CONNS connections, $WORKERS workers)"
echo
echo "| MTU | measure | ustack | slirp4netns | pasta | ustack/slirp4netns | ustack/pasta |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for mtu in 65520 1500; do
  for m in up down conns rss; do
    case $m in up) name="upload Gbps";; down) name="download Gbps";; conns) name="TCP conns/s";; rss) name="peak RSS KiB";; esac
    u=${R[ustack,$mtu,$m]:-0} s=${R[slirp4netns,$mtu,$m]:-0} p=${R[pasta,$mtu,$m]:-0}
    echo "| $mtu | $name | $u | $s | $p | $(ratio "$u" "$s") | $(ratio "$u" "$p") |"
  done
done
if [ -n "${BASE:-}" ]; then
  echo
  echo "ustack against itself at $BASE (base), same run:"
  echo
  echo "| MTU | measure | ustack | base | ustack/base |"
  echo "| --- | --- | ---: | ---: | ---: |"
  for mtu in $MTUS; do
    for m in up down conns rss; do
      case $m in up) name="upload Gbps";; down) name="download Gbps";; conns) name="TCP conns/s";; rss) name="peak RSS KiB";; esac
      u=${R[ustack,$mtu,$m]:-0} b=${R[base,$mtu,$m]:-0}
      echo "| $mtu | $name | $u | $b | $(ratio "$u" "$b") |"
    done
  done
fi
