package stack

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Config configures a Stack. Its zero value is usable: a stack with only a
// loopback interface (127.0.0.1/8 and ::1/128), the IANA port range with
// the sequential policy for every protocol, and a 60 s TIME_WAIT.
type Config struct {
	// Link is the link the stack sends and receives IP packets on, such as
	// tun.Device.LinkEndpoint() or one end of tun.Pipe. The Stack takes
	// ownership: Close closes it. Nil means a loopback-only stack.
	Link gvstack.LinkEndpoint

	// Addrs are the stack's own addresses, IPv4 and/or IPv6, with the
	// prefix length of the attached subnet. Default: none on a Link (an
	// error, since the stack could not send), 127.0.0.1/8 and ::1/128 on
	// loopback.
	Addrs []netip.Prefix

	// Routes are the destinations reached through the link. Default: a
	// default route (0.0.0.0/0, ::/0) for each address family in Addrs.
	Routes []netip.Prefix

	// MTU overrides the link's MTU when not zero. Valid: 68-65535, and at
	// least 1280 if Addrs has an IPv6 address. Default: the link's MTU.
	MTU uint32

	// Ports configures the per-protocol port pools. Default: IANA range
	// (49152-65535), sequential policy; TCP dials hold their ports per
	// destination (Ports.TCP.Sharing zero means portalloc.PerDestination),
	// UDP sockets for every destination (zero means portalloc.Exclusive).
	//
	// Per-destination TCP ports are the default because that is what a
	// dial does on Linux (and with gVisor's own picker): connect() picks a
	// source port that is free for the 4-tuple, so a client holds up to
	// one range of connections per destination, and code written against
	// package net expects a proxy or load generator to get past 16,384
	// connections. Exclusive ports remain a choice, e.g. to keep source
	// ports unique on a NAT that maps by source port only. Linux's UDP
	// autobind gives a socket a port of its own whatever it connects to,
	// which is why UDP stays exclusive unless Ports.UDP.Sharing says
	// otherwise; then connected UDP sockets share ports too.
	Ports portalloc.Config

	// TimeWait is how long a TCP connection we closed first stays in
	// TIME_WAIT, holding its port. Default 60 s. Valid: 0 (default) or 1
	// ms to 10 min.
	TimeWait time.Duration

	// TimeWaitReuse lets a dial reuse a port whose connection is still in
	// TIME_WAIT when the range has no other free port, as Linux's
	// tcp_tw_reuse does for outgoing connections. Default false.
	TimeWaitReuse bool

	// DNS lists the servers LookupHost and DialContext use to resolve
	// names, reached through the stack. A zero port means 53. Default:
	// none, so only literal addresses can be dialled.
	DNS []netip.AddrPort

	// DNSSearch lists the search domains tried for a name with fewer
	// than DNSNdots dots (after the name as it is for one with more), as
	// resolv.conf's search option. Each is a domain name, optionally with
	// a trailing dot. Default: none.
	DNSSearch []string

	// DNSNdots is resolv.conf's ndots option: a name with at least this
	// many dots is tried as it is before the search domains. Valid:
	// NdotsZero (resolv.conf's ndots:0: every name is tried as it is
	// first), 0 (the default, meaning 1), and 1 to 15.
	DNSNdots int

	// HappyEyeballsDelay is how long DialContext lets a TCP connection
	// attempt to a name's first address family run before it starts one
	// to the other family in parallel, as RFC 8305 (Happy Eyeballs)
	// asks; the first connection to complete wins. Default (0): 300 ms.
	// Negative: no parallel attempts, each address in turn.
	HappyEyeballsDelay time.Duration

	// Promiscuous makes the stack accept packets for any destination
	// address and send from any source address, as a gateway or
	// transparent proxy does (the sandbox's gateway uses it with gVisor's
	// forwarders). Packets between the stack's own addresses are then not
	// looped back inside the stack. Default false.
	Promiscuous bool

	// Capture, if not nil, receives every IP packet the stack sends and
	// receives on its link, in the pcap file format (link type RAW, which
	// tcpdump and Wireshark read), from New until Close. Each record is
	// written with one Write call while the packet waits, so the writer
	// should be quick (a file, not a network connection); a write error
	// stops the capture, not the traffic (CaptureStats reports it). The
	// stack never closes the writer. Packets on the loopback-only stack
	// (no Link) are captured too. Default: no capture.
	Capture io.Writer

	// CaptureSnapLen is how many bytes of each packet Capture keeps.
	// Valid: 0 (DefaultCaptureSnapLen, 262144) or 1-262144.
	CaptureSnapLen int

	// Logger receives the stack's logs. Default: slog.Default().
	Logger *slog.Logger
}

