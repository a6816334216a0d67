//go:build linux

package sandbox

import (
	"context"
	"errors"
	"net/netip"

	"github.com/ustacknet/ustack/internal/rawsys"
	"github.com/ustacknet/ustack/internal/udprelay"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The guest's UDP flows: gVisor's UDP forwarder hands each new one to
// handleUDP, which admits it and gives it to the UDP relay (package
// internal/udprelay) to carry over a host socket.

// newUDPRelay makes the UDP relay for g.
func newUDPRelay(g *Gateway) (*udprelay.Relay, error) {
	return udprelay.New(udpGateway{g}, udprelay.Config{
		IdleTimeout:  g.cfg.UDPTimeout,
		DialTimeout:  dialTimeout,
		SocketBlocks: g.cfg.host == nil, // Config.Dial is the caller's
		Logger:       g.log,
	})
}

// handleUDP starts carrying a new guest UDP flow. It runs on the packet
// path. Returning false makes the stack answer with ICMP port
// unreachable.
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
	g.udp.Add(ep, wq, to, isDNS)
	return true
}

// udpGateway is the Gateway as the UDP relay sees it.
type udpGateway struct{ g *Gateway }

var _ udprelay.Gateway = udpGateway{}

// Socket implements udprelay.Gateway: a socket of the default dialer's,
// from the outbound address of its family if one is set, or a duplicate
// of the descriptor of Config.Dial's connection.
func (ug udpGateway) Socket(ctx context.Context, to netip.AddrPort) (int, error) {
	g := ug.g
	if g.cfg.host != nil {
		return rawsys.ConnectUDP(to, g.cfg.host.local(to.Addr().Unmap()))
	}
	hc, err := g.cfg.Dial(ctx, "udp", to)
	if err != nil {
		return -1, err
	}
	fd, err := dupSocket(hc)
	if errors.Is(err, errNoSocket) {
		return -1, errors.New("Config.Dial returned a connection without a descriptor (not a syscall.Conn)")
	}
	return fd, err
}

// Go implements udprelay.Gateway: Close waits for fn.
func (ug udpGateway) Go(fn func()) bool { return ug.g.go_(fn) }

// DropFlow implements udprelay.Gateway.
func (ug udpGateway) DropFlow() { ug.g.dropFlow() }
