package stack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

var (
	echoLocal4  = netip.MustParseAddr("198.18.0.2")
	echoPeer4   = netip.MustParseAddr("198.18.0.1")
	echoLocal6  = netip.MustParseAddr("fd00::2")
	echoPeer6   = netip.MustParseAddr("fd00::1")
	echoPayload = []byte("ustack echo fast path")
)

// newEchoStack makes a stack over a channel link (bare IP packets, as a
// TUN device carries) whose inbound packets the test injects.
func newEchoStack(t *testing.T) (*Stack, *channel.Endpoint) {
	t.Helper()
	link := channel.New(64, 1500, "")
	st, err := New(Config{Link: link, Addrs: []netip.Prefix{
		netip.PrefixFrom(echoLocal4, 24), netip.PrefixFrom(echoLocal6, 64)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(); link.Close() })
	return st, link
}

// echoReplyPacket builds an IPv4 or IPv6 packet carrying an echo reply
// with valid checksums; edit, if not nil, changes the ICMP message before
// its checksum is computed, and fix changes the whole packet after.
func echoReplyPacket(src, dst netip.Addr, id, seq uint16, edit func(icmp []byte), fix func(pkt []byte) []byte) []byte {
	icmp := make([]byte, 8+len(echoPayload))
	if src.Is4() {
		icmp[0] = byte(header.ICMPv4EchoReply)
	} else {
		icmp[0] = byte(header.ICMPv6EchoReply)
	}
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], echoPayload)
	if edit != nil {
		edit(icmp)
	}
	var pkt []byte
	if src.Is4() {
		binary.BigEndian.PutUint16(icmp[2:], ^checksum.Checksum(icmp, 0))
		pkt = make([]byte, header.IPv4MinimumSize+len(icmp))
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt)),
			TTL:         64,
			Protocol:    uint8(header.ICMPv4ProtocolNumber),
			SrcAddr:     tcpip.AddrFrom4(src.As4()),
			DstAddr:     tcpip.AddrFrom4(dst.As4()),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(pkt[header.IPv4MinimumSize:], icmp)
	} else {
		s, d := tcpip.AddrFrom16(src.As16()), tcpip.AddrFrom16(dst.As16())
		sum := header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, s, d, uint16(len(icmp)))
		binary.BigEndian.PutUint16(icmp[2:], ^checksum.Checksum(icmp, sum))
		pkt = make([]byte, header.IPv6MinimumSize+len(icmp))
		header.IPv6(pkt).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(len(icmp)),
			TransportProtocol: header.ICMPv6ProtocolNumber,
			HopLimit:          64,
			SrcAddr:           s,
			DstAddr:           d,
		})
		copy(pkt[header.IPv6MinimumSize:], icmp)
	}
	if fix != nil {
		pkt = fix(pkt)
	}
	return pkt
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return header.IPv4ProtocolNumber
	}
	return header.IPv6ProtocolNumber
}

// deliverFast offers b to the stack's echo fast path, as a TUN device's
// reader does, and reports whether it took it.
func deliverFast(st *Stack, proto tcpip.NetworkProtocolNumber, b []byte) bool {
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	defer pkt.DecRef()
	return st.echo.DeliverInline(proto, pkt)
}

// deliverStack hands b to gVisor, as a link without inline delivery does.
func deliverStack(link *channel.Endpoint, proto tcpip.NetworkProtocolNumber, b []byte) {
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	link.InjectInbound(proto, pkt)
	pkt.DecRef()
}

func readReply(t *testing.T, c *PingConn) ([]byte, netip.Addr) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := c.ReadFromAddr(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf[:n], from
}

// TestEchoFastPathMatchesStack checks that a reply taken on the link's
// reader reads exactly as the same reply delivered through gVisor does,
// for connected and unbound sockets of both families.
func TestEchoFastPathMatchesStack(t *testing.T) {
	st, link := newEchoStack(t)
	for _, tc := range []struct {
		name        string
		local, peer netip.Addr
		dial        bool
	}{
		{"ping4 dialled", echoLocal4, echoPeer4, true},
		{"ping4 unbound", echoLocal4, echoPeer4, false},
		{"ping6 dialled", echoLocal6, echoPeer6, true},
		{"ping6 unbound", echoLocal6, echoPeer6, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *PingConn
			var err error
			if tc.dial {
				c, err = st.DialPingAddr(netip.Addr{}, tc.peer)
			} else {
				c, err = st.ListenPingAddr(pingNetwork(tc.peer), netip.Addr{})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			pkt := echoReplyPacket(tc.peer, tc.local, c.ID(), 1, nil, nil)
			deliverStack(link, protoOf(tc.peer), pkt)
			viaStack, fromStack := readReply(t, c)
			if !deliverFast(st, protoOf(tc.peer), pkt) {
				t.Fatal("the fast path declined a valid reply")
			}
			viaFast, fromFast := readReply(t, c)
			if !bytes.Equal(viaStack, viaFast) || fromStack != fromFast {
				t.Errorf("fast path read %x from %v; gVisor's path read %x from %v", viaFast, fromFast, viaStack, fromStack)
			}
			if !bytes.HasSuffix(viaFast, echoPayload) {
				t.Errorf("reply %x does not end in the payload", viaFast)
			}
		})
	}
}

