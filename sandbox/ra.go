//go:build linux

package sandbox

import (
	"encoding/binary"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Router advertisements (RFC 4861 section 6), for guests that configure
// IPv6 themselves by SLAAC (RFC 4862), as slirp4netns's guests do: the
// gateway advertises itself from fe80::2 as the default router, CIDR6 as
// an on-link, autonomous prefix, the link's MTU and DNS6 as the resolver
// (RFC 8106). gVisor answers neighbour solicitations for fe80::2 but sends
// no advertisements itself, so the Gateway builds them: one at start, a
// few more over the first seconds (the guest may bring its link up
// later), then one a minute, and one in answer to each router
// solicitation (at most one per raMinGap).

// raSource is the router's link-local address, as slirp4netns's.
var raSource = netip.MustParseAddr("fe80::2")

const (
	raRouterLifetime = 1800 // seconds, RFC 4861's default (3 x 600)
	raValidLifetime  = 86400
	raPrefLifetime   = 14400
	raDNSLifetime    = 1800
	raEvery          = time.Minute
	raMinGap         = 200 * time.Millisecond
)

// raEarly are the delays after start of the first unsolicited adverts.
var raEarly = []time.Duration{0, time.Second, 3 * time.Second, 10 * time.Second}

// rsWatch passes packets through to the stack and reports router
// solicitations from the guest.
type rsWatch struct {
	nested.Endpoint
	solicited func()
}

func newRSWatch(link gvstack.LinkEndpoint, solicited func()) *rsWatch {
	w := &rsWatch{solicited: solicited}
	w.Endpoint.Init(link, w)
	return w
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (w *rsWatch) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if proto == header.IPv6ProtocolNumber {
		if b, ok := pkt.Data().PullUp(header.IPv6MinimumSize + 1); ok &&
			header.IPv6(b).TransportProtocol() == header.ICMPv6ProtocolNumber &&
			header.ICMPv6Type(b[header.IPv6MinimumSize]) == header.ICMPv6RouterSolicit {
			w.solicited()
		}
	}
	w.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// advertise sends router advertisements until the Gateway closes.
func (g *Gateway) advertise(solicit <-chan struct{}) {
	defer g.wg.Done()
	start := time.Now()
	var last time.Time
	sent := 0 // unsolicited adverts so far
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-timer.C:
			sent++
			d := raEvery
			if sent < len(raEarly) {
				d = max(time.Until(start.Add(raEarly[sent])), 0)
			}
			timer.Reset(d)
		case <-solicit:
			if time.Since(last) < raMinGap {
				continue
			}
		}
		if err := g.sendRA(); err != nil {
			g.log.Warn("router advertisement not sent", "err", err)
		}
		last = time.Now()
	}
}

// routerAdvert builds the advert: IPv6 header and ICMPv6 message, behind
// an Ethernet header from mac if the link has one (mac not empty).
func (g *Gateway) routerAdvert(mac tcpip.LinkAddress, mtu uint32) []byte {
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
	pi[2] = byte(g.cfg.CIDR6.Bits())
	pi[3] = 0xc0
	binary.BigEndian.PutUint32(pi[4:], raValidLifetime)
	binary.BigEndian.PutUint32(pi[8:], raPrefLifetime)
	p := g.cfg.CIDR6.Masked().Addr().As16()
	copy(pi[16:], p[:])
	opts = append(opts, pi...)
	// Recursive DNS server (type 25, RFC 8106), unless DNS is off.
	if !g.cfg.NoDNS {
		d := make([]byte, 24)
		d[0], d[1] = 25, 3
		binary.BigEndian.PutUint32(d[4:], raDNSLifetime)
		a := g.addrs.DNS6.Addr().As16()
		copy(d[8:], a[:])
		opts = append(opts, d...)
	}

	icmp := make([]byte, 16, 16+len(opts))
	icmp[0] = byte(header.ICMPv6RouterAdvert)
	icmp[4] = 64 // current hop limit
	binary.BigEndian.PutUint16(icmp[6:], raRouterLifetime)
	icmp = append(icmp, opts...)

	src, dst := raSource.As16(), header.IPv6AllNodesMulticastAddress.As16()
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

// sendRA writes one advert on the Gateway's NIC.
func (g *Gateway) sendRA() error {
	s := g.st.GVisor()
	for id, info := range s.NICInfo() {
		if info.Flags.Loopback {
			continue
		}
		mac := info.LinkAddress
		if len(mac) != header.EthernetAddressSize {
			mac = ""
		}
		pkt := g.routerAdvert(mac, info.MTU)
		if err := s.WriteRawPacket(id, ipv6.ProtocolNumber, buffer.MakeWithData(pkt)); err != nil {
			return errorOf(err)
		}
	}
	return nil
}

type tcpipError struct{ err tcpip.Error }

func (e tcpipError) Error() string { return e.err.String() }

func errorOf(err tcpip.Error) error { return tcpipError{err} }
