//go:build linux

package tcprelay

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// seg is a parsed TCP segment from the guest.
type seg struct {
	key     relayKey
	v6      bool
	mac     tcpip.LinkAddress // the guest's, on an Ethernet link
	src     tcpip.Address     // key's addresses, as gVisor's header code takes them
	dst     tcpip.Address
	seq     seqnum.Value
	ack     seqnum.Value
	flags   header.TCPFlags
	wnd     uint32 // unscaled
	opts    []byte
	payload [][]byte // views of the packet, valid during take
	n       int      // payload length
}

// take handles pkt if it is the relay's, reporting whether it was: it
// parses the segment, asks the Gateway to admit a SYN of no flow, and
// hands the segment to its flow (input) or a new one (open).
func (r *Relay) take(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool {
	var s seg
	var ipLen, total int
	var src, dst tcpip.Address
	linkLen := 0 // the link header's bytes in front of the data, consumed
	if r.eth {
		// Frames to our MAC only: gVisor's business otherwise (a
		// promiscuous NIC sees the others too). The header is read
		// before any PullUp of the data: reading it may rearrange the
		// packet's views, and with them the slices PullUp returned.
		if pkt.PktType != tcpip.PacketHost {
			return false
		}
		eh := pkt.LinkHeader().Slice()
		if len(eh) < header.EthernetMinimumSize {
			return false
		}
		s.mac = header.Ethernet(eh).SourceAddress()
		linkLen = len(eh)
	}
	frag := false // the first fragment of a datagram: its TCP header is here, its data is not
	if proto == header.IPv4ProtocolNumber {
		b, ok := pkt.Data().PullUp(header.IPv4MinimumSize)
		if !ok {
			return false
		}
		ip := header.IPv4(b)
		ipLen, total = int(ip.HeaderLength()), int(ip.TotalLength())
		if ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.FragmentOffset() != 0 ||
			ipLen < header.IPv4MinimumSize || total > pkt.Data().Size() || total < ipLen+header.TCPMinimumSize {
			// Later fragments carry no ports: gVisor holds them
			// until its reassembly times out, with no reply.
			return false
		}
		if b, ok = pkt.Data().PullUp(ipLen); !ok || !header.IPv4(b).IsChecksumValid() {
			return false
		}
		ip = header.IPv4(b)
		frag = ip.More()
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		b, ok := pkt.Data().PullUp(header.IPv6MinimumSize)
		if !ok {
			return false
		}
		ip := header.IPv6(b)
		total = header.IPv6MinimumSize + int(ip.PayloadLength())
		if total > pkt.Data().Size() {
			return false
		}
		if ipLen, frag, ok = ipv6TCP(pkt, ip.NextHeader(), total); !ok || total < ipLen+header.TCPMinimumSize {
			return false
		}
		// PullUp may have moved the views: read the addresses again.
		b, _ = pkt.Data().PullUp(header.IPv6MinimumSize)
		ip = header.IPv6(b)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
		s.v6 = true
	}
	b, ok := pkt.Data().PullUp(ipLen + header.TCPMinimumSize)
	if !ok {
		return false
	}
	tcpLen := int(header.TCP(b[ipLen:]).DataOffset())
	if tcpLen < header.TCPMinimumSize || ipLen+tcpLen > total {
		return false
	}
	if b, ok = pkt.Data().PullUp(ipLen + tcpLen); !ok {
		return false
	}
	t := header.TCP(b[ipLen:])
	srcA, dstA := netipOf(src), netipOf(dst)
	if !srcA.IsGlobalUnicast() && !srcA.IsPrivate() || !dstA.IsValid() || dstA.IsMulticast() {
		return false
	}
	s.src, s.dst = src, dst
	s.key = relayKey{netip.AddrPortFrom(srcA, t.SourcePort()), netip.AddrPortFrom(dstA, t.DestinationPort())}
	s.seq, s.ack = seqnum.Value(t.SequenceNumber()), seqnum.Value(t.AckNumber())
	s.flags, s.wnd = t.Flags(), uint32(t.WindowSize())
	s.n = total - ipLen - tcpLen
	syn := s.flags&(header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagRst) == header.TCPFlagSyn

	r.mu.Lock()
	f := r.flows[s.key]
	closing := r.closing
	r.mu.Unlock()
	if f == nil && (!syn || closing) {
		return false // gVisor's: a -p flow, or none (gVisor resets it)
	}
	var to netip.AddrPort
	var denied error
	if f == nil {
		if to, denied = r.gw.Admit(s.key.guest, s.key.remote); errors.Is(denied, ErrSource) {
			// Spoofed, or from an address the guest was never
			// given: no flow, and not gVisor's either.
			r.denied.Add(1)
			r.refusals.note(refuseSource, srcA, dstA)
			return true
		}
	}
	if frag {
		// A fragmented segment of the relay's (Linux sets DF on TCP,
		// so a guest hardly ever sends one): dropped, as a lost
		// segment that the guest sends again, rather than left to
		// gVisor, which would reset a connection it does not know.
		return true
	}
	if pkt.Data().Size() > total {
		pkt.Data().CapLength(total) // link padding
	}
	s.opts = t.Options()
	if s.n > 0 {
		var a [4][]byte
		s.payload = a[:0]
		// The views hold the consumed link header too, in front of
		// the IP header.
		off, left := linkLen+ipLen+tcpLen, s.n
		views, voff := pkt.AsViewList()
		for v := views.Front(); v != nil && left > 0; v = v.Next() {
			p := v.AsSlice()
			if voff >= len(p) {
				voff -= len(p)
				continue
			}
			p, voff = p[voff:], 0
			if off >= len(p) {
				off -= len(p)
				continue
			}
			p, off = p[off:], 0
			p = p[:min(len(p), left)]
			left -= len(p)
			s.payload = append(s.payload, p)
		}
	}
	if r.verify {
		// Over the payload slices (PacketData.ChecksumAtOffset counts
		// its offset from the start of the views, link header and all).
		var c checksum.Checksumer
		for _, p := range s.payload {
			c.Add(p)
		}
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(total-ipLen))
		if t.CalculateChecksum(checksum.Combine(xsum, c.Checksum())) != 0xffff {
			return true // corrupt: dropped, as gVisor would
		}
	}
	if f == nil {
		r.open(&s, to, denied)
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.input(&s)
	return true
}

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
