//go:build linux

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ustacknet/ustack/internal/tcprelay"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
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
	// the resolver (see ra.go), for guests that configure IPv6 themselves
	// (slirp4netns's do). Off by default: Run and Attach configure the
	// guest's address and routes.
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

// hostDialer opens the gateway's host sockets, from the outbound
// addresses if set.
type hostDialer struct{ out4, out6 netip.Addr }

var (
	netDialer = net.Dialer{KeepAlive: -1}
	// boundDialer binds the source address but leaves the port to
	// connect (bindNoPort).
	boundDialer = net.Dialer{KeepAlive: -1, Control: func(network, address string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			if strings.HasPrefix(network, "tcp") {
				bindNoPort(int(fd))
			}
		})
	}}
)

// local returns the address to bind for a connection to a, or none.
func (d hostDialer) local(a netip.Addr) netip.Addr {
	if a.IsLoopback() {
		return netip.Addr{}
	}
	if a.Is4() {
		return d.out4
	}
	return d.out6
}

// bindNoPort asks a TCP socket's bind to leave the port to connect, so
// that a bound source does not reserve a port for every destination at
// once. Best effort: without it the bind picks the port.
func bindNoPort(fd int) {
	unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
}

// dial is Config.Dial's default.
func (d hostDialer) dial(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
	local := d.local(addr.Addr().Unmap())
	if !local.IsValid() {
		// Not Dialer.DialTCP/DialUDP: they always bind, to the wildcard
		// address when given none, which for TCP picks the port at bind
		// time, unique across all destinations.
		return netDialer.DialContext(ctx, network, addr.String())
	}
	dd := boundDialer
	if network == "udp" {
		dd.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	} else {
		dd.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	return dd.DialContext(ctx, network, addr.String())
}

// Stats counts what the Gateway did.
type Stats struct {
	TCPFlows   uint64 `json:"tcp_flows"`   // guest TCP connections carried
	UDPFlows   uint64 `json:"udp_flows"`   // guest UDP flows carried
	DNSQueries uint64 `json:"dns_queries"` // queries to the DNS address
	Denied     uint64 `json:"denied"`      // flows refused by policy
	Refused    uint64 `json:"refused"`     // flows refused over MaxFlows or failed to dial
	Inbound    uint64 `json:"inbound"`     // connections or flows through forwards
	Live       int64  `json:"live"`        // flows open now
}

// Gateway is the host side of a sandbox network.
type Gateway struct {
	cfg   Config
	addrs Addrs
	st    *stack.Stack
	log   *slog.Logger
	relay *tcprelay.Relay // nil with NoTCPRelay, or on a link the relay cannot serve
	udp   *udpCarrier

	tcpFlows, udpFlows, dnsQueries, denied, refused, inbound atomic.Uint64
	live                                                     atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the Gateway starts

	mu       sync.Mutex // guards the fields below
	closed   bool
	open     map[io.Closer]struct{} // host-side sockets and listeners
	forwards map[string]*forwarder  // by Forward.String()

	closeOnce sync.Once
}

// NewGateway builds the stack on cfg.Link and starts serving the guest.
// A field it refuses gives a *ConfigError.
func NewGateway(cfg Config) (*Gateway, error) {
	if cfg.Link == nil {
		return nil, fieldError("Link", nil)
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return newGateway(cfg)
}

// newGateway is NewGateway for a cfg, with its Link, that check has
// passed.
func newGateway(cfg Config) (*Gateway, error) {
	addrs := cfg.addrs()
	if len(cfg.DNSUpstream) == 0 {
		cfg.DNSUpstream = resolvConf("/etc/resolv.conf")
	}
	link := cfg.Link
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{cfg: cfg, addrs: addrs, log: cfg.Logger, ctx: ctx, cancel: cancel,
		open: make(map[io.Closer]struct{}), forwards: make(map[string]*forwarder)}
	if cfg.Capture != nil {
		c, err := stack.NewCapture(link, cfg.Capture, cfg.CaptureSnapLen, cfg.Logger)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("sandbox: Config.Capture: %w", err)
		}
		link = c
	}
	if !cfg.NoTCPRelay && tcprelay.Usable(link) {
		// Next to the device, so that its readers find the relay's
		// tun.InlineDispatcher.
		r, err := newRelay(g, link)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("sandbox: TCP relay: %w", err)
		}
		g.relay = r
		link = r
	}
	var solicit chan struct{}
	if cfg.RouterAdvertisements && !cfg.NoIPv6 {
		solicit = make(chan struct{}, 1)
		link = newRSWatch(link, func() {
			select {
			case solicit <- struct{}{}:
			default:
			}
		})
	}
	sc := stack.Config{
		Link:        link,
		Promiscuous: true,
		TimeWait:    cfg.TimeWait,
		Addrs:       []netip.Prefix{addrs.Gateway, addrs.DNS},
		Ports:       cfg.Ports,
		Logger:      cfg.Logger,
	}
	if !cfg.NoIPv6 {
		sc.Addrs = append(sc.Addrs, addrs.Gateway6, addrs.DNS6)
		if solicit != nil {
			sc.Addrs = append(sc.Addrs, netip.PrefixFrom(raSource, 64))
		}
	}
	udpc, err := newUDPCarrier(g)
	if err != nil {
		cancel()
		if g.relay != nil {
			g.relay.Close()
		}
		return nil, fmt.Errorf("sandbox: UDP flows: %w", err)
	}
	g.udp = udpc
	st, err := stack.New(sc)
	if err != nil {
		cancel()
		if g.relay != nil {
			g.relay.Close()
		}
		udpc.ep.Close()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	g.st = st
	if g.relay != nil {
		g.relay.Start()
	}
	udpc.start()
	s := st.GVisor()
	tf := tcp.NewForwarder(s, 0, cfg.MaxSYNs, g.handleTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s, g.handleUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	if solicit != nil {
		g.wg.Add(1)
		go g.advertise(solicit)
	}
	return g, nil
}

// Stack returns the Gateway's stack.
func (g *Gateway) Stack() *stack.Stack { return g.st }

// Addrs returns the network's addresses.
func (g *Gateway) Addrs() Addrs { return g.addrs }

// Stats returns the counters.
func (g *Gateway) Stats() Stats {
	var rs tcprelay.Stats // the relay counts its own flows and refusals
	if g.relay != nil {
		rs = g.relay.Stats()
	}
	return Stats{TCPFlows: g.tcpFlows.Load() + rs.Flows, UDPFlows: g.udpFlows.Load(), DNSQueries: g.dnsQueries.Load(),
		Denied: g.denied.Load() + rs.Denied, Refused: g.refused.Load() + rs.Refused, Inbound: g.inbound.Load(), Live: g.live.Load()}
}

// Ports returns the allocator snapshots of the Gateway's stack.
func (g *Gateway) Ports() []portalloc.Snapshot { return g.st.Ports() }

// Close stops every forward and flow, closes the stack and waits for every
// goroutine. It is idempotent.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.mu.Lock()
		g.closed = true
		open := make([]io.Closer, 0, len(g.open))
		for c := range g.open {
			open = append(open, c)
		}
		g.mu.Unlock()
		g.cancel()
		if g.relay != nil {
			g.relay.Close()
		}
		g.udp.close()
		for _, c := range open {
			c.Close()
		}
		g.st.Close()
		g.wg.Wait()
	})
	return nil
}

