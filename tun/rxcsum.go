package tun

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Receive checksums on the offload path.
//
// gVisor decides per interface whether to verify inbound checksums: a link
// endpoint with CapabilityRXChecksumOffload has every packet taken as
// verified, and one without it has every IPv4 header, TCP segment and UDP
// datagram summed again. On a TUN device with IFF_VNET_HDR the kernel
// says per packet what it knows, in the virtio header's flags:
//
//   - VIRTIO_NET_HDR_F_NEEDS_CSUM: the kernel built the packet itself and
//     left the checksum partial (it would have been the NIC's job). The
//     data never crossed a wire, so there is nothing to verify; the
//     checksum field holds the pseudo-header sum, as an skb with
//     CHECKSUM_PARTIAL does in Linux.
//   - VIRTIO_NET_HDR_F_DATA_VALID: the kernel already verified it.
//   - neither: the checksum is complete and nobody has checked it (ICMP,
//     IP fragments, packets the kernel forwarded, packets written with a
//     packet socket).
//
// So the offload endpoint claims the capability and verifies the third
// kind itself, with verifyChecksums below: the IPv4 header checksum, and
// the TCP or UDP checksum of a packet that is not a fragment. ICMP
// checksums gVisor verifies whatever the capability. For a fragment the
// transport checksum covers the whole datagram, which only exists after
// reassembly inside gVisor, where it is not summed again; such a datagram
// is checked at the IP header only. The kernel sums the datagrams it
// fragments itself before cutting them, so only a forwarded or injected
// fragment is affected.
//
// Measured on the download benchmark (kernel → ustack, MTU 1500, TSO):
// completing each partial checksum and having gVisor sum the segment
// again were two of the five passes over the data.

// split is a packet read into two pieces, h then t, as the reader reads
// it (headers first, the rest after).
type split struct{ h, t []byte }

func (p split) len() int { return len(p.h) + len(p.t) }

func (p split) at(i int) byte {
	if i < len(p.h) {
		return p.h[i]
	}
	return p.t[i-len(p.h)]
}

func (p split) u16(i int) uint16 { return uint16(p.at(i))<<8 | uint16(p.at(i+1)) }

// sum is the ones' complement sum of bytes [from, to), carried on from
// initial. from must be even.
func (p split) sum(from, to int, initial uint16) uint16 {
	s := initial
	if from < len(p.h) {
		hEnd := min(to, len(p.h))
		b := p.h[from:hEnd]
		if len(b)%2 == 1 && to > hEnd {
			// A word straddles the two pieces.
			s = checksum.Checksum(b[:len(b)-1], s)
			s = checksum.Checksum([]byte{b[len(b)-1], p.t[0]}, s)
			return checksum.Checksum(p.t[1:to-len(p.h)], s)
		}
		s = checksum.Checksum(b, s)
		from = hEnd
	}
	if to > from {
		s = checksum.Checksum(p.t[from-len(p.h):to-len(p.h)], s)
	}
	return s
}

// IPv6 extension headers that verifyChecksums steps over.
const (
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6DestOpts = 60
)

// verifyChecksums reports whether the checksums of the IP packet h+t that
// can be verified on their own are right: see the comment at the top of
// this file. A packet too malformed to find its checksums in passes: gVisor
// parses every packet and drops and counts those.
func verifyChecksums(h, t []byte) bool {
	p := split{h, t}
	n := p.len()
	if n < 1 {
		return true
	}
	var (
		proto        uint8
		off, end     int
		src, dst     []byte
		v6, fragment bool
		addrs        [32]byte
	)
	switch p.at(0) >> 4 {
	case header.IPv4Version:
		if n < header.IPv4MinimumSize {
			return true
		}
		ihl := int(p.at(0)&0xf) * 4
		total := int(p.u16(2))
		if ihl < header.IPv4MinimumSize || ihl > n || total < ihl || total > n {
			return true
		}
		if p.sum(0, ihl, 0) != 0xffff {
			return false
		}
		flagsFrag := p.u16(6)
		fragment = flagsFrag&0x3fff != 0 // MF or a fragment offset
		proto = p.at(9)
		for i := 0; i < 8; i++ {
			addrs[i] = p.at(12 + i)
		}
		src, dst = addrs[0:4], addrs[4:8]
		off, end = ihl, total
	case header.IPv6Version:
		if n < header.IPv6MinimumSize {
			return true
		}
		end = header.IPv6MinimumSize + int(p.u16(4))
		if end > n {
			return true
		}
		for i := 0; i < 32; i++ {
			addrs[i] = p.at(8 + i)
		}
		src, dst = addrs[0:16], addrs[16:32]
		v6 = true
		proto = p.at(6)
		off = header.IPv6MinimumSize
	ext:
		for {
			switch proto {
			case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
				if off+2 > end {
					return true
				}
				proto, off = p.at(off), off+(int(p.at(off+1))+1)*8
			case ipv6Fragment:
				if off+8 > end {
					return true
				}
				fragment = true // atomic fragments included: gVisor reassembles them too
				proto, off = p.at(off), off+8
			default:
				break ext
			}
			if off > end {
				return true
			}
		}
	default:
		return true
	}
	if fragment {
		return true
	}
	// A right checksum field makes the sum over the pseudo-header and
	// the whole segment or datagram come to 0xffff.
	switch proto {
	case uint8(header.TCPProtocolNumber):
		if end-off < header.TCPMinimumSize {
			return true
		}
	case uint8(header.UDPProtocolNumber):
		if end-off < header.UDPMinimumSize {
			return true
		}
		l := int(p.u16(off + 4))
		if l < header.UDPMinimumSize || l > end-off {
			return true
		}
		end = off + l
		if p.u16(off+6) == 0 {
			// No checksum: allowed over IPv4, forbidden over IPv6
			// (RFC 8200, section 8.1).
			return !v6
		}
	default:
		return true
	}
	pseudo := checksum.Checksum(src, 0)
	pseudo = checksum.Checksum(dst, pseudo)
	var lenProto [4]byte
	binary.BigEndian.PutUint16(lenProto[0:], uint16(proto))
	binary.BigEndian.PutUint16(lenProto[2:], uint16(end-off))
	pseudo = checksum.Checksum(lenProto[:], pseudo)
	return p.sum(off, end, pseudo) == 0xffff
}