// Validate reports the first invalid field of c, naming it.
func (c *Config) Validate() error {
	has6 := false
	for i, p := range c.Addrs {
		if !p.IsValid() {
			return fmt.Errorf("ustack: Config.Addrs[%d]: invalid prefix", i)
		}
		a := p.Addr()
		if a.Is4In6() {
			return fmt.Errorf("ustack: Config.Addrs[%d] %s: IPv4-mapped IPv6 address; give the IPv4 address instead", i, p)
		}
		if a.IsUnspecified() || a.IsMulticast() {
			return fmt.Errorf("ustack: Config.Addrs[%d] %s: want a unicast address", i, p)
		}
		if a.Is6() {
			has6 = true
		}
	}
	for i, r := range c.Routes {
		if !r.IsValid() {
			return fmt.Errorf("ustack: Config.Routes[%d]: invalid prefix", i)
		}
		if r.Masked() != r {
			return fmt.Errorf("ustack: Config.Routes[%d] %s: host bits are set; did you mean %s?", i, r, r.Masked())
		}
	}
	if c.MTU != 0 {
		if c.MTU < 68 || c.MTU > 65535 {
			return fmt.Errorf("ustack: Config.MTU %d: want 68-65535", c.MTU)
		}
		if has6 && c.MTU < 1280 {
			return fmt.Errorf("ustack: Config.MTU %d: IPv6 needs at least 1280", c.MTU)
		}
	}
	if c.TimeWait != 0 && (c.TimeWait < time.Millisecond || c.TimeWait > 10*time.Minute) {
		return fmt.Errorf("ustack: Config.TimeWait %v: want 0 (default 60s) or 1ms to 10m", c.TimeWait)
	}
	for i, d := range c.DNS {
		if !d.Addr().IsValid() || d.Addr().IsUnspecified() {
			return fmt.Errorf("ustack: Config.DNS[%d] %s: want a server address", i, d)
		}
	}
	for i, d := range c.DNSSearch {
		if err := checkSearchDomain(d); err != nil {
			return fmt.Errorf("ustack: Config.DNSSearch[%d] %q: %v", i, d, err)
		}
	}
	if len(c.DNSSearch) > 32 {
		return fmt.Errorf("ustack: Config.DNSSearch: %d domains; want at most 32", len(c.DNSSearch))
	}
	if c.DNSNdots < NdotsZero || c.DNSNdots > 15 {
		return fmt.Errorf("ustack: Config.DNSNdots %d: want 0 (default 1) to 15, or NdotsZero (%d) for ndots:0", c.DNSNdots, NdotsZero)
	}
	if c.HappyEyeballsDelay > time.Minute {
		return fmt.Errorf("ustack: Config.HappyEyeballsDelay %v: want at most 1m (0 means 300ms, negative turns parallel attempts off)", c.HappyEyeballsDelay)
	}
	if c.CaptureSnapLen < 0 || c.CaptureSnapLen > DefaultCaptureSnapLen {
		return fmt.Errorf("ustack: Config.CaptureSnapLen %d: want 0 (default %d) or 1-%d", c.CaptureSnapLen, DefaultCaptureSnapLen, DefaultCaptureSnapLen)
	}
	if c.Link != nil && len(c.Addrs) == 0 {
		return fmt.Errorf("ustack: Config.Addrs: a stack on a link needs at least one address")
	}
	return nil
}
