//go:build linux

package sandbox

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/ustacknet/ustack/internal/tcprelay"
)

// Addrs are the addresses of a sandbox network.
type Addrs struct {
	Guest, Gateway, DNS    netip.Prefix // IPv4, with the CIDR's length
	Guest6, Gateway6, DNS6 netip.Prefix // IPv6; invalid if IPv6 is off
}

// AddrsOf returns the addresses a Config gives the network, or the
// *ConfigError that NewGateway would give.
func (c Config) AddrsOf() (Addrs, error) {
	if err := c.check(); err != nil {
		return Addrs{}, err
	}
	return c.addrs(), nil
}

// addrs is AddrsOf for a Config that check has filled in.
func (c *Config) addrs() Addrs {
	a := Addrs{Guest: nth(c.CIDR, 100), Gateway: nth(c.CIDR, 2), DNS: nth(c.CIDR, 3)}
	if !c.NoIPv6 {
		a.Gateway6, a.DNS6 = nth(c.CIDR6, 2), nth(c.CIDR6, 3)
		g := c.CIDR6.Masked().Addr().As16()
		g[14], g[15] = 0x01, 0x00
		a.Guest6 = netip.PrefixFrom(netip.AddrFrom16(g), c.CIDR6.Bits())
	}
	return a
}

func nth(p netip.Prefix, n byte) netip.Prefix {
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		b[3] += n
		return netip.PrefixFrom(netip.AddrFrom4(b), p.Bits())
	}
	b := a.As16()
	b[15] += n
	return netip.PrefixFrom(netip.AddrFrom16(b), p.Bits())
}

// check validates c and fills in its defaults, all but Link (which Run
// and Attach set later). It is the one check of a Config: NewGateway,
// AddrsOf, Run and Attach each make it once. A field it refuses gives a
// *ConfigError. It binds a socket to each outbound address to see that
// the host has it.
func (c *Config) check() error {
	if c.CIDR == (netip.Prefix{}) {
		c.CIDR = DefaultCIDR
	}
	if !c.CIDR.Addr().Is4() || c.CIDR.Bits() < 8 || c.CIDR.Bits() > 25 {
		return fieldError("CIDR", c.CIDR)
	}
	c.CIDR = c.CIDR.Masked()
	if c.CIDR6 == (netip.Prefix{}) {
		c.CIDR6 = DefaultCIDR6
	}
	if !c.CIDR6.Addr().Is6() || c.CIDR6.Addr().Is4In6() || c.CIDR6.Bits() < 64 || c.CIDR6.Bits() > 120 {
		return fieldError("CIDR6", c.CIDR6)
	}
	c.CIDR6 = c.CIDR6.Masked()
	if c.UDPTimeout == 0 {
		c.UDPTimeout = DefaultUDPTimeout
	}
	if c.UDPTimeout < time.Second {
		return fieldError("UDPTimeout", c.UDPTimeout)
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = DefaultMaxFlows
	}
	if c.MaxFlows < 1 {
		return fieldError("MaxFlows", c.MaxFlows)
	}
	if c.MaxSYNs == 0 {
		c.MaxSYNs = DefaultMaxSYNs
	}
	if c.MaxSYNs < 1 {
		return fieldError("MaxSYNs", c.MaxSYNs)
	}
	if c.RelayBuffer == 0 {
		c.RelayBuffer = DefaultRelayBuffer
	}
	if c.RelayBuffer < tcprelay.MinBuffer {
		return fieldError("RelayBuffer", c.RelayBuffer)
	}
	if c.TCPIdleTimeout < 0 {
		return fieldError("TCPIdleTimeout", c.TCPIdleTimeout)
	}
	if c.TimeWait == 0 {
		c.TimeWait = DefaultTimeWait
	}
	if c.TimeWait < time.Millisecond || c.TimeWait > 10*time.Minute {
		return fieldError("TimeWait", c.TimeWait)
	}
	var out4, out6 netip.Addr
	for _, a := range c.OutboundAddrs {
		a = a.Unmap()
		switch {
		case !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast():
			return fieldError("OutboundAddrs", a)
		case a.Is4() && out4.IsValid(), a.Is6() && out6.IsValid():
			return &ConfigError{Field: "OutboundAddrs", Value: a, Allowed: "at most one IPv4 and one IPv6 address"}
		case a.Is4():
			out4 = a
		default:
			out6 = a
		}
	}
	// Each is bindable, or not an address of this host.
	for _, a := range []netip.Addr{out4, out6} {
		if !a.IsValid() {
			continue
		}
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			return &ConfigError{Field: "OutboundAddrs", Value: a, Reason: "not usable as a source address here", Err: err, Allowed: "an address of this host"}
		}
		pc.Close()
	}
	if c.Dial == nil {
		c.host = &hostDialer{out4: out4, out6: out6}
		c.Dial = c.host.dial
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
