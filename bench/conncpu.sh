#!/usr/bin/env bash
# bench/conncpu.sh: CPU time each helper spends per TCP connection.
#
# For ustack sandbox, slirp4netns and pasta in turn it starts the helper
# around a guest that only sleeps, then runs bench/connrate (connect,
# 1-byte echo, close; 4 workers) from inside the guest's namespace against
# a server on the host's loopback, and reads the helper's own user and
# system CPU time (/proc/PID/stat, all its threads, none of its children)
# before and after. It prints microseconds per connection, the rate, and
# ustack's ratio to each peer. Everything runs inside a private network
# namespace made for the run.
#
# Usage: sudo bench/conncpu.sh          (CONNS=5000 per run, REPS=3 runs)
#        CONNS=10000 REPS=5 TOOLS="ustack pasta" bench/conncpu.sh
#
# Keep CONNS x REPS under about 20,000: beyond that, within a minute, a
# guest whose kernel ends most connections in TIME_WAIT (the one behind
# pasta or slirp4netns: about 15,000 TIME_WAIT sockets after 25,000
# connections) runs short of ephemeral ports, and its rate falls tenfold.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-5000}
REPS=${REPS:-3}
TOOLS=${TOOLS:-ustack slirp4netns pasta}

. bench/lib.sh

if [ "${USTACK_BENCH_INNER:-}" != 1 ]; then
  bench_need bench/conncpu.sh slirp4netns:slirp4netns passt:pasta util-linux:nsenter
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  bench_build "$work"
  USTACK_BENCH_INNER=1 WORK=$work exec unshare --net "$0" "$@"
fi

# Inside the private namespace.
bench_template_veth
"$WORK/connrate" -serve 127.0.0.1:7000 &
srv=$!
helper=
trap 'kill $srv $helper 2>/dev/null; wait 2>/dev/null' EXIT
sleep 0.3

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

cpu() { awk '{print $14, $15}' "/proc/$1/stat"; } # utime stime, in ticks

declare -A U S R
hz=$(getconf CLK_TCK)
for tool in $TOOLS; do
  case $tool in
    ustack)
      "$WORK/ustack" sandbox --allow-host-loopback -- sleep 600 &
      helper=$!; addr=10.0.2.2 ;;
    slirp4netns)
      unshare --net sleep 600 &
      g=$!
      sleep 0.2
      slirp4netns --configure "$g" tap0 >/dev/null 2>&1 &
      helper=$!; addr=10.0.2.2 ;;
    pasta)
      pasta --config-net -f --runas 0 -t none -u none -T none -U none -- sleep 600 >/dev/null 2>&1 &
      helper=$!; addr=198.18.99.254 ;;
  esac
  sleep 1
  [ "$tool" = slirp4netns ] && guest=$g || guest=$(guestpid "$helper")
  # pasta and a rootless-style ustack put the guest in a user namespace
  # too; enter it when there is one.
  enter=(nsenter -t "$guest" -n)
  [ "$(readlink /proc/$guest/ns/user)" != "$(readlink /proc/self/ns/user)" ] && enter+=(-U --preserve-credentials)
  rates=()
  read -r u0 s0 < <(cpu "$helper")
  for _ in $(seq "$REPS"); do
    rates+=("$("${enter[@]}" "$WORK/connrate" -c "$addr:7000" -n "$CONNS" -w 4 | awk '{print $1}')")
  done
  read -r u1 s1 < <(cpu "$helper")
  kill "$helper" 2>/dev/null || true
  [ "$tool" = slirp4netns ] && kill "$g" 2>/dev/null
  wait "$helper" 2>/dev/null || true
  helper=
  n=$((CONNS * REPS))
  U[$tool]=$(python3 -c "print('%.1f' % (($u1-$u0)*1e6/$hz/$n))")
  S[$tool]=$(python3 -c "print('%.1f' % (($s1-$s0)*1e6/$hz/$n))")
  R[$tool]=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  echo "# $tool: user ${U[$tool]} us/conn, system ${S[$tool]} us/conn, ${R[$tool]} conns/s (median of ${rates[*]})" >&2
done

echo
echo "machine: $(nproc) cores, $(uname -r)"
echo "command: sudo bench/conncpu.sh (CONNS=$CONNS x REPS=$REPS per helper, 4 workers)"
echo
echo "| helper | user us/conn | system us/conn | total us/conn | conns/s (median) | ustack total / this |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
ut=$(python3 -c "print(${U[ustack]:-0}+${S[ustack]:-0})")
for tool in $TOOLS; do
  t=$(python3 -c "print('%.1f' % (${U[$tool]}+${S[$tool]}))")
  echo "| $tool | ${U[$tool]} | ${S[$tool]} | $t | ${R[$tool]} | $(python3 -c "print('%.2fx' % ($ut/$t))") |"
done
