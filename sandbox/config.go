//go:build linux

package sandbox

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/ustacknet/ustack/internal/tcprelay"
	"github.com/ustacknet/ustack/portalloc"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Defaults, as slirp4netns.
var (
	DefaultCIDR  = netip.MustParsePrefix("10.0.2.0/24")
	DefaultCIDR6 = netip.MustParsePrefix("fd00::/64")
)

const (
	DefaultMTU        = 65520
	DefaultUDPTimeout = 120 * time.Second // RFC 4787 REQ-5 minimum is 2 min
	DefaultMaxFlows   = 8192
	DefaultMaxSYNs    = 1024
	DefaultTimeWait   = 100 * time.Millisecond
	dialTimeout       = 10 * time.Second
)

// DefaultRelayBuffer is Config.RelayBuffer's default.
const DefaultRelayBuffer = tcprelay.DefaultBuffer

// Config configures a Gateway. The zero value is the slirp4netns layout
// with IPv6 on, except that Link must be set.
type Config struct {
	// Link is the sandbox's TUN device (or one end of a tun.Pipe in tests).
	// The Gateway's stack takes ownership of it.
	Link gvstack.LinkEndpoint
	// CIDR is the guest's IPv4 network: the guest is .100, the gateway .2
	// and DNS .3. Default 10.0.2.0/24. The prefix must be /8 to /25.
	CIDR netip.Prefix
	// NoIPv6 turns IPv6 off. Default: on, with CIDR6.
	NoIPv6 bool
	// CIDR6 is the guest's IPv6 network, /64 to /120: guest ::100, gateway
	// ::2, DNS ::3. Default fd00::/64.
	CIDR6 netip.Prefix
	// Ports configures the pools for connections the Gateway opens into
	// the guest (inbound forwards). Default IANA, sequential.
	Ports portalloc.Config
	// Policy limits where the guest may connect.
	Policy Policy
	// DNSUpstream are the servers DNS queries to the DNS address go to.
	// Default: the nameservers in /etc/resolv.conf.
	DNSUpstream []netip.AddrPort
	// NoDNS turns the DNS address off: it is then an address like any
	// other in the guest's network, which nothing answers (slirp4netns's
	// --disable-dns).
	NoDNS bool
	// RouterAdvertisements makes the gateway advertise itself as the
	// guest's IPv6 router from fe80::2, with CIDR6 for SLAAC and DNS6 as
	// the resolver (package internal/ra), for guests that configure IPv6
	// themselves (slirp4netns's do). Off by default: Run and Attach
	// configure the guest's address and routes.
	RouterAdvertisements bool
	// OutboundAddrs are source addresses for the host sockets that carry
	// the guest's flows, at most one IPv4 and one IPv6 (slirp4netns's
	// --outbound-addr, pasta's --outbound), for a host with several
	// addresses. Each must be an address of the host. Flows to the host's
	// loopback are not bound. Default: the kernel chooses.
	OutboundAddrs []netip.Addr
	// UDPTimeout closes a UDP flow idle this long. Default 120 s.
	UDPTimeout time.Duration
	// MaxFlows caps live guest flows (TCP and UDP together, outbound and
	// inbound). Default 8192.
	MaxFlows int
	// MaxSYNs caps TCP handshakes from the guest in progress. Default 1024.
	MaxSYNs int
	// TimeWait is how long the gateway's side of a guest connection that
	// the gateway closed first stays in TIME_WAIT. Default 100 ms. The
	// guest's kernel picks source ports with random gaps and comes back
	// to a port after a few thousand connections; gVisor answers a new
	// SYN on a tuple in TIME_WAIT with a reset when no listener owns the
	// port (the forwarder is not one), so a long TIME_WAIT here breaks
	// connection churn. On a point-to-point link to one guest there are
	// no old duplicates for it to guard against.
	TimeWait time.Duration
	// Dial opens host connections. Default: a net.Dialer without TCP
	// keep-alives (as slirp4netns and pasta: probing is the guest's
	// business, end to end; and Go's keep-alive set-up is four system
	// calls per connection). Network is "tcp" or "udp". The TCP relay
	// (see NoTCPRelay) opens its sockets itself when Dial is the
	// default; with another Dial it takes a duplicate of the returned
	// connection's descriptor, so the connection must be a
	// syscall.Conn such as *net.TCPConn (others are refused with a
	// reset to the guest and logged).
	Dial func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error)
	// NoTCPRelay carries the guest's TCP connections through a gVisor TCP
	// endpoint each (gVisor's forwarder) instead of the relay (package tcprelay),
	// which translates segments to host sockets directly. The relay
	// serves TUN (IP) and TAP (Ethernet) links; on another kind of link
	// gVisor carries the connections whatever this says.
	NoTCPRelay bool
	// TCPIdleTimeout resets a relayed TCP connection (both sides) when
	// neither side has sent anything for this long. Default 0: never, as
	// a kernel does not; a dead host peer is still noticed by keepalive
	// on the host socket, and a dead guest by the relay's retransmission
	// timeout or, when a side has closed, by the FIN timeout (package
	// tcprelay).
	TCPIdleTimeout time.Duration
	// RelayBuffer bounds, in bytes, the data the TCP relay holds in user
	// space for all its connections together (tcprelay's budget): host data
	// the guest has not yet acknowledged, and guest data a full host
	// socket has not yet taken. Connections that find it spent wait, with
	// their windows closed. Default DefaultRelayBuffer (16 MiB); at least
	// 64 KiB.
	RelayBuffer int
	// Capture, if not nil, receives every packet on the guest's interface
	// (Link), both ways, in pcap format, as stack.Config.Capture does; it
	// sits right over the device, below the TCP relay. CaptureSnapLen is
	// its snap length (0: 262144). Default: no capture.
	Capture        io.Writer
	CaptureSnapLen int
	// Logger receives the logs. Default slog.Default().
	Logger *slog.Logger

	host *hostDialer // Dial's, when it is the default
}

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
