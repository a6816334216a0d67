//go:build linux

package ra

import (
	"context"
	"log/slog"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// minGap is the least time between two adverts a solicitation sends.
const minGap = 200 * time.Millisecond

// When the unsolicited adverts go: after the delays of early from start,
// then every (variables for the tests).
var (
	early = []time.Duration{0, time.Second, 3 * time.Second, 10 * time.Second}
	every = time.Minute
)

// Advertiser is a link endpoint that passes packets through to the stack
// above it and notes the guest's router solicitations; Run sends the
// adverts.
type Advertiser struct {
	nested.Endpoint
	cfg     Config
	log     *slog.Logger
	solicit chan struct{} // capacity 1: a solicitation came
}

// New makes an Advertiser over link, for cfg; logger receives the
// failures to send (default slog.Default()).
func New(link gvstack.LinkEndpoint, cfg Config, logger *slog.Logger) *Advertiser {
	if logger == nil {
		logger = slog.Default()
	}
	a := &Advertiser{cfg: cfg, log: logger, solicit: make(chan struct{}, 1)}
	a.Endpoint.Init(link, a)
	return a
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (a *Advertiser) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if proto == header.IPv6ProtocolNumber {
		if b, ok := pkt.Data().PullUp(header.IPv6MinimumSize + 1); ok &&
			header.IPv6(b).TransportProtocol() == header.ICMPv6ProtocolNumber &&
			header.ICMPv6Type(b[header.IPv6MinimumSize]) == header.ICMPv6RouterSolicit {
			select {
			case a.solicit <- struct{}{}:
			default:
			}
		}
	}
	a.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// Run sends adverts on s's NICs, which must hold Source, until ctx ends.
// A failure to send is logged.
func (a *Advertiser) Run(ctx context.Context, s *gvstack.Stack) {
	start := time.Now()
	var last time.Time
	sent := 0 // unsolicited adverts so far
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			sent++
			d := every
			if sent < len(early) {
				d = max(time.Until(start.Add(early[sent])), 0)
			}
			timer.Reset(d)
		case <-a.solicit:
			if time.Since(last) < minGap {
				continue
			}
		}
		if err := a.send(s); err != nil {
			a.log.Warn("router advertisement not sent", "err", err)
		}
		last = time.Now()
	}
}

// send writes one advert on each of s's NICs but loopback.
func (a *Advertiser) send(s *gvstack.Stack) error {
	for id, info := range s.NICInfo() {
		if info.Flags.Loopback {
			continue
		}
		mac := info.LinkAddress
		if len(mac) != header.EthernetAddressSize {
			mac = ""
		}
		pkt := Build(a.cfg, mac, info.MTU)
		if err := s.WriteRawPacket(id, ipv6.ProtocolNumber, buffer.MakeWithData(pkt)); err != nil {
			return tcpipError{err}
		}
	}
	return nil
}

// tcpipError is a gVisor error as a Go error.
type tcpipError struct{ err tcpip.Error }

func (e tcpipError) Error() string { return e.err.String() }
