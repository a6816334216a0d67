// Package integration holds the tests that run ustack over real TUN
// devices, each in a network namespace of its own with the Linux kernel as
// the peer. They need root (CAP_NET_ADMIN) and /dev/net/tun; without them
// they skip, or fail when USTACK_REQUIRE_PRIV=1.
//
// Addresses: the kernel side is 198.18.0.1/24 and fd00:18::1/64, the stack
// 198.18.0.2/24 and fd00:18::2/64. The namespaces have no route out.
//
// The scenarios that prove the port allocator and the data path on the
// wire (ports in order over 25 cycles, exhaustion, bulk integrity, and
// ustack demo --tun) run over both TUN drivers, tun.DriverKernel and
// tun.DriverWater, as subtests named after the driver. Over water the bulk
// test moves 8 MB each way by default, as 100 MB without offloads take
// minutes under the race detector; USTACK_WATER_BULK=full moves 100 MB:
//
//	USTACK_WATER_BULK=full go test -race -run 'TestInboundBulkIntegrity/water' ./integration
//
// The package is Linux-only: on other systems it is empty.
package integration
