//go:build linux

package integration

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/ustacknet/ustack/portalloc"
	"golang.org/x/sys/unix"
)

// ipv4 builds an IPv4 packet from 198.18.0.1 to 198.18.0.2 with a valid
// header checksum unless asked otherwise.
func ipv4Packet(proto byte, payload []byte, mutate func(h []byte)) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	h[8] = 64
	h[9] = proto
	copy(h[12:16], []byte{198, 18, 0, 1})
	copy(h[16:20], []byte{198, 18, 0, 2})
	binary.BigEndian.PutUint16(h[10:], checksum(h))
	if mutate != nil {
		mutate(h)
	}
	return append(h, payload...)
}

func ipv6Packet(next byte, payload []byte, mutate func(h []byte)) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = next
	h[7] = 64
	src, dst := netip.MustParseAddr("fd00:18::1").As16(), netip.MustParseAddr("fd00:18::2").As16()
	copy(h[8:24], src[:])
	copy(h[24:40], dst[:])
	if mutate != nil {
		mutate(h)
	}
	return append(h, payload...)
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// tcpSegment is a 20-byte TCP header to port 7 with a wrong checksum.
func tcpSegment(flags byte, dataOff byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], 12345)
	binary.BigEndian.PutUint16(b[2:], 7)
	b[12] = dataOff << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	binary.BigEndian.PutUint16(b[16:], 0xdead)
	return b
}

func udpDatagram(length uint16) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], 12345)
	binary.BigEndian.PutUint16(b[2:], 7)
	binary.BigEndian.PutUint16(b[4:], length)
	binary.BigEndian.PutUint16(b[6:], 0xbeef)
	return b
}

// garbage returns the malformed packets to inject.
func garbage(r *rand.Rand) [][]byte {
	pkts := [][]byte{
		{},                          // empty
		{0x45},                      // one byte
		{0x45, 0, 0, 20, 0, 0},      // truncated IPv4 header
		{0x60, 0, 0, 0, 0, 8, 6, 1}, // truncated IPv6 header
		{0x15, 0, 0, 20},            // IP version 1
		ipv4Packet(6, tcpSegment(0x02, 5), func(h []byte) { h[10] ^= 0xff }),                           // bad header checksum
		ipv4Packet(6, tcpSegment(0x02, 5), func(h []byte) { h[0] = 0x4f }),                             // IHL past the end
		ipv4Packet(6, tcpSegment(0x02, 5), func(h []byte) { h[0] = 0x43 }),                             // IHL below 5
		ipv4Packet(6, tcpSegment(0x02, 5), func(h []byte) { binary.BigEndian.PutUint16(h[2:], 9000) }), // total length too long
		ipv4Packet(6, tcpSegment(0x02, 5), func(h []byte) { binary.BigEndian.PutUint16(h[2:], 10) }),   // total length too short
		ipv4Packet(6, tcpSegment(0x02, 5), nil),                                                        // bad TCP checksum
		ipv4Packet(6, tcpSegment(0x02, 0), nil),                                                        // TCP data offset 0
		ipv4Packet(6, tcpSegment(0x02, 15), nil),                                                       // TCP data offset past the end
		ipv4Packet(6, tcpSegment(0x3f, 5), nil),                                                        // every flag
		ipv4Packet(6, []byte{1, 2, 3}, nil),                                                            // truncated TCP
		ipv4Packet(17, udpDatagram(4), nil),                                                            // UDP length below 8
		ipv4Packet(17, udpDatagram(900), nil),                                                          // UDP length too long
		ipv4Packet(17, udpDatagram(12), nil),                                                           // bad UDP checksum
		ipv4Packet(17, []byte{1, 2}, nil),                                                              // truncated UDP
		ipv4Packet(6, tcpSegment(0x02, 5), func(h []byte) { h[6] = 0x20 }),                             // a fragment that never completes
		ipv6Packet(6, tcpSegment(0x02, 5), func(h []byte) { binary.BigEndian.PutUint16(h[4:], 4000) }), // payload length too long
		ipv6Packet(6, tcpSegment(0x02, 5), func(h []byte) { binary.BigEndian.PutUint16(h[4:], 3) }),    // payload length too short
		ipv6Packet(6, tcpSegment(0x02, 5), nil),                                                        // bad TCP checksum
		ipv6Packet(17, udpDatagram(3), nil),                                                            // bad UDP length
		ipv6Packet(0, []byte{6, 200, 0, 0}, nil),                                                       // hop-by-hop header past the end
		ipv6Packet(44, []byte{6, 0, 0, 1}, nil),                                                        // truncated fragment header
	}
	for i := 0; i < 2000; i++ {
		b := make([]byte, 1+r.IntN(200))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if i%2 == 0 {
			b[0] = 0x45
		} else {
			b[0] = 0x60
		}
		pkts = append(pkts, b)
	}
	return pkts
}

