// Package stack runs gVisor's user-space TCP/IP stack behind an API that
// mirrors package net: DialContext, Listen and ListenPacket return
// net.Conn, net.Listener and net.PacketConn.
//
// Every ephemeral port comes from package portalloc. A dial without a
// local port, a listen on port 0 and a UDP socket on port 0 each take a
// port from the protocol's pool and bind the gVisor endpoint to it
// explicitly, so gVisor's own picker is never used (its range is fenced
// off at 1-1023 as a tripwire: a port from there would show a leak). A
// TCP port goes back to the pool when its endpoint leaves the stack: at
// once after a reset or when the peer closed first, after TIME_WAIT when
// we closed first. A UDP port goes back when its socket closes.
//
// A TCP dial's port is held per destination (portalloc.PerDestination, the
// default for TCP; Config.Ports.TCP.Sharing): like Linux's connect(), the
// stack uses one source port for connections to different remote
// endpoints, so it holds as many connections as the range has ports for
// each destination, not in all. Listeners, explicit binds and UDP sockets
// hold their ports for every destination (UDP can opt in for connected
// sockets with Config.Ports.UDP.Sharing).
//
// A TCP dial that finds the range full fails at once with EADDRNOTAVAIL if
// every port belongs to a live connection; if some belong to connections
// that are closing (FIN exchange under way, or TIME_WAIT with
// Config.TimeWaitReuse), it waits up to 250 ms, or its context's deadline,
// for one of them. With 8 ports and 4 busy dialers this is the difference
// between thousands of failures per second and none (bench/fastpath
// connrate).
//
// Errors follow package net: a *net.OpError whose inner error matches
// syscall errnos (ECONNREFUSED, EADDRNOTAVAIL, EADDRINUSE, ...),
// os.ErrDeadlineExceeded and net.ErrClosed with errors.Is; port
// exhaustion also matches portalloc.ErrExhausted.
package stack

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const nicID tcpip.NICID = 1

// gVisor's own ephemeral range is fenced into privileged ports that no
// dial of ours asks for; see the package doc.
const trapFirst, trapLast = 1, 1023

// Stack is a user-space TCP/IP stack. Its methods are safe for concurrent
// use.
//
// LOCK ORDERING of the package's locks, outer first:
//
//	addrMu > Stack.mu
//	decision.mu (of TCPRequest, UDPRequest) > pendingFlows.mu, Stack.mu
//	readMu, writeMu (of TCPConn, packetConn) > deadline.mu
//
// Stack.mu, reaper.mu, deadline.mu, pendingFlows.mu, resolver.mu,
// Capture.mu, Capture.dmu, echoLink.mu and echoInbox.mu are leaves among
// them: nothing else of this package is locked while one is held. A port pool's lock (portalloc) is
// held while allocate's Veto binds a gVisor endpoint, so it comes before
// gVisor's endpoint and port-manager locks. gVisor holds an endpoint's
// waiter-queue lock while it notifies the reaper, which then takes
// reaper.mu and a pool's lock: that queue lock comes before both.
type Stack struct {
	s     *gvstack.Stack
	alloc *portalloc.Allocator
	log   *slog.Logger
	dns   []netip.AddrPort
	reuse bool
	has4  atomic.Bool // the stack has an IPv4 address
	has6  atomic.Bool // the stack has an IPv6 address

	reap *reaper
	link gvstack.LinkEndpoint // the NIC's link, detached first on Close

	capture     *Capture       // Config.Capture's link, nil without capture
	echo        *echoLink      // the link right under the NIC: echo replies' fast path
	rs          *resolver      // name resolution: search domains, cache
	heDelay     time.Duration  // Config.HappyEyeballsDelay
	promiscuous bool           // Config.Promiscuous
	handlers    sync.WaitGroup // running HandleTCP and HandleUDP handlers and Resolver servers
	pending     pendingFlows   // UDP flows whose handler is deciding

	// mu guards the fields below. It comes after addrMu and the
	// requests' decision.mu, and before gVisor's endpoint locks
	// (RemoveAddress reads endpoints' addresses under it).
	mu     sync.Mutex
	closed bool
	// open holds every conn, listener and packet conn not yet closed, so
	// that Close can close them.
	open map[closer]struct{}

	closeOnce sync.Once
}

type closer interface{ closeFromStack() }

// closeState is the once-only close of a conn, listener or packet conn.
type closeState struct {
	once   sync.Once
	closed chan struct{} // closed by the close, which unblocks pending calls
}

