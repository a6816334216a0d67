//go:build linux

package ra

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// advert is what an advert says, as the guest's kernel reads it.
type advert struct {
	mac    tcpip.LinkAddress
	mtu    uint32
	prefix string
	onLink bool
	auto   bool
	dns    []string
}

// parse reads b as the guest's kernel does: it checks the Ethernet
// header when there is a MAC, a valid ICMPv6 checksum, hop limit 255 from
// fe80::2 to all nodes, and the hop limit and router lifetime, and
// returns the options.
func parse(t *testing.T, b []byte, mac tcpip.LinkAddress) advert {
	t.Helper()
	if mac != "" {
		eth := header.Ethernet(b)
		if eth.Type() != header.IPv6ProtocolNumber || eth.SourceAddress() != mac ||
			eth.DestinationAddress() != tcpip.LinkAddress("\x33\x33\x00\x00\x00\x01") {
			t.Fatalf("Ethernet header: type %v src %v dst %v", eth.Type(), eth.SourceAddress(), eth.DestinationAddress())
		}
		b = b[header.EthernetMinimumSize:]
	}
	ip := header.IPv6(b)
	if !ip.IsValid(len(b)) || ip.HopLimit() != 255 || ip.TransportProtocol() != header.ICMPv6ProtocolNumber ||
		ip.SourceAddress() != tcpip.AddrFrom16(Source.As16()) || ip.DestinationAddress() != header.IPv6AllNodesMulticastAddress {
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
	if ra.CurrHopLimit() != 64 || ra.RouterLifetime().Seconds() != routerLifetime {
		t.Errorf("hop limit %d, router lifetime %v", ra.CurrHopLimit(), ra.RouterLifetime())
	}
	it, err := ra.Options().Iter(true)
	if err != nil {
		t.Fatal(err)
	}
	var got advert
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
			got.mac = o.EthernetAddress()
		case header.NDPPrefixInformation:
			got.prefix, got.onLink, got.auto = o.Subnet().String(), o.OnLinkFlag(), o.AutonomousAddressConfigurationFlag()
		case header.NDPRecursiveDNSServer:
			dns, _ := o.Addresses()
			for _, a := range dns {
				got.dns = append(got.dns, a.String())
			}
		}
	}
	// gVisor's iterator skips the MTU option; read it by hand.
	for o := []byte(ra.Options()); len(o) >= 8 && int(o[1])*8 <= len(o) && o[1] > 0; o = o[int(o[1])*8:] {
		if o[0] == 5 {
			got.mtu = binary.BigEndian.Uint32(o[4:])
		}
	}
	return got
}

// The advert as the guest's kernel reads it: the router lifetime, MTU,
// prefix and DNS options, behind an Ethernet header when there is a MAC.
func TestBuild(t *testing.T) {
	mac := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x07")
	prefix := netip.MustParsePrefix("fd00:1:2:3::/64")
	dns := netip.MustParseAddr("fd00:1:2:3::3")
	for _, tc := range []struct {
		name string
		cfg  Config
		mac  tcpip.LinkAddress
		want advert
	}{
		{"IP link", Config{Prefix: prefix, DNS: dns}, "",
			advert{mtu: 65520, prefix: "fd00:1:2:3::/64", onLink: true, auto: true, dns: []string{"fd00:1:2:3::3"}}},
		{"Ethernet", Config{Prefix: prefix, DNS: dns}, mac,
			advert{mac: mac, mtu: 65520, prefix: "fd00:1:2:3::/64", onLink: true, auto: true, dns: []string{"fd00:1:2:3::3"}}},
		{"no DNS", Config{Prefix: prefix}, "",
			advert{mtu: 65520, prefix: "fd00:1:2:3::/64", onLink: true, auto: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parse(t, Build(tc.cfg, tc.mac, 65520), tc.mac)
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(advert{})); d != "" {
				t.Errorf("advert (-want +got):\n%s", d)
			}
		})
	}
}
