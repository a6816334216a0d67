package stack

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// dualInterceptPair is interceptPair with IPv6 addresses too.
func dualInterceptPair(t *testing.T) (client, gw *Stack) {
	t.Helper()
	client, gw, _ = newInterceptPair(t, []string{"198.18.0.1/24", "fd00::1/64"}, []string{"198.18.0.2/24", "fd00::2/64"})
	return client, gw
}

// TestHandleUDPRefusedUnreachable checks that a refused flow, and one
// whose handler panics, fail the client's connected socket with
// ECONNREFUSED (the ICMP port unreachable reached it), in both families.
func TestHandleUDPRefusedUnreachable(t *testing.T) {
	client, gw := dualInterceptPair(t)
	if err := gw.HandleUDP(func(r *UDPRequest) {
		if r.Dst.Port() == 54 {
			panic("udp handler bug")
		}
		r.Refuse()
	}); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"203.0.113.9:53", "203.0.113.9:54", "[2001:db8::9]:53", "[2001:db8::9]:54"} {
		u, err := client.DialUDPAddrPort(netip.AddrPort{}, netip.MustParseAddrPort(dst))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Write([]byte("anyone there?")); err != nil {
			t.Fatalf("%s: write: %v", dst, err)
		}
		u.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := u.Read(make([]byte, 100)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s: read after a refusal = %v, want ECONNREFUSED", dst, err)
		}
		u.Close()
	}
}

// TestPortUnreachableRules checks when no ICMP error may be sent, and the
// message sent otherwise.
func TestPortUnreachableRules(t *testing.T) {
	_, gw := dualInterceptPair(t)
	datagram := func(src, dst netip.Addr, payload int) *gvstack.PacketBuffer {
		udp := make([]byte, header.UDPMinimumSize+payload)
		header.UDP(udp).Encode(&header.UDPFields{SrcPort: 40000, DstPort: 53, Length: uint16(len(udp))})
		proto, hdr := header.IPv4ProtocolNumber, make([]byte, header.IPv4MinimumSize)
		if src.Is6() {
			proto, hdr = header.IPv6ProtocolNumber, make([]byte, header.IPv6MinimumSize)
		}
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(append(hdr, udp...))})
		pkt.NetworkProtocolNumber = proto
		pkt.NetworkHeader().Consume(len(hdr))
		pkt.TransportHeader().Consume(header.UDPMinimumSize)
		return pkt
	}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
		want     bool
	}{
		{"v4 unicast", a("198.18.0.2"), a("203.0.113.9"), true},
		{"v6 unicast", a("fd00::2"), a("2001:db8::9"), true},
		{"v4 to multicast", a("198.18.0.2"), a("224.0.0.251"), false},
		{"v4 to broadcast", a("198.18.0.2"), a("255.255.255.255"), false},
		{"v4 to the subnet's broadcast", a("198.18.0.2"), a("198.18.0.255"), false},
		{"v6 to multicast", a("fd00::2"), a("ff02::fb"), false},
		{"v4 from unspecified", a("0.0.0.0"), a("203.0.113.9"), false},
		{"v4 from multicast", a("224.0.0.1"), a("203.0.113.9"), false},
		{"v6 from unspecified", a("::"), a("2001:db8::9"), false},
		{"v6 from multicast", a("ff02::1"), a("2001:db8::9"), false},
	} {
		pkt := datagram(tc.src, tc.dst, 8)
		if got := gw.portUnreachable(pkt, tc.src, tc.dst); got != tc.want {
			t.Errorf("%s: sent = %v, want %v", tc.name, got, tc.want)
		}
		pkt.DecRef()
	}
}
