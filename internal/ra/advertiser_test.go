//go:build linux

package ra

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// nextAdvert returns the next router advert the stack writes on ch, or
// nil if none comes within bound; other packets (the stack's own NDP and
// MLD) are skipped.
func nextAdvert(ch *channel.Endpoint, bound time.Duration) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for {
		pkt := ch.ReadContext(ctx)
		if pkt == nil {
			return nil
		}
		b := pkt.ToView().AsSlice()
		pkt.DecRef()
		if len(b) > header.IPv6MinimumSize && header.IPv6(b).TransportProtocol() == header.ICMPv6ProtocolNumber &&
			header.ICMPv6Type(b[header.IPv6MinimumSize]) == header.ICMPv6RouterAdvert {
			return b
		}
	}
}

// routerSolicit is a guest's router solicitation, from fd00::100 to all
// routers.
func routerSolicit() *gvstack.PacketBuffer {
	icmp := header.ICMPv6(make([]byte, header.ICMPv6MinimumSize+header.NDPRSMinimumSize))
	icmp.SetType(header.ICMPv6RouterSolicit)
	src := tcpip.AddrFrom16(netip.MustParseAddr("fd00::100").As16())
	dst := header.IPv6AllRoutersLinkLocalMulticastAddress
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: src, Dst: dst}))
	b := make([]byte, header.IPv6MinimumSize+len(icmp))
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(icmp)),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          255,
		SrcAddr:           src,
		DstAddr:           dst,
	})
	copy(b[header.IPv6MinimumSize:], icmp)
	return gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
}

// An Advertiser sends an advert at start, and one in answer to a router
// solicitation; Run returns when its context ends.
func TestAdvertiser(t *testing.T) {
	// The only unsolicited advert is the first: any other answers a
	// solicitation.
	savedEarly, savedEvery := early, every
	early, every = []time.Duration{0}, time.Hour
	defer func() { early, every = savedEarly, savedEvery }()

	ch := channel.New(16, 1500, "")
	defer ch.Close()
	cfg := Config{Prefix: netip.MustParsePrefix("fd00::/64"), DNS: netip.MustParseAddr("fd00::3")}
	adv := New(ch, cfg, nil)
	s := gvstack.New(gvstack.Options{NetworkProtocols: []gvstack.NetworkProtocolFactory{ipv6.NewProtocol}})
	defer func() { s.Close(); s.Wait() }()
	if err := s.CreateNIC(1, adv); err != nil {
		t.Fatal(err)
	}
	src := tcpip.ProtocolAddress{Protocol: ipv6.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom16(Source.As16()).WithPrefix()}
	if err := s.AddProtocolAddress(1, src, gvstack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); adv.Run(ctx, s) }()
	defer func() { cancel(); <-done }()

	first := nextAdvert(ch, 10*time.Second)
	if first == nil {
		t.Fatal("no advert at start")
	}
	if string(first) != string(Build(cfg, "", 1500)) {
		t.Errorf("advert at start %x, want Build's %x", first, Build(cfg, "", 1500))
	}
	// A solicitation within minGap of the last advert gets none: solicit
	// until one is answered.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ch.InjectInbound(ipv6.ProtocolNumber, routerSolicit())
		if b := nextAdvert(ch, 50*time.Millisecond); b != nil {
			if string(b) != string(first) {
				t.Errorf("solicited advert %x, want %x", b, first)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no advert in answer to router solicitations")
		}
	}
}
