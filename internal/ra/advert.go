//go:build linux

package ra

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Source is the router's link-local address, as slirp4netns's. The stack
// that sends the adverts must hold it.
var Source = netip.MustParseAddr("fe80::2")

// Lifetimes of an advert's router and options, in seconds.
const (
	routerLifetime = 1800 // RFC 4861's default (3 x 600)
	validLifetime  = 86400
	prefLifetime   = 14400
	dnsLifetime    = 1800
)

// Config says what an advert advertises.
type Config struct {
	// Prefix is advertised on-link and autonomous: the guest's network.
	Prefix netip.Prefix
	// DNS is advertised as the resolver; none if not valid.
	DNS netip.Addr
}

// Build builds the advert: IPv6 header and ICMPv6 message, behind an
// Ethernet header from mac if the link has one (mac not empty), with
// the link's mtu.
func Build(cfg Config, mac tcpip.LinkAddress, mtu uint32) []byte {
	var opts []byte
	if mac != "" {
		// Source link-layer address (type 1, 8 bytes).
		opts = append(opts, 1, 1)
		opts = append(opts, mac...)
	}
	// MTU (type 5).
	o := make([]byte, 8)
	o[0], o[1] = 5, 1
	binary.BigEndian.PutUint32(o[4:], mtu)
	opts = append(opts, o...)
	// Prefix information (type 3): on-link (L) and autonomous (A).
	pi := make([]byte, 32)
	pi[0], pi[1] = 3, 4
	pi[2] = byte(cfg.Prefix.Bits())
	pi[3] = 0xc0
	binary.BigEndian.PutUint32(pi[4:], validLifetime)
	binary.BigEndian.PutUint32(pi[8:], prefLifetime)
	p := cfg.Prefix.Masked().Addr().As16()
	copy(pi[16:], p[:])
	opts = append(opts, pi...)
	// Recursive DNS server (type 25, RFC 8106), if there is one.
	if cfg.DNS.IsValid() {
		d := make([]byte, 24)
		d[0], d[1] = 25, 3
		binary.BigEndian.PutUint32(d[4:], dnsLifetime)
		a := cfg.DNS.As16()
		copy(d[8:], a[:])
		opts = append(opts, d...)
	}

	icmp := make([]byte, 16, 16+len(opts))
	icmp[0] = byte(header.ICMPv6RouterAdvert)
	icmp[4] = 64 // current hop limit
	binary.BigEndian.PutUint16(icmp[6:], routerLifetime)
	icmp = append(icmp, opts...)

	src, dst := Source.As16(), header.IPv6AllNodesMulticastAddress.As16()
	ip := make([]byte, header.IPv6MinimumSize)
	header.IPv6(ip).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(icmp)),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          255, // RFC 4861: receivers drop adverts with less
		SrcAddr:           tcpip.AddrFrom16(src),
		DstAddr:           tcpip.AddrFrom16(dst),
	})
	xsum := header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, tcpip.AddrFrom16(src), tcpip.AddrFrom16(dst), uint16(len(icmp)))
	binary.BigEndian.PutUint16(icmp[2:], ^checksum.Checksum(icmp, xsum))

	var frame []byte
	if mac != "" {
		eth := make([]byte, header.EthernetMinimumSize)
		header.Ethernet(eth).Encode(&header.EthernetFields{
			SrcAddr: mac,
			DstAddr: header.EthernetAddressFromMulticastIPv6Address(tcpip.AddrFrom16(dst)),
			Type:    header.IPv6ProtocolNumber,
		})
		frame = eth
	}
	frame = append(frame, ip...)
	return append(frame, icmp...)
}
