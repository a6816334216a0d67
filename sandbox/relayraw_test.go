//go:build linux

package sandbox

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// packet builds an IPv4 packet of protocol proto from src to dst, with
// the transport header and payload in l4 (its checksum is set).
func packet(proto tcpip.TransportProtocolNumber, src, dst netip.AddrPort, l4 []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(l4))
	sa, da := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(proto), SrcAddr: sa, DstAddr: da, Flags: header.IPv4FlagDontFragment})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], l4)
	xsum := header.PseudoHeaderChecksum(proto, sa, da, uint16(len(l4)))
	xsum = ^checksum.Checksum(b[header.IPv4MinimumSize:], xsum)
	if proto == header.TCPProtocolNumber {
		header.TCP(b[header.IPv4MinimumSize:]).SetChecksum(xsum)
	} else {
		header.UDP(b[header.IPv4MinimumSize:]).SetChecksum(xsum)
	}
	return b
}

// A SYN or a datagram from outside the guest's networks takes no flow,
// not even gVisor's, and is counted as denied: the relay and the UDP
// path share the Gateway's admission.
func TestRelaySpoofedSource(t *testing.T) {
	ch := channel.New(512, 1500, "")
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(netip.MustParseAddr("10.0.2.2"), uint16(l.Addr().(*net.TCPAddr).Port))
	cfg := Config{Link: ch, DNSUpstream: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")},
		Logger: slog.New(slog.DiscardHandler)}
	cfg.Policy.AllowHostLoopback = true
	gw, err := NewGateway(cfg)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close(); l.Close(); ch.Close() })
	if gw.relay == nil {
		t.Fatal("no relay on a channel link")
	}
	inject := func(b []byte) {
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		ch.InjectInbound(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
	}
	syn := func(src netip.AddrPort) []byte {
		t := make(header.TCP, header.TCPMinimumSize)
		t.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
		return packet(header.TCPProtocolNumber, src, dst, t)
	}
	before := gw.Stats().Denied
	for i, src := range []string{"192.0.2.1:40012", "10.0.3.7:40013", "10.0.2.2:40014"} {
		inject(syn(netip.MustParseAddrPort(src)))
		if s := gw.Stats(); s.Denied != before+uint64(i+1) || s.Live != 0 || gw.relay.Flows() != 0 {
			t.Errorf("SYN from %s: stats %+v, relay flows %d; want it denied and no flow", src, s, gw.relay.Flows())
		}
	}
	// UDP takes the same admission.
	udpFrom := func(src netip.AddrPort) []byte {
		u := make(header.UDP, header.UDPMinimumSize+4)
		u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(u))})
		return packet(header.UDPProtocolNumber, src, dst, u)
	}
	before = gw.Stats().Denied
	inject(udpFrom(netip.MustParseAddrPort("192.0.2.1:40020")))
	if s := gw.Stats(); s.Denied != before+1 || s.UDPFlows != 0 {
		t.Errorf("UDP from 192.0.2.1: stats %+v; want it denied and no flow", s)
	}
	// The guest's own address still works: the handshake completes, and
	// the host accepts the connection.
	guest := netip.MustParseAddrPort("10.0.2.100:40015")
	inject(syn(guest))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sa header.TCP
	for sa == nil {
		pkt := ch.ReadContext(ctx)
		if pkt == nil {
			t.Fatal("no answer to the guest's SYN in 10 s")
		}
		b := pkt.ToView().ToSlice()
		pkt.DecRef()
		if header.IPVersion(b) == header.IPv4Version && header.IPv4(b).Protocol() == uint8(header.TCPProtocolNumber) {
			sa = header.TCP(header.IPv4(b).Payload())
		}
	}
	if sa.Flags() != header.TCPFlagSyn|header.TCPFlagAck || sa.AckNumber() != 2 || sa.DestinationPort() != guest.Port() {
		t.Fatalf("answer to the guest's SYN: %s ack %d to port %d, want a SYN-ACK of 2 to %d", sa.Flags(), sa.AckNumber(), sa.DestinationPort(), guest.Port())
	}
	ack := make(header.TCP, header.TCPMinimumSize)
	ack.Encode(&header.TCPFields{SrcPort: guest.Port(), DstPort: dst.Port(), SeqNum: 2, AckNum: sa.SequenceNumber() + 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 65535})
	inject(packet(header.TCPProtocolNumber, guest, dst, ack))
	l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
