//go:build linux

package sandbox

import (
	"context"
	"net/netip"

	"github.com/ustacknet/ustack/internal/tcprelay"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// newRelay makes the TCP relay (package tcprelay) over link, for g.
func newRelay(g *Gateway, link gvstack.LinkEndpoint) (*tcprelay.Relay, error) {
	return tcprelay.New(link, relayGateway{g}, tcprelay.Config{
		MaxSYNs:      g.cfg.MaxSYNs,
		Buffer:       g.cfg.RelayBuffer,
		IdleTimeout:  g.cfg.TCPIdleTimeout,
		DialTimeout:  dialTimeout,
		SocketBlocks: g.cfg.host == nil, // Config.Dial is the caller's
		Logger:       g.log,
	})
}

// relayGateway is the Gateway as the TCP relay sees it.
type relayGateway struct{ g *Gateway }

var _ tcprelay.Gateway = relayGateway{}

// Admit implements tcprelay.Gateway with the admission every path shares.
func (rg relayGateway) Admit(src, dst netip.AddrPort) (netip.AddrPort, error) {
	return rg.g.admit(src, dst)
}

// Socket implements tcprelay.Gateway: a socket of the default dialer's,
// or a duplicate of the descriptor of Config.Dial's connection.
func (rg relayGateway) Socket(ctx context.Context, to netip.AddrPort) (int, bool, error) {
	g := rg.g
	if g.cfg.host != nil {
		return g.cfg.host.socket(to)
	}
	hc, err := g.cfg.Dial(ctx, "tcp", to)
	if err != nil {
		return -1, false, err
	}
	fd, err := socketOf(hc)
	if err != nil {
		g.log.Warn("tcp relay: unusable connection from Config.Dial", "err", err)
		return -1, false, err
	}
	return fd, true, nil
}

// Go implements tcprelay.Gateway: Close waits for fn.
func (rg relayGateway) Go(fn func()) bool { return rg.g.go_(fn) }

// TakeFlow implements tcprelay.Gateway: the relay's flows count against
// MaxFlows with the others.
func (rg relayGateway) TakeFlow() bool { return rg.g.takeFlow() }

// DropFlow implements tcprelay.Gateway.
func (rg relayGateway) DropFlow() { rg.g.dropFlow() }
