// Package integration holds the tests that run ustack over real TUN
// devices, each in a network namespace of its own with the Linux kernel as
// the peer. They need root (CAP_NET_ADMIN) and /dev/net/tun; without them
// they skip, or fail when USTACK_REQUIRE_PRIV=1.
//
// Addresses: the kernel side is 198.18.0.1/24 and fd00:18::1/64, the stack
// 198.18.0.2/24 and fd00:18::2/64. The namespaces have no route out.
package integration
