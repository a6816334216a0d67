// Command fastpath measures ustack's fast path against the kernel, in one
// run each: every ustack figure is printed next to a
// baseline measured by the same command, and their ratio.
//
//	go run ./bench/fastpath throughput  # bulk TCP, ustack<->kernel over a TUN vs kernel<->kernel over veth
//	go run ./bench/fastpath connrate    # TCP connect, 1-byte echo, close per second
//	go run ./bench/fastpath memory      # RSS per idle established TCP connection
//	go run ./bench/fastpath udp         # 64-byte UDP datagrams per second
//	go run ./bench/fastpath ping        # ICMP echo round trips per second, one outstanding
//	go run ./bench/fastpath water       # the water TUN driver against the kernel driver
//	go run ./bench/fastpath all
//
// It needs root (CAP_NET_ADMIN) and /dev/net/tun. All traffic stays inside
// network namespaces the command creates (addresses from 198.18.0.0/15,
// no route out), which disappear with it. Output is Markdown for
// docs/BENCHMARKS.md; progress goes to stderr.
//
// It is Linux-only (network namespaces, TUN devices): on other systems
// it builds to a program that says so.
package main
