// Package wg benchmarks ustack as the user-space end of a WireGuard
// tunnel, against wireguard-go's own tun/netstack on the same workload in
// the same run.
//
// Each benchmark builds a real tunnel per case: side A is a wireguard-go
// device whose TUN is either a ustack stack (wgtun) or wireguard-go's
// netstack (a gVisor stack behind gonet); side B is wireguard-go on a
// real TUN device in a private network namespace, with the Linux kernel
// serving a TCP sink, a TCP source and a TCP echo server behind it. The
// two devices peer over UDP on 127.0.0.1. It needs root and /dev/net/tun
// (it skips without them, or fails with USTACK_REQUIRE_PRIV=1). Run it
// with
//
//	go test -run=NONE -bench=. -count=3 ./bench/wg
//
// docs/BENCHMARKS.md ("WireGuard embedding") records the figures.
package wg
