//go:build linux

package sandbox

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The advert as the guest's kernel reads it: a valid ICMPv6 checksum, hop
// limit 255 from fe80::2 to all nodes, and the router lifetime, MTU,
// prefix and DNS options, behind an Ethernet header when there is a MAC.
func TestRouterAdvert(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.CIDR6 = netip.MustParsePrefix("fd00:1:2:3::/64") })
	mac := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x07")
	for _, m := range []tcpip.LinkAddress{"", mac} {
		b := w.gw.routerAdvert(m, 65520)
		if m != "" {
			eth := header.Ethernet(b)
			if eth.Type() != header.IPv6ProtocolNumber || eth.SourceAddress() != mac ||
				eth.DestinationAddress() != tcpip.LinkAddress("\x33\x33\x00\x00\x00\x01") {
				t.Fatalf("Ethernet header: type %v src %v dst %v", eth.Type(), eth.SourceAddress(), eth.DestinationAddress())
			}
			b = b[header.EthernetMinimumSize:]
		}
		ip := header.IPv6(b)
		if !ip.IsValid(len(b)) || ip.HopLimit() != 255 || ip.TransportProtocol() != header.ICMPv6ProtocolNumber ||
			ip.SourceAddress() != tcpip.AddrFrom16(raSource.As16()) || ip.DestinationAddress() != header.IPv6AllNodesMulticastAddress {
			t.Fatalf("IPv6 header: %x", b[:header.IPv6MinimumSize])
		}
		icmp := header.ICMPv6(ip.Payload())
		xsum := header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(icmp)))
		if checksum.Checksum(icmp, xsum) != 0xffff {
			t.Fatal("bad ICMPv6 checksum")
		}
		if icmp.Type() != header.ICMPv6RouterAdvert || icmp.Code() != 0 {
			t.Fatalf("ICMPv6 type %v code %v", icmp.Type(), icmp.Code())
		}
		ra := header.NDPRouterAdvert(icmp.MessageBody())
		if ra.CurrHopLimit() != 64 || ra.RouterLifetime().Seconds() != raRouterLifetime {
			t.Errorf("hop limit %d, router lifetime %v", ra.CurrHopLimit(), ra.RouterLifetime())
		}
		it, err := ra.Options().Iter(true)
		if err != nil {
			t.Fatal(err)
		}
		var gotMAC tcpip.LinkAddress
		var gotMTU uint32
		var gotPrefix tcpip.Subnet
		var onLink, auto bool
		var dns []tcpip.Address
		for {
			opt, done, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			if done {
				break
			}
			switch o := opt.(type) {
			case header.NDPSourceLinkLayerAddressOption:
				gotMAC = o.EthernetAddress()
			case header.NDPPrefixInformation:
				gotPrefix, onLink, auto = o.Subnet(), o.OnLinkFlag(), o.AutonomousAddressConfigurationFlag()
			case header.NDPRecursiveDNSServer:
				dns, _ = o.Addresses()
			}
		}
		// gVisor's iterator skips the MTU option; read it by hand.
		for o := []byte(ra.Options()); len(o) >= 8 && int(o[1])*8 <= len(o) && o[1] > 0; o = o[int(o[1])*8:] {
			if o[0] == 5 {
				gotMTU = binary.BigEndian.Uint32(o[4:])
			}
		}
		if gotMAC != m || gotMTU != 65520 || !onLink || !auto ||
			gotPrefix.String() != "fd00:1:2:3::/64" || len(dns) != 1 || dns[0].String() != "fd00:1:2:3::3" {
			t.Errorf("options: MAC %q MTU %d prefix %v on-link %v autonomous %v DNS %v", gotMAC, gotMTU, gotPrefix, onLink, auto, dns)
		}
	}
}
