// Package ustacktest is a test bed for integration tests over a real TUN
// device: a server runs in the kernel of a private network namespace, and
// its clients are a ustack stack whose source ports the test chooses.
//
// New makes, in one call, a fresh network namespace, a TUN device whose
// kernel side is in it (198.18.0.1/24 and fd00:18::1/64), and a
// stack.Stack on the device's other end (198.18.0.2 and fd00:18::2) with
// the port range and policy of Options. The test then runs the system
// under test on the kernel's side: a Go server through Bed.Listen,
// Bed.ListenPacket or Bed.Do, or any server binary through Bed.Command.
// It dials the server from Bed.Stack and asks the wire what the server
// saw: Bed.SeenPorts lists the client port of every connection the
// server accepted, in order, and Bed.Capture writes a pcap file of all
// the bed's traffic.
//
// The helpers cover what people debug with source ports: Bed.Churn runs
// N connections one after another (or a few at a time) through the
// range, with the client or the server closing first; Bed.Hold opens N
// connections and keeps them; Bed.ReuseTimeWait dials from a port while
// the server still holds the previous connection on that port in
// TIME_WAIT. Each returns a Result per connection (port, error, timing)
// for the test to assert on.
//
// A test that checks the ports its server saw:
//
//	bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40015}})
//	l, err := bed.Listen("tcp", "198.18.0.1:8080") // or bed.Command("my-server", ...)
//	...
//	results, err := bed.Churn(ctx, netip.MustParseAddrPort("198.18.0.1:8080"),
//		ustacktest.ChurnOptions{N: 100, Close: ustacktest.ServerCloses})
//	// results[i].Port == 40000 + i%16; results[i].Err == nil
//	// bed.SeenPorts(server) lists the same ports, as the server's kernel answered them
//
// Beds share nothing: parallel tests (t.Parallel) each get their own
// namespace, device and stack, with the same addresses. Everything is
// torn down by t.Cleanup, also when the test fails. With
// USTACK_KEEP_PCAP=DIR in the environment, a failed test leaves the
// bed's capture in DIR.
//
// Building a bed takes a few milliseconds from New to the first dial
// (BenchmarkNewToFirstDial).
//
// # Requirements
//
// The bed needs Linux, root (CAP_NET_ADMIN and CAP_SYS_ADMIN, to make a
// network namespace and configure a device in it) and /dev/net/tun. Without them New skips the test, saying what is missing;
// with USTACK_REQUIRE_PRIV=1 in the environment it fails the test instead,
// so that a CI run cannot pass by skipping. Bed.Command also needs
// nsenter (Debian package util-linux).
package ustacktest
