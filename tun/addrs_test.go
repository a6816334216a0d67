package tun

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Test addresses, from 198.18.0.0/15 and fd00::/8.
var (
	kernel4 = netip.MustParsePrefix("198.18.0.1/24")
	stack4  = netip.MustParsePrefix("198.18.0.2/24")
	kernel6 = netip.MustParsePrefix("fd00::1/64")
	stack6  = netip.MustParsePrefix("fd00::2/64")
)

func addr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }
