# bench/lib.sh: what the bench/*.sh scripts share. Sourced, not run.

# bench_need NAME PKG:CMD...: NAME must run as root; install with apt-get
# each PKG whose CMD is missing.
bench_need() {
  local name=$1 p need=()
  shift
  [ "$(id -u)" = 0 ] || { echo "$name needs root (it creates namespaces)" >&2; exit 1; }
  for p in "$@"; do
    command -v "${p#*:}" >/dev/null || need+=("${p%%:*}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# bench_build DIR: build ustack and bench/connrate into DIR.
bench_build() {
  go build -o "$1/ustack" ./cmd/ustack
  go build -o "$1/connrate" ./bench/connrate
}

# bench_template_veth: inside the run's namespace, lo up and a veth whose
# peer leads nowhere, up with a default route: pasta copies its addresses
# and routes from such a template interface, which must have a carrier.
bench_template_veth() {
  ip link set lo up
  ip link add bench0 type veth peer name bench1
  ip addr add 198.18.99.1/24 dev bench0
  ip link set bench1 up
  ip link set bench0 up
  ip route add default via 198.18.99.254 dev bench0
}

# gbps: iperf3's JSON on stdin to the received Gbps.
gbps() { python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))'; }
