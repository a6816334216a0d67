//go:build linux

package ustacktest

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// packet builds an IPv4 or IPv6 packet from src to dst carrying a TCP
// segment (with flags and seq) or, for udp, a UDP datagram.
func packet(src, dst netip.AddrPort, udp bool, flags header.TCPFlags, seq uint32) []byte {
	var l4 []byte
	proto := header.TCPProtocolNumber
	if udp {
		proto = header.UDPProtocolNumber
		l4 = make([]byte, header.UDPMinimumSize+1)
		header.UDP(l4).Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(l4))})
	} else {
		l4 = make([]byte, header.TCPMinimumSize)
		header.TCP(l4).Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, Flags: flags, DataOffset: header.TCPMinimumSize, WindowSize: 1000})
	}
	if src.Addr().Is4() {
		b := make([]byte, header.IPv4MinimumSize+len(l4))
		header.IPv4(b).Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(proto),
			SrcAddr: tcpip.AddrFrom4(src.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4())})
		copy(b[header.IPv4MinimumSize:], l4)
		return b
	}
	b := make([]byte, header.IPv6MinimumSize+len(l4))
	header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(len(l4)), TransportProtocol: proto, HopLimit: 64,
		SrcAddr: tcpip.AddrFrom16(src.Addr().As16()), DstAddr: tcpip.AddrFrom16(dst.Addr().As16())})
	copy(b[header.IPv6MinimumSize:], l4)
	return b
}

func see(w *wire, b []byte, out bool) {
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	defer pkt.DecRef()
	w.see(pkt, out)
}

// TestWireSeesPorts feeds the wire handshakes and datagrams in both
// families, a retransmitted SYN-ACK and packets it must ignore, and
// checks the ports it reports.
func TestWireSeesPorts(t *testing.T) {
	w := newWire(channel.New(1, 1500, ""), 1500, true)
	syn, synack := header.TCPFlagSyn, header.TCPFlagSyn|header.TCPFlagAck
	for _, fam := range []struct{ server, client netip.Addr }{
		{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")},
		{netip.MustParseAddr("fd00:18::1"), netip.MustParseAddr("fd00:18::2")},
	} {
		server := netip.AddrPortFrom(fam.server, 80)
		c := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(fam.client, port) }
		see(w, packet(c(40000), server, false, syn, 1), true)
		see(w, packet(server, c(40000), false, synack, 100), false)
		see(w, packet(server, c(40000), false, synack, 100), false) // retransmitted
		see(w, packet(server, c(40001), false, synack, 200), false)
		see(w, packet(server, c(40001), false, header.TCPFlagAck, 201), false) // not a handshake
		see(w, packet(server, c(40000), false, synack, 300), false)            // port reused
		see(w, packet(c(40002), server, false, synack, 5), true)               // from the stack: not the server's
		if diff := cmp.Diff([]uint16{40000, 40001, 40000}, w.tcpPorts(server)); diff != "" {
			t.Errorf("%s: TCP ports (-want +got):\n%s", fam.server, diff)
		}
		dns := netip.AddrPortFrom(fam.server, 53)
		see(w, packet(c(40005), dns, true, 0, 0), true)
		see(w, packet(c(40005), dns, true, 0, 0), true)
		see(w, packet(dns, c(40005), true, 0, 0), false) // the reply
		see(w, packet(c(40006), dns, true, 0, 0), true)
		if diff := cmp.Diff([]uint16{40005, 40005, 40006}, w.udpPorts(dns)); diff != "" {
			t.Errorf("%s: UDP ports (-want +got):\n%s", fam.server, diff)
		}
	}
	see(w, []byte{0x45, 0, 0}, true) // truncated: captured, not parsed
	if got := w.tcpPorts(netip.MustParseAddrPort("198.18.0.9:80")); got != nil {
		t.Errorf("ports of a server nobody dialled: %v", got)
	}
}

