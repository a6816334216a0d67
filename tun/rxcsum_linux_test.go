package tun

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	csumSrc4 = netip.MustParseAddr("198.18.0.1")
	csumDst4 = netip.MustParseAddr("198.18.0.2")
	csumSrc6 = netip.MustParseAddr("fd00::1")
	csumDst6 = netip.MustParseAddr("fd00::2")
)

// l4 builds a TCP segment or UDP datagram from port 1 to port 2 with
// payload and a right checksum for the given addresses.
func l4(proto uint8, src, dst netip.Addr, payload []byte) []byte {
	return l4Ports(proto, netip.AddrPortFrom(src, 1), netip.AddrPortFrom(dst, 2), payload)
}

// l4Ports builds a TCP segment or UDP datagram with payload and a right
// checksum (computed with gVisor's header package, not the code under
// test) from src to dst.
func l4Ports(proto uint8, srcAP, dstAP netip.AddrPort, payload []byte) []byte {
	src, dst := srcAP.Addr(), dstAP.Addr()
	switch proto {
	case uint8(header.TCPProtocolNumber):
		b := make([]byte, header.TCPMinimumSize+len(payload))
		tcp := header.TCP(b)
		tcp.Encode(&header.TCPFields{SrcPort: srcAP.Port(), DstPort: dstAP.Port(), SeqNum: 3, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 1000})
		copy(b[header.TCPMinimumSize:], payload)
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, addr(src), addr(dst), uint16(len(b)))
		tcp.SetChecksum(^checksum.Checksum(b, xsum))
		return b
	default:
		b := make([]byte, header.UDPMinimumSize+len(payload))
		udp := header.UDP(b)
		udp.Encode(&header.UDPFields{SrcPort: srcAP.Port(), DstPort: dstAP.Port(), Length: uint16(len(b))})
		copy(b[header.UDPMinimumSize:], payload)
		xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, addr(src), addr(dst), uint16(len(b)))
		udp.SetChecksum(^udp.CalculateChecksum(checksum.Checksum(payload, xsum)))
		return b
	}
}

func ip4(proto uint8, l4 []byte, flagsFrag uint16) []byte {
	return ip4From(csumSrc4, csumDst4, proto, l4, flagsFrag)
}

// ip4From builds an IPv4 packet from src to dst around l4, with a right
// header checksum.
func ip4From(src, dst netip.Addr, proto uint8, l4 []byte, flagsFrag uint16) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(l4))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: proto,
		SrcAddr: addr(src), DstAddr: addr(dst),
	})
	binary.BigEndian.PutUint16(b[6:], flagsFrag)
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], l4)
	return b
}

// ext is an IPv6 extension header of type typ; its first byte (next
// header) is filled in by ip6.
type ext struct {
	typ uint8
	b   []byte
}

// ip6 builds an IPv6 packet whose upper layer is l4 (protocol proto),
// after the extension headers exts.
func ip6(proto uint8, l4 []byte, exts ...ext) []byte {
	next := proto
	var payload []byte
	for i := len(exts) - 1; i >= 0; i-- {
		e := append([]byte(nil), exts[i].b...)
		e[0] = next
		payload = append(e, payload...)
		next = exts[i].typ
	}
	payload = append(payload, l4...)
	b := make([]byte, header.IPv6MinimumSize+len(payload))
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength: uint16(len(payload)), HopLimit: 64,
		SrcAddr: addr(csumSrc6), DstAddr: addr(csumDst6),
	})
	b[6] = next
	copy(b[header.IPv6MinimumSize:], payload)
	return b
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x10
	return c
}