func newCloseState() closeState { return closeState{closed: make(chan struct{})} }

// closeOnce runs f unless a close ran already, and reports whether it
// did.
func (s *closeState) closeOnce(f func()) bool {
	first := false
	s.once.Do(func() { first = true; f() })
	return first
}

func (s *closeState) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// New builds a Stack from cfg, or returns an error naming the invalid
// field.
func New(cfg Config) (*Stack, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ports := cfg.Ports
	if ports.TCP.Sharing == portalloc.SharingDefault {
		ports.TCP.Sharing = portalloc.PerDestination
	}
	alloc, err := portalloc.New(ports)
	if err != nil {
		return nil, fmt.Errorf("ustack: Config.Ports: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	link := cfg.Link
	addrs := cfg.Addrs
	if link == nil {
		link = loopback.New()
		if len(addrs) == 0 {
			addrs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}
		}
	}
	if cfg.MTU != 0 && cfg.MTU != link.MTU() {
		link = &mtuLink{LinkEndpoint: link, mtu: cfg.MTU}
	}
	var capture *Capture
	if cfg.Capture != nil {
		snap := cfg.CaptureSnapLen
		if snap == 0 {
			snap = DefaultCaptureSnapLen
		}
		if capture, err = newCaptureLink(link, cfg.Capture, snap, log); err != nil {
			return nil, fmt.Errorf("ustack: Config.Capture: %w", err)
		}
		link = capture
	}
	echo := newEchoLink(link)
	link = echo
	st := &Stack{
		alloc: alloc,
		log:   log,
		dns:   cfg.DNS,
		reuse: cfg.TimeWaitReuse,
		open:  make(map[closer]struct{}),
	}
	st.capture, st.echo, st.rs, st.heDelay, st.promiscuous = capture, echo, newResolver(cfg), cfg.HappyEyeballsDelay, cfg.Promiscuous
	for _, p := range addrs {
		if p.Addr().Is4() {
			st.has4.Store(true)
		} else {
			st.has6.Store(true)
		}
	}
	netProtos := []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol}
	if link != nil && link.ARPHardwareType() == header.ARPHardwareEther {
		// An Ethernet link (a TAP device): IPv4 needs ARP to find its
		// neighbours (IPv6 has NDP built in).
		netProtos = append(netProtos, arp.NewProtocol)
	}
	s := gvstack.New(gvstack.Options{
		NetworkProtocols:   netProtos,
		TransportProtocols: []gvstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		// With promiscuous mode every address would count as local.
		HandleLocal: !cfg.Promiscuous,
	})
	st.s = s
	st.link = link
	fail := func(format string, args ...any) (*Stack, error) {
		s.Destroy()
		return nil, fmt.Errorf(format, args...)
	}
	if err := st.tune(cfg); err != nil {
		return fail("ustack: %v", err)
	}
	if terr := s.CreateNIC(nicID, link); terr != nil {
		return fail("ustack: attaching Config.Link: %v", translate(terr))
	}
	for i, p := range addrs {
		pa := tcpip.ProtocolAddress{
			Protocol:          ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpAddr(p.Addr()), PrefixLen: p.Bits()},
		}
		if p.Addr().Is6() {
			pa.Protocol = ipv6.ProtocolNumber
		}
		if terr := s.AddProtocolAddress(nicID, pa, gvstack.AddressProperties{}); terr != nil {
			return fail("ustack: Config.Addrs[%d] %s: %v", i, p, translate(terr))
		}
	}
	echo.setLocal(st.Addresses())
	if cfg.Promiscuous {
		if terr := s.SetPromiscuousMode(nicID, true); terr != nil {
			return fail("ustack: promiscuous mode: %v", translate(terr))
		}
		if terr := s.SetSpoofing(nicID, true); terr != nil {
			return fail("ustack: spoofing: %v", translate(terr))
		}
	}
	routes := cfg.Routes
	if len(routes) == 0 {
		if st.has4.Load() {
			routes = append(routes, netip.MustParsePrefix("0.0.0.0/0"))
		}
		if st.has6.Load() {
			routes = append(routes, netip.MustParsePrefix("::/0"))
		}
	}
	table := make([]tcpip.Route, 0, len(routes))
	for _, r := range routes {
		table = append(table, tcpip.Route{Destination: subnetOf(r), NIC: nicID})
	}
	s.SetRouteTable(table)
	st.reap = newReaper(st)
	return st, nil
}