// TestWirePcap checks the capture's format, byte by byte where it is
// fixed, and its bound.
func TestWirePcap(t *testing.T) {
	w := newWire(channel.New(1, 1500, ""), 1500, true)
	a := netip.MustParseAddrPort("198.18.0.2:40000")
	b := netip.MustParseAddrPort("198.18.0.1:80")
	p1 := packet(a, b, false, header.TCPFlagSyn, 1)
	p2 := packet(b, a, true, 0, 0)
	see(w, p1, true)
	see(w, p2, false)
	var out bytes.Buffer
	if err := w.writePcap(&out); err != nil {
		t.Fatal(err)
	}
	f := out.Bytes()
	le := binary.LittleEndian
	if got := []uint32{le.Uint32(f[0:]), uint32(le.Uint16(f[4:])), uint32(le.Uint16(f[6:])), le.Uint32(f[16:]), le.Uint32(f[20:])}; !cmp.Equal(got, []uint32{0xa1b2c3d4, 2, 4, 1500, 101}) {
		t.Errorf("file header (magic, version, snap, link type) = %x", got)
	}
	rec := f[24:]
	for i, p := range [][]byte{p1, p2} {
		incl, orig := int(le.Uint32(rec[8:])), int(le.Uint32(rec[12:]))
		if incl != len(p) || orig != len(p) || !bytes.Equal(rec[16:16+incl], p) {
			t.Errorf("record %d: lengths %d/%d, want %d, data equal %v", i, incl, orig, len(p), bytes.Equal(rec[16:16+incl], p))
		}
		rec = rec[16+incl:]
	}
	if len(rec) != 0 {
		t.Errorf("%d bytes after the last record", len(rec))
	}

	// Past the bound, packets are left out and counted.
	w = newWire(channel.New(1, 1500, ""), 1500, true)
	w.limit = 2 * (16 + len(p1))
	for range 5 {
		see(w, p1, true)
	}
	out.Reset()
	err := w.writePcap(&out)
	if err == nil || !strings.Contains(err.Error(), "3 later packets left out") {
		t.Errorf("writePcap past the bound: %v, want 3 packets left out", err)
	}
	if want := 24 + 2*(16+len(p1)); out.Len() != want {
		t.Errorf("pcap past the bound has %d bytes, want %d (two packets)", out.Len(), want)
	}

	// A snap length shorter than a packet keeps its head and its length.
	w = newWire(channel.New(1, 1500, ""), 20, true)
	see(w, p1, true)
	out.Reset()
	if err := w.writePcap(&out); err != nil {
		t.Fatal(err)
	}
	r := out.Bytes()[24:]
	if incl, orig := le.Uint32(r[8:]), le.Uint32(r[12:]); incl != 20 || int(orig) != len(p1) || len(r) != 16+20 {
		t.Errorf("snapped record: incl %d orig %d len %d; want 20, %d, 36", incl, orig, len(r), len(p1))
	}

	// Without capture, nothing is kept but ports are still seen, from
	// the headers alone, also of packets longer than the headers read.
	w = newWire(channel.New(1, 1500, ""), 1500, false)
	see(w, packet(b, a, false, header.TCPFlagSyn|header.TCPFlagAck, 7), false)
	big := packet(a, b, true, 0, 0)
	big = append(big, make([]byte, 1000)...)
	header.IPv4(big).SetTotalLength(uint16(len(big)))
	header.UDP(big[header.IPv4MinimumSize:]).SetLength(uint16(len(big) - header.IPv4MinimumSize))
	see(w, big, true)
	if len(w.records) != 0 || !cmp.Equal(w.tcpPorts(b), []uint16{40000}) || !cmp.Equal(w.udpPorts(b), []uint16{40000}) {
		t.Errorf("without capture: %d bytes kept, TCP ports %v, UDP ports %v", len(w.records), w.tcpPorts(b), w.udpPorts(b))
	}
}
