#!/usr/bin/env bash
# bench/rootlesskit.sh: rootlesskit (the network of rootless Docker) with
# ustack as its slirp4netns binary, against the real slirp4netns, in one
# run. rootlesskit makes a TAP device, starts the binary as
# "slirp4netns --mtu 65520 -r 3 --api-socket S PID tap0", and configures
# the device; iperf3 in the namespace then runs against a server on the
# host's loopback (10.0.2.2), uploading and downloading (-R), and
# bench/connrate measures connections per second (connect, 1-byte echo,
# close; 4 workers).
#
# It runs as the user nobody inside a private network namespace made for
# the run; for that it adds a subordinate ID range for nobody to
# /etc/subuid and /etc/subgid and makes /dev/net/tun mode 0666, and puts
# both back when it ends.
#
# Usage: sudo bench/rootlesskit.sh        (DUR=5 s per iperf3 run, CONNS=5000)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-5}
CONNS=${CONNS:-5000}

. bench/lib.sh

if [ "${USTACK_BENCH_INNER:-}" != 1 ]; then
  bench_need bench/rootlesskit.sh rootlesskit:rootlesskit uidmap:newuidmap slirp4netns:slirp4netns iperf3:iperf3
  work=$(mktemp -d)
  chmod 755 "$work"
  mode=$(stat -c %a /dev/net/tun)
  for f in subuid subgid; do
    if [ -e /etc/$f ]; then cp -p /etc/$f "$work/$f"; fi
  done
  restore() {
    chmod "$mode" /dev/net/tun
    for f in subuid subgid; do
      if [ -e "$work/$f" ]; then cp -p "$work/$f" /etc/$f; else rm -f /etc/$f; fi
    done
    rm -rf "$work"
  }
  trap restore EXIT
  grep -q '^nobody:' /etc/subuid 2>/dev/null || echo "nobody:200000:65536" >> /etc/subuid
  grep -q '^nobody:' /etc/subgid 2>/dev/null || echo "nobody:200000:65536" >> /etc/subgid
  chmod 666 /dev/net/tun
  bench_build "$work"
  mkdir "$work/ustack-as"
  ln -s "$work/ustack" "$work/ustack-as/slirp4netns"
  chmod -R a+rX "$work"
  USTACK_BENCH_INNER=1 WORK=$work unshare --net "$0" "$@"
  exit
fi

ip link set lo up
iperf3 -s -B 127.0.0.1 -p 5201 >/dev/null 2>&1 &
srv1=$!
"$WORK/connrate" -serve 127.0.0.1:7000 &
srv2=$!
trap 'kill $srv1 $srv2 2>/dev/null; wait 2>/dev/null' EXIT
sleep 0.5

declare -A R
for tool in ustack slirp4netns; do
  bin=$(command -v slirp4netns)
  [ "$tool" = ustack ] && bin=$WORK/ustack-as/slirp4netns
  out=$(mktemp -d)
  chmod 777 "$out"
  setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$out" XDG_RUNTIME_DIR="$out" \
    rootlesskit --state-dir "$out/rk" --net=slirp4netns --slirp4netns-binary="$bin" --port-driver=builtin sh -c "
      iperf3 -c 10.0.2.2 -t $DUR -J > $out/up.json
      iperf3 -c 10.0.2.2 -t $DUR -R -J > $out/down.json
      $WORK/connrate -c 10.0.2.2:7000 -n $CONNS -w 4 > $out/conns.txt" 2>/dev/null
  R[$tool,up]=$(gbps < "$out/up.json" 2>/dev/null || echo 0)
  R[$tool,down]=$(gbps < "$out/down.json" 2>/dev/null || echo 0)
  R[$tool,conns]=$(awk '{print $1}' "$out/conns.txt" 2>/dev/null || echo 0)
  rm -rf "$out"
  echo "# $tool: up ${R[$tool,up]} Gbps, down ${R[$tool,down]} Gbps, ${R[$tool,conns]} conns/s" >&2
done

ratio() { python3 -c "a,b=float('$1'),float('$2'); print('%.2fx' % (a/b) if b else '-')"; }
echo
echo "machine: $(nproc) cores, $(uname -r); $(rootlesskit --version)"
echo "command: sudo bench/rootlesskit.sh (DUR=$DUR s per iperf3 run, $CONNS connections with 4 workers)"
echo
echo "| measure | ustack as slirp4netns | slirp4netns | ratio |"
echo "| --- | ---: | ---: | ---: |"
for m in up down conns; do
  case $m in up) name="upload Gbps";; down) name="download Gbps";; conns) name="TCP conns/s";; esac
  echo "| $name | ${R[ustack,$m]} | ${R[slirp4netns,$m]} | $(ratio "${R[ustack,$m]}" "${R[slirp4netns,$m]}") |"
done