// tune applies the transport settings.
func (st *Stack) tune(cfg Config) error {
	tw := cfg.TimeWait
	if tw == 0 {
		tw = 60 * time.Second
	}
	opts := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"TIME_WAIT timeout", ptr(tcpip.TCPTimeWaitTimeoutOption(tw))},
		// ustack does TIME_WAIT reuse itself, for explicit binds;
		// gVisor's applies only to its own picker.
		{"TIME_WAIT reuse", ptr(tcpip.TCPTimeWaitReuseDisabled)},
		// The figures below are from bench/fastpath on a 2-core VM,
		// ustack<->kernel over a TUN with offloads, 2 s runs, Gbit/s
		// (docs/BENCHMARKS.md has the method). They are set explicitly
		// so that a gVisor upgrade does not change them unnoticed.
		//
		// SACK recovers several losses per window in one round trip;
		// Linux has it on. Turning it off measured no slower here (no
		// loss on a TUN), but a stack dialling through a VPN does see
		// loss.
		{"SACK", ptr(tcpip.TCPSACKEnabled(true))},
		// RACK off (gVisor's default is on). With 4 streams uploading,
		// RACK's time-based loss detection entered recovery 119-265
		// times per run and gVisor classed nearly every one as spurious
		// (the kernel receiver had lost nothing), halving cwnd each
		// time: 22.0-25.1 Gbps at MTU 1500/65520, against 32.1-33.5
		// with RACK off and zero retransmissions (1 stream: 20.5-22.9
		// vs 22.5-25.5). Loss detection then falls back to SACK's
		// three-duplicate rule (RFC 6675), which is what Tailscale ran
		// for a long time for the same reason (tailscale/tailscale#14896);
		// on a path that reorders more than three segments that rule
		// mistakes reordering for loss (tailscale/tailscale#20893), so an
		// embedder on such a path can turn RACK back on through GVisor().
		{"loss recovery (RACK off)", ptr(tcpip.TCPRecovery(0))},
		// Reno, gVisor's default, kept explicitly. Over the TUN there is
		// no loss, so the congestion controller hardly matters: cubic
		// measured the same or lower (1 stream, MTU 1500 upload: 19.5 vs
		// 22.5 Gbps; others within 5%). Cubic pays off on long lossy
		// paths, and gVisor's cubic had a cwnd overflow until mid-2026
		// (google/gvisor#11632), which is why Tailscale went back to
		// reno for a year.
		{"congestion control", ptr(tcpip.CongestionControlOption("reno"))},
		// Send buffer: gVisor's 1 MiB default and 4 MiB ceiling, kept
		// explicitly (8 MiB measured no faster uploading).
		//
		// Receive buffer: 4 MiB default, 8 MiB ceiling (gVisor: 1 and
		// 4). Our receive window is what paces a kernel sender, and
		// downloads measured faster with the larger one, in the same
		// runs (bench/fastpath throughput, 3 runs each, after the
		// link stopped summing inbound checksums twice): 1 stream at
		// MTU 1500 7.2-7.6 -> 8.5-8.7 Gbps (0.50 -> 0.57x veth), 4
		// streams 10.4-11.5 -> 13.7-14.7, 1 stream at MTU 65520
		// 9.6-10.5 -> 12.6-13.1. A 256 KiB default cost a third. Linux's
		// own ceiling (tcp_rmem) is 6 MiB. Idle memory is not the
		// price: gVisor allocates receive buffers as data arrives, so
		// an idle connection costs the same with either (bench/fastpath
		// memory); a reader that stops reading lets up to the ceiling
		// queue, as on Linux.
		{"send buffer", &tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcp.MaxBufferSize}},
		{"receive buffer", &tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 4 << 20, Max: 8 << 20}},
		// Receive-buffer auto-tuning lets the window grow with the
		// bandwidth-delay product up to the ceiling. Off measured within
		// run-to-run noise here (a TUN's BDP is tiny), on matters on a
		// WAN.
		{"receive buffer moderation", ptr(tcpip.TCPModerateReceiveBufferOption(true))},
	}
	for _, o := range opts {
		if terr := st.s.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); terr != nil {
			return fmt.Errorf("setting TCP %s: %v", o.name, translate(terr))
		}
	}
	if terr := st.s.SetPortRange(trapFirst, trapLast); terr != nil {
		return fmt.Errorf("fencing gVisor's port range: %v", translate(terr))
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// Close closes every connection, listener and packet conn of the stack
// (their blocked calls return net.ErrClosed), releases every port, shuts
// gVisor down, closes the link and waits for every goroutine the stack
// started. It is idempotent and always returns nil.
func (st *Stack) Close() error {
	st.closeOnce.Do(func() {
		st.mu.Lock()
		st.closed = true
		open := make([]closer, 0, len(st.open))
		for c := range st.open {
			open = append(open, c)
		}
		st.open = nil
		st.mu.Unlock()
		for _, c := range open {
			c.closeFromStack()
		}
		st.s.Close()
		// Stop the link's inbound dispatchers before Wait: Wait removes
		// the NIC holding the stack's lock and detaches the link, which
		// waits for the dispatchers, while a dispatcher delivering a
		// packet may need that lock (to route a reply), a deadlock.
		// Detaching again from Wait is a no-op.
		st.link.Attach(nil)
		st.s.Wait()
		st.reap.stop()
		st.handlers.Wait()
		for _, q := range st.pending.flows {
			for _, p := range q {
				p.DecRef()
			}
		}
		if st.capture != nil {
			st.capture.Stop()
		}
	})
	return nil
}

// track registers c to be closed by Close. It fails once the stack is
// closed.
func (st *Stack) track(c closer) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return closedErr{}
	}
	st.open[c] = struct{}{}
	return nil
}