// 9. Garbage from the kernel side: malformed IPv4, IPv6, TCP and UDP
// packets written into the TUN neither crash nor stall the stack, and
// valid traffic continues.
func TestGarbageFromKernelSide(t *testing.T) {
	e := newEnv(t, rangeCfg("40000-40009", ""), 0)
	seen := echoOnceServer(t, e.kernelListen(t, "tcp4", "198.18.0.1:7"))
	dst := netip.MustParseAddrPort("198.18.0.1:7")
	if _, err := cycle(t, e.st, dst); err != nil {
		t.Fatalf("before garbage: %v", err)
	}
	<-seen
	link, err := e.ns.Handle().LinkByName(e.dev.Name())
	if err != nil {
		t.Fatal(err)
	}
	ifindex := link.Attrs().Index
	before := e.st.GVisor().Stats()
	devBefore := e.dev.Stats().ChecksumErrors
	malformedBefore := before.IP.MalformedPacketsReceived.Value() + before.TCP.ChecksumErrors.Value() + before.UDP.ChecksumErrors.Value() + before.UDP.MalformedPacketsReceived.Value() + before.TCP.InvalidSegmentsReceived.Value() + devBefore
	var sent int
	err = e.ns.Do(func() error {
		// A packet socket on the TUN device hands its bytes to the device
		// as they are, with no checks by the kernel.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		r := rand.New(rand.NewPCG(7, 9))
		for _, p := range garbage(r) {
			proto := uint16(unix.ETH_P_IP)
			if len(p) > 0 && p[0]>>4 == 6 {
				proto = unix.ETH_P_IPV6
			}
			sa := &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: htons(proto)}
			if err := unix.Sendto(fd, p, 0, sa); err == nil {
				sent++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("injecting: %v", err)
	}
	if sent < 2000 {
		t.Fatalf("only %d malformed packets sent", sent)
	}
	// Valid traffic continues, with ports still in order.
	for i := 1; i < 4; i++ {
		port, err := cycle(t, e.st, dst)
		if err != nil {
			t.Fatalf("after garbage: %v", err)
		}
		if got := <-seen; got != uint16(40000+i) || port != got {
			t.Fatalf("after garbage: port %d (kernel saw %d), want %d", port, got, 40000+i)
		}
		waitFree(t, e.st, portalloc.TCP, port)
	}
	after := e.st.GVisor().Stats()
	devAfter := e.dev.Stats().ChecksumErrors
	malformedAfter := after.IP.MalformedPacketsReceived.Value() + after.TCP.ChecksumErrors.Value() + after.UDP.ChecksumErrors.Value() + after.UDP.MalformedPacketsReceived.Value() + after.TCP.InvalidSegmentsReceived.Value() + devAfter
	if malformedAfter-malformedBefore < 10 {
		t.Errorf("the stack counted only %d malformed packets of %d sent; did they reach it?", malformedAfter-malformedBefore, sent)
	}
	// A packet socket's packets reach the reader with no virtio flags, so
	// it verifies their checksums itself: at least the bad IPv4 header,
	// TCP (v4 and v6) and UDP checksums above are its to count.
	if e.dev.Offload() && devAfter-devBefore < 4 {
		t.Errorf("the device counted %d checksum errors, want at least 4", devAfter-devBefore)
	}
	t.Logf("sent %d malformed packets; the stack counted %d as malformed (%d checksum errors at the device)", sent, malformedAfter-malformedBefore, devAfter-devBefore)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
