//go:build linux

package sandbox

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/ustacknet/ustack/internal/ra"
	"github.com/ustacknet/ustack/internal/tcprelay"
	"github.com/ustacknet/ustack/internal/udprelay"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

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
	udp   *udprelay.Relay

	tcpFlows, denied, refused, inbound atomic.Uint64
	live                               atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the Gateway starts

	// mu guards the fields below. LOCK ORDERING: a TCP relay flow's lock
	// and slirpapi.Server's lock come before it (tcprelay.Gateway); forwarder.mu and
	// the UDP relay's locks (udprelay) are never held with it.
	mu       sync.Mutex
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
	var adv *ra.Advertiser
	if cfg.RouterAdvertisements && !cfg.NoIPv6 {
		adv = ra.New(link, g.raConfig(), cfg.Logger)
		link = adv
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
		if adv != nil {
			sc.Addrs = append(sc.Addrs, netip.PrefixFrom(ra.Source, 64))
		}
	}
	udpc, err := newUDPRelay(g)
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
		udpc.Close()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	g.st = st
	if g.relay != nil {
		g.relay.Start()
	}
	udpc.Start()
	s := st.GVisor()
	tf := tcp.NewForwarder(s, 0, cfg.MaxSYNs, g.handleTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s, g.handleUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	if adv != nil {
		g.go_(func() { adv.Run(ctx, s) })
	}
	return g, nil
}

// raConfig is what the router advertisements advertise (package
// internal/ra): CIDR6, and DNS6 as the resolver unless DNS is off.
func (g *Gateway) raConfig() ra.Config {
	c := ra.Config{Prefix: g.cfg.CIDR6}
	if !g.cfg.NoDNS {
		c.DNS = g.addrs.DNS6.Addr()
	}
	return c
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
	us := g.udp.Stats() // and so does the UDP relay
	return Stats{TCPFlows: g.tcpFlows.Load() + rs.Flows, UDPFlows: us.Flows, DNSQueries: us.DNS,
		Denied: g.denied.Load() + rs.Denied, Refused: g.refused.Load() + rs.Refused + us.Refused, Inbound: g.inbound.Load(), Live: g.live.Load()}
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
		g.udp.Close()
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
