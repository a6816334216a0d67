//go:build linux

package sandbox

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ipv6Hdrs bounds the extension headers ipv6TCP walks through.
const ipv6Hdrs = 8

// ipv6TCP finds the TCP header of an IPv6 packet whose first next-header
// value is next and whose length is total, through hop-by-hop, routing
// and destination options headers and a fragment header. It returns the
// TCP header's offset and whether the packet is the first fragment of a
// fragmented datagram; ok is false if the packet does not carry a TCP
// header the relay can read: another protocol, a later fragment (no
// ports), a header running past the packet, or too many headers.
func ipv6TCP(pkt *gvstack.PacketBuffer, next uint8, total int) (off int, frag, ok bool) {
	off = header.IPv6MinimumSize
	for range ipv6Hdrs {
		switch header.IPv6ExtensionHeaderIdentifier(next) {
		case header.IPv6ExtensionHeaderIdentifier(header.TCPProtocolNumber):
			return off, frag, true
		case header.IPv6HopByHopOptionsExtHdrIdentifier, header.IPv6RoutingExtHdrIdentifier, header.IPv6DestinationOptionsExtHdrIdentifier:
			b, ok := pkt.Data().PullUp(off + 2)
			if !ok {
				return 0, false, false
			}
			next = b[off]
			off += (int(b[off+1]) + 1) * 8
		case header.IPv6FragmentExtHdrIdentifier:
			b, ok := pkt.Data().PullUp(off + 8)
			if !ok {
				return 0, false, false
			}
			fo := binary.BigEndian.Uint16(b[off+2:])
			if fo>>3 != 0 {
				return 0, false, false // a later fragment
			}
			// Offset 0 with more to come is a first fragment; with
			// none, an atomic fragment (RFC 6946): a whole segment.
			frag = fo&1 != 0
			next = b[off]
			off += 8
		default:
			return 0, false, false
		}
		if off > total {
			return 0, false, false
		}
	}
	return 0, false, false
}