// TestEchoFastPathDeclines checks that the fast path leaves to gVisor
// every packet it must not take, and that a connected socket skips a
// taken reply from another peer.
func TestEchoFastPathDeclines(t *testing.T) {
	st, _ := newEchoStack(t)
	c4, err := st.DialPingAddr(netip.Addr{}, echoPeer4)
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	c6, err := st.DialPingAddr(netip.Addr{}, echoPeer6)
	if err != nil {
		t.Fatal(err)
	}
	defer c6.Close()
	id4, id6 := c4.ID(), c6.ID()
	breakByte := func(off int) func([]byte) []byte {
		return func(p []byte) []byte { p[off] ^= 0x40; return p }
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"v4 header checksum", echoReplyPacket(echoPeer4, echoLocal4, id4, 1, nil, breakByte(10))},
		{"v4 ICMP checksum", echoReplyPacket(echoPeer4, echoLocal4, id4, 1, nil, breakByte(30))},
		{"v4 more fragments", echoReplyPacket(echoPeer4, echoLocal4, id4, 1, nil, func(p []byte) []byte {
			p[6] |= 0x20
			header.IPv4(p).SetChecksum(0)
			header.IPv4(p).SetChecksum(^header.IPv4(p).CalculateChecksum())
			return p
		})},
		{"v4 options", echoReplyPacket(echoPeer4, echoLocal4, id4, 1, nil, func(p []byte) []byte {
			q := append(append(append([]byte(nil), p[:20]...), 1, 1, 1, 0), p[20:]...) // four NOPs/EOL
			q[0] = 0x46
			binary.BigEndian.PutUint16(q[2:], uint16(len(q)))
			header.IPv4(q).SetChecksum(0)
			header.IPv4(q).SetChecksum(^header.IPv4(q).CalculateChecksum())
			return q
		})},
		{"v4 truncated", echoReplyPacket(echoPeer4, echoLocal4, id4, 1, nil, func(p []byte) []byte { return p[:len(p)-4] })},
		{"v4 not our address", echoReplyPacket(echoPeer4, netip.MustParseAddr("198.18.0.9"), id4, 1, nil, nil)},
		{"v4 broadcast source", echoReplyPacket(netip.MustParseAddr("255.255.255.255"), echoLocal4, id4, 1, nil, nil)},
		{"v4 multicast source", echoReplyPacket(netip.MustParseAddr("224.0.0.1"), echoLocal4, id4, 1, nil, nil)},
		{"v4 unknown identifier", echoReplyPacket(echoPeer4, echoLocal4, id4+100, 1, nil, nil)},
		{"v4 echo request", echoReplyPacket(echoPeer4, echoLocal4, id4, 1, func(m []byte) { m[0] = byte(header.ICMPv4Echo) }, nil)},
		{"v4 code not 0", echoReplyPacket(echoPeer4, echoLocal4, id4, 1, func(m []byte) { m[1] = 1 }, nil)},
		{"v6 ICMP checksum", echoReplyPacket(echoPeer6, echoLocal6, id6, 1, nil, breakByte(50))},
		{"v6 extension header", echoReplyPacket(echoPeer6, echoLocal6, id6, 1, nil, func(p []byte) []byte {
			q := append(append(append([]byte(nil), p[:40]...), 58, 0, 1, 4, 0, 0, 0, 0), p[40:]...) // hop-by-hop, PadN
			q[6] = 0
			binary.BigEndian.PutUint16(q[4:], uint16(len(q)-40))
			return q
		})},
		{"v6 not our address", echoReplyPacket(echoPeer6, netip.MustParseAddr("fd00::9"), id6, 1, nil, nil)},
		{"v6 multicast source", echoReplyPacket(netip.MustParseAddr("ff02::1"), echoLocal6, id6, 1, nil, nil)},
		{"v6 unknown identifier", echoReplyPacket(echoPeer6, echoLocal6, id6+100, 1, nil, nil)},
		{"v4 reply to a ping6 identifier", echoReplyPacket(echoPeer4, echoLocal4, id6, 1, nil, nil)},
	} {
		proto := header.IPv4ProtocolNumber
		if tc.pkt[0]>>4 == 6 {
			proto = header.IPv6ProtocolNumber
		}
		if deliverFast(st, proto, tc.pkt) {
			t.Errorf("%s: taken by the fast path", tc.name)
		}
	}
	// A ping6 packet labelled IPv4 by the link, and the reverse.
	if deliverFast(st, header.IPv4ProtocolNumber, echoReplyPacket(echoPeer6, echoLocal6, id6, 1, nil, nil)) {
		t.Error("an IPv6 packet given as IPv4 was taken")
	}
	// A connected socket skips another peer's reply, then reads its own.
	if !deliverFast(st, header.IPv4ProtocolNumber, echoReplyPacket(netip.MustParseAddr("198.18.0.7"), echoLocal4, id4, 1, nil, nil)) {
		t.Fatal("a reply from another peer to a held identifier was declined")
	}
	if !deliverFast(st, header.IPv4ProtocolNumber, echoReplyPacket(echoPeer4, echoLocal4, id4, 2, nil, nil)) {
		t.Fatal("a valid reply was declined")
	}
	b, from := readReply(t, c4)
	if from != echoPeer4 || binary.BigEndian.Uint16(b[6:]) != 2 {
		t.Errorf("read sequence %d from %v, want 2 from %v", binary.BigEndian.Uint16(b[6:]), from, echoPeer4)
	}
	// Nothing else is queued: the declined packets went nowhere here.
	c4.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := c4.ReadFromAddr(make([]byte, 1500)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("second read: %v, want a timeout", err)
	}
}