// TestVerifyChecksums checks what the offload reader verifies itself,
// with the packet split between head and tail at every offset.
func TestVerifyChecksums(t *testing.T) {
	tcpN, udpN := uint8(header.TCPProtocolNumber), uint8(header.UDPProtocolNumber)
	odd := []byte("an odd-length payload, 37 bytes long!")
	even := make([]byte, 300)
	for i := range even {
		even[i] = byte(i * 7)
	}
	hop := ext{ipv6HopByHop, []byte{0, 0, 1, 4, 0, 0, 0, 0}}                           // 8 bytes: PadN
	dest := ext{ipv6DestOpts, []byte{0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} // 16 bytes: PadN
	frag := ext{ipv6Fragment, []byte{0, 0, 0, 0, 0, 0, 0, 1}}                          // offset 0, no MF: an atomic fragment

	tcp4 := ip4(tcpN, l4(tcpN, csumSrc4, csumDst4, odd), 0)
	udp4 := ip4(udpN, l4(udpN, csumSrc4, csumDst4, even), 0)
	udp4none := ip4(udpN, l4(udpN, csumSrc4, csumDst4, odd), 0)
	binary.BigEndian.PutUint16(udp4none[header.IPv4MinimumSize+6:], 0)
	tcp6 := ip6(tcpN, l4(tcpN, csumSrc6, csumDst6, even))
	udp6 := ip6(udpN, l4(udpN, csumSrc6, csumDst6, odd))
	udp6none := append([]byte(nil), udp6...)
	binary.BigEndian.PutUint16(udp6none[header.IPv6MinimumSize+6:], 0)
	tcp6ext := ip6(tcpN, l4(tcpN, csumSrc6, csumDst6, odd), hop, dest)
	padded := append(append([]byte(nil), tcp4...), 0xde, 0xad, 0xbe, 0xef) // bytes past the IPv4 total length
	frag4 := ip4(tcpN, flip(l4(tcpN, csumSrc4, csumDst4, odd), 30), 0x2000)
	frag6 := ip6(tcpN, flip(l4(tcpN, csumSrc6, csumDst6, odd), 30), frag)
	icmp := ip4(1, []byte{8, 0, 0xde, 0xad, 0, 1, 0, 1}, 0)
	badHdr := flip(tcp4, 8) // the TTL: the header checksum no longer adds up

	for _, tc := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"tcp4", tcp4, true},
		{"tcp4 payload corrupt", flip(tcp4, len(tcp4)-1), false},
		{"tcp4 header corrupt", flip(tcp4, header.IPv4MinimumSize+13), false},
		{"tcp4 checksum field corrupt", flip(tcp4, header.IPv4MinimumSize+16), false},
		{"tcp4 address corrupt (pseudo-header)", fixIPv4(flip(tcp4, 15)), false},
		{"ipv4 header checksum wrong", badHdr, false},
		{"udp4", udp4, true},
		{"udp4 corrupt", flip(udp4, 100), false},
		{"udp4 no checksum", udp4none, true},
		{"tcp6", tcp6, true},
		{"tcp6 corrupt", flip(tcp6, 200), false},
		{"tcp6 address corrupt", flip(tcp6, 20), false},
		{"udp6", udp6, true},
		{"udp6 corrupt", flip(udp6, len(udp6)-2), false},
		{"udp6 no checksum (forbidden)", udp6none, false},
		{"tcp6 after hop-by-hop and destination options", tcp6ext, true},
		{"tcp6 after extension headers, corrupt", flip(tcp6ext, len(tcp6ext)-1), false},
		{"padding past the IPv4 total length", padded, true},
		{"ipv4 fragment (unverifiable)", frag4, true},
		{"ipv6 fragment (unverifiable)", frag6, true},
		{"icmp (gVisor verifies)", icmp, true},
		{"truncated ipv4 (gVisor drops)", tcp4[:10], true},
		{"ipv4 total length past the end (gVisor drops)", tcp4[:len(tcp4)-5], true},
		{"truncated ipv6 (gVisor drops)", tcp6[:30], true},
		{"empty", nil, true},
	} {
		for at := 0; at <= len(tc.pkt); at++ {
			if got := verifyChecksums(tc.pkt[:at], tc.pkt[at:]); got != tc.want {
				t.Errorf("%s, split at %d: verifyChecksums = %v, want %v", tc.name, at, got, tc.want)
				break
			}
		}
	}
}

// fixIPv4 recomputes an IPv4 header checksum after a change to the header.
func fixIPv4(b []byte) []byte {
	ip := header.IPv4(b)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return b
}

// BenchmarkVerifyChecksums is the cost of the reader's own verification
// for a 1500-byte TCP segment, against gVisor's checksum of the same bytes.
func BenchmarkVerifyChecksums(b *testing.B) {
	tcpN := uint8(header.TCPProtocolNumber)
	pkt := ip4(tcpN, l4(tcpN, csumSrc4, csumDst4, make([]byte, 1460)), 0)
	b.Run("verify", func(b *testing.B) {
		b.SetBytes(int64(len(pkt)))
		for b.Loop() {
			if !verifyChecksums(pkt[:headBufSize], pkt[headBufSize:]) {
				b.Fatal("bad")
			}
		}
	})
	b.Run("baseline=checksum.Checksum", func(b *testing.B) {
		b.SetBytes(int64(len(pkt)))
		for b.Loop() {
			checksum.Checksum(pkt, 0)
		}
	})
}