func (st *Stack) untrack(c closer) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.open != nil {
		delete(st.open, c)
	}
}

func (st *Stack) isClosed() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.closed
}

// Ports returns a snapshot of each protocol's port pool.
func (st *Stack) Ports() []portalloc.Snapshot { return st.alloc.Snapshots() }

// Allocator returns the stack's port allocator, for inspection and for
// run-time changes such as Exclude.
func (st *Stack) Allocator() *portalloc.Allocator { return st.alloc }

// SetPortRange changes a protocol's ephemeral range at run time. Ports
// held outside the new range stay valid until released.
func (st *Stack) SetPortRange(proto portalloc.Protocol, r portalloc.Range) error {
	p := st.alloc.Pool(proto)
	if p == nil {
		return fmt.Errorf("ustack: SetPortRange: unknown protocol %v", proto)
	}
	return p.SetRange(r)
}

// GVisor returns the underlying gVisor stack, for what this package does
// not wrap (forwarders, statistics). Ports bound on it directly bypass the
// allocator.
func (st *Stack) GVisor() *gvstack.Stack { return st.s }

func netProtoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func tcpAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

func netipAddr(a tcpip.Address) netip.Addr {
	switch a.Len() {
	case 4:
		return netip.AddrFrom4(a.As4())
	case 16:
		return netip.AddrFrom16(a.As16()).Unmap()
	}
	return netip.Addr{}
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	fa := tcpip.FullAddress{Port: ap.Port()}
	if ap.Addr().IsValid() && !ap.Addr().IsUnspecified() {
		fa.Addr = tcpAddr(ap.Addr())
	}
	return fa
}

func addrPortOf(fa tcpip.FullAddress) netip.AddrPort {
	return netip.AddrPortFrom(netipAddr(fa.Addr), fa.Port)
}

func subnetOf(p netip.Prefix) tcpip.Subnet {
	p = p.Masked()
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	mask := make([]byte, bits/8)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	sub, err := tcpip.NewSubnet(tcpAddr(p.Addr()), tcpip.MaskFromBytes(mask))
	if err != nil {
		panic(fmt.Sprintf("ustack: subnet %s: %v", p, err)) // masked above, cannot happen
	}
	return sub
}

// mtuLink overrides a link's MTU.
type mtuLink struct {
	gvstack.LinkEndpoint
	mtu uint32
}

func (l *mtuLink) MTU() uint32 { return l.mtu }

// GSOMaxSize and SupportedGSO pass the link's GSO support through (gVisor
// looks for it with a type assertion on the NIC's endpoint).
func (l *mtuLink) GSOMaxSize() uint32 {
	if g, ok := l.LinkEndpoint.(gvstack.GSOEndpoint); ok {
		return g.GSOMaxSize()
	}
	return 0
}

func (l *mtuLink) SupportedGSO() gvstack.SupportedGSO {
	if g, ok := l.LinkEndpoint.(gvstack.GSOEndpoint); ok {
		return g.SupportedGSO()
	}
	return gvstack.GSONotSupported
}