// track registers a host-side closer; it fails after Close.
func (g *Gateway) track(c io.Closer) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.open[c] = struct{}{}
	return true
}

func (g *Gateway) untrack(c io.Closer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.open, c)
}

// go_ runs fn in a goroutine the Gateway waits for on Close.
func (g *Gateway) go_(fn func()) bool {
	if !g.enter() {
		return false
	}
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// enter counts the calling goroutine among those Close waits for, unless
// the Gateway is closed; the caller calls g.wg.Done when it is done.
func (g *Gateway) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

// takeFlow reserves a flow slot, or reports that the cap is reached.
func (g *Gateway) takeFlow() bool {
	if g.live.Add(1) > int64(g.cfg.MaxFlows) {
		g.live.Add(-1)
		g.refused.Add(1)
		return false
	}
	return true
}

func (g *Gateway) dropFlow() { g.live.Add(-1) }

func netipOf(a tcpip.Address) netip.Addr {
	if a.Len() == 4 {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16())
}

// handleTCP carries one guest TCP connection. It runs on the packet path,
// so the dial happens in a goroutine; the guest's handshake completes
// only once the host connection is up, so a refusal reaches the guest as
// a RST.
func (g *Gateway) handleTCP(r *tcp.ForwarderRequest) {
	src, dst, to, ok := g.admitForwarded("tcp", r.ID())
	if !ok {
		r.Complete(true)
		return
	}
	if !g.takeFlow() {
		g.log.Warn("tcp flow refused: too many flows", "src", src, "dst", dst, "max", g.cfg.MaxFlows)
		r.Complete(true)
		return
	}
	// gVisor runs each request on a goroutine of its own: carry the
	// flow on it rather than start another one.
	growStack(0)
	if !g.enter() {
		g.dropFlow()
		r.Complete(true)
		return
	}
	defer g.wg.Done()
	g.carryTCP(r, src, dst, to)
}

// growStack grows the calling goroutine's stack to 32 KiB while it is
// still shallow. A flow's goroutine starts with Go's minimum stack and
// otherwise grows it twice, deep inside the host dial and gVisor's
// handshake, where each growth copies and adjusts every frame: 5% of the
// gateway's CPU at 6,000 connections/s. One growth here, with three frames
// to copy, costs a fraction of that.
//
//go:noinline
func growStack(i int) byte {
	var b [16 << 10]byte
	return b[i]
}

func (g *Gateway) carryTCP(r *tcp.ForwarderRequest, src, dst, to netip.AddrPort) {
	defer g.dropFlow()
	ctx, cancel := context.WithTimeout(g.ctx, dialTimeout)
	hc, err := g.cfg.Dial(ctx, "tcp", to)
	cancel()
	if err != nil {
		g.refused.Add(1)
		g.log.Debug("tcp dial failed", "src", src, "dst", dst, "to", to, "err", err)
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		hc.Close()
		return
	}
	r.Complete(false)
	gc, err := g.st.WrapTCP(ep, &wq)
	if err != nil {
		hc.Close()
		return
	}
	g.tcpFlows.Add(1)
	g.splice(gc, hc)
}

// halfCloser is a stream with CloseWrite, and an abortive close.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

func abort(c net.Conn) {
	switch c := c.(type) {
	case *stack.TCPConn:
		c.Abort()
	case *net.TCPConn:
		c.SetLinger(0)
		c.Close()
	default:
		c.Close()
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE)
}

// splice copies both ways between a guest conn and a host conn, carrying
// half-close as half-close and a reset as a reset, until both directions
// end or the Gateway closes.
func (g *Gateway) splice(guest, host net.Conn) {
	if !g.track(host) {
		guest.Close()
		host.Close()
		return
	}
	defer g.untrack(host)
	var (
		wg    sync.WaitGroup
		reset atomic.Bool
	)
	copyOne := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := copyStream(dst, src)
		if err != nil && (isReset(err) || errors.Is(err, net.ErrClosed)) {
			if reset.CompareAndSwap(false, true) {
				abort(dst)
				abort(src)
			}
			return
		}
		if hc, ok := dst.(halfCloser); ok {
			hc.CloseWrite()
		}
	}
	wg.Add(2)
	go copyOne(host, guest)
	copyOne(guest, host)
	wg.Wait()
	if !reset.Load() {
		guest.Close()
		host.Close()
	}
}

// handleUDP starts carrying a new guest UDP flow (udpcarry.go). It runs
// on the packet path. Returning false makes the stack answer with ICMP
// port unreachable.
func (g *Gateway) handleUDP(r *udp.ForwarderRequest) bool {
	src, dst, to, ok := g.admitForwarded("udp", r.ID())
	if !ok {
		return false
	}
	if !g.takeFlow() {
		g.log.Warn("udp flow refused: too many flows", "src", src, "dst", dst, "max", g.cfg.MaxFlows)
		return false
	}
	wq := new(waiter.Queue)
	ep, terr := r.CreateEndpoint(wq)
	if terr != nil {
		g.dropFlow()
		g.log.Debug("udp endpoint", "err", terr)
		return true
	}
	isDNS := dst.Addr() == g.addrs.DNS.Addr() || (g.addrs.DNS6.IsValid() && dst.Addr() == g.addrs.DNS6.Addr())
	g.udp.add(ep, wq, to, isDNS)
	return true
}

// resolvConf reads the nameservers of a resolv.conf file.
func resolvConf(path string) []netip.AddrPort {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			a, err := netip.ParseAddr(strings.Split(f[1], "%")[0])
			if err == nil {
				out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
			}
		}
	}
	return out
}