// TestEchoFastPathLifecycle checks that a closed socket's identifier and a
// removed address are no longer taken, and that the queue is bounded.
func TestEchoFastPathLifecycle(t *testing.T) {
	st, _ := newEchoStack(t)
	c, err := st.DialPingAddr(netip.Addr{}, echoPeer4)
	if err != nil {
		t.Fatal(err)
	}
	id := c.ID()
	reply := echoReplyPacket(echoPeer4, echoLocal4, id, 1, nil, nil)
	// Nobody reads: the queue stops at the receive buffer's size.
	limit, msgLen := c.inbox.limit, len(reply)-header.IPv4MinimumSize
	for range limit/msgLen + 10 {
		if !deliverFast(st, header.IPv4ProtocolNumber, reply) {
			t.Fatal("declined a valid reply")
		}
	}
	c.inbox.mu.Lock()
	held, n := c.inbox.bytes, len(c.inbox.q)-c.inbox.head
	c.inbox.mu.Unlock()
	if held > limit+msgLen || held < limit {
		t.Errorf("queue holds %d bytes in %d replies; want the limit %d, plus one reply at most", held, n, limit)
	}
	c.Close()
	if deliverFast(st, header.IPv4ProtocolNumber, reply) {
		t.Error("a reply to a closed socket's identifier was taken")
	}
	if st.echo.count.Load() != 0 {
		t.Errorf("%d sockets registered after Close", st.echo.count.Load())
	}

	c2, err := st.DialPingAddr(netip.Addr{}, echoPeer4)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	reply2 := echoReplyPacket(echoPeer4, echoLocal4, c2.ID(), 1, nil, nil)
	if !deliverFast(st, header.IPv4ProtocolNumber, reply2) {
		t.Fatal("declined a valid reply")
	}
	readReply(t, c2)
	if err := st.RemoveAddress(echoLocal4); err != nil {
		t.Fatal(err)
	}
	if deliverFast(st, header.IPv4ProtocolNumber, reply2) {
		t.Error("a reply to a removed address was taken")
	}
}

// etherLink is a link with an Ethernet header, as a TAP device is.
type etherLink struct{ *channel.Endpoint }

func (etherLink) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }
func (etherLink) MaxHeaderLength() uint16                 { return header.EthernetMinimumSize }

// TestEchoFastPathEthernet checks that the fast path stays out of links
// with link-layer headers.
func TestEchoFastPathEthernet(t *testing.T) {
	l := newEchoLink(etherLink{channel.New(1, 1500, "")})
	l.setLocal([]netip.Prefix{netip.PrefixFrom(echoLocal4, 24)})
	l.register(netip.Addr{}, false, 7, 1<<16)
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(echoReplyPacket(echoPeer4, echoLocal4, 7, 1, nil, nil))})
	defer pkt.DecRef()
	if l.DeliverInline(header.IPv4ProtocolNumber, pkt) {
		t.Error("took a packet from an Ethernet link")
	}
}
