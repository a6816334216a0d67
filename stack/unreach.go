package stack

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// portUnreachable tells the sender of pkt, a UDP datagram from src to
// dst that no socket takes, that dst's port is closed: an ICMP
// destination unreachable, port unreachable (ICMPv6: code 4), from dst,
// quoting as much of the datagram as keeps the message within 576 bytes
// (IPv4) or 1280 (IPv6), as RFC 1812 and RFC 4443 ask. A connected
// socket of the sender's then fails with ECONNREFUSED, as it does against
// a host with no socket on the port.
//
// Nothing is sent about a datagram to a multicast or broadcast address or
// from an address that is not unicast (RFC 1122 3.2.2, RFC 4443 2.4(e)),
// nor beyond the stack's ICMP rate limit. It reports whether a message
// went out.
func (st *Stack) portUnreachable(pkt *gvstack.PacketBuffer, src, dst netip.Addr) bool {
	proto := pkt.NetworkProtocolNumber
	v4 := proto == header.IPv4ProtocolNumber
	if !src.IsValid() || !dst.IsValid() || src.Is4() != v4 || dst.Is4() != v4 ||
		src.IsUnspecified() || src.IsMulticast() || dst.IsMulticast() || dst.IsUnspecified() {
		return false
	}
	bcast := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if src == bcast || dst == bcast || (v4 && (st.s.IsSubnetBroadcast(nicID, proto, tcpAddr(dst)) || st.s.IsSubnetBroadcast(nicID, proto, tcpAddr(src)))) {
		return false
	}
	if !st.s.AllowICMPMessage() {
		return false
	}
	r, terr := st.s.FindRoute(nicID, tcpAddr(dst), tcpAddr(src), proto, false)
	if terr != nil {
		return false
	}
	defer r.Release()

	// The quote: the datagram from its IP header on, cut to size.
	limit := header.IPv6MinimumMTU - header.IPv6MinimumSize - header.ICMPv6DstUnreachableMinimumSize
	hdrLen := header.ICMPv6DstUnreachableMinimumSize
	if v4 {
		limit = header.IPv4MinimumProcessableDatagramSize - header.IPv4MinimumSize - header.ICMPv4MinimumSize
		hdrLen = header.ICMPv4MinimumSize
	}
	quote := make([]byte, 0, limit)
	for _, v := range [][]byte{pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice()} {
		quote = append(quote, v[:min(len(v), limit-len(quote))]...)
	}
	if len(quote) < limit {
		data := pkt.Data().AsRange().ToSlice()
		quote = append(quote, data[:min(len(data), limit-len(quote))]...)
	}

	out := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()) + hdrLen,
		Payload:            buffer.MakeWithData(quote),
	})
	defer out.DecRef()
	if v4 {
		h := header.ICMPv4(out.TransportHeader().Push(hdrLen))
		h.SetType(header.ICMPv4DstUnreachable)
		h.SetCode(header.ICMPv4PortUnreachable)
		h.SetChecksum(0)
		h.SetChecksum(^checksum.Checksum(h, checksum.Checksum(quote, 0)))
		out.TransportProtocolNumber = header.ICMPv4ProtocolNumber
	} else {
		h := header.ICMPv6(out.TransportHeader().Push(hdrLen))
		h.SetType(header.ICMPv6DstUnreachable)
		h.SetCode(header.ICMPv6PortUnreachable)
		h.SetChecksum(0)
		h.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header:      h,
			Src:         tcpAddr(dst),
			Dst:         tcpAddr(src),
			PayloadCsum: checksum.Checksum(quote, 0),
			PayloadLen:  len(quote),
		}))
		out.TransportProtocolNumber = header.ICMPv6ProtocolNumber
	}
	params := gvstack.NetworkHeaderParams{Protocol: out.TransportProtocolNumber, TTL: r.DefaultTTL(), TOS: gvstack.DefaultTOS}
	return r.WritePacket(params, out) == nil
}
