//go:build linux

package sandbox

import (
	"errors"
	"net/netip"

	"github.com/ustacknet/ustack/internal/tcprelay"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

func netipOf(a tcpip.Address) netip.Addr {
	if a.Len() == 4 {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16())
}

// Admission: which of the guest's new flows the Gateway carries, and
// where to. Every path asks admit (the TCP relay, gVisor's TCP forwarder,
// UDP), so that they agree.

var (
	// ErrDenied is the error (matched with errors.Is) of a flow whose
	// destination the Policy or the network's layout refuses.
	ErrDenied = errors.New("sandbox: destination denied")
	// ErrSource is the error (matched with errors.Is) of a flow from an
	// address that is not the guest's: spoofed, or never given to it.
	ErrSource = tcprelay.ErrSource
)

// AdmissionError is admit's refusal of a flow.
type AdmissionError struct {
	Src, Dst netip.AddrPort // the guest's flow
	Reason   string         // why, for people
	Err      error          // ErrDenied or ErrSource
}

func (e *AdmissionError) Error() string { return e.Reason }

func (e *AdmissionError) Unwrap() error { return e.Err }

// admit decides a new guest flow from src to dst: it returns the host
// address to dial, or an *AdmissionError. The caller counts the refusal.
func (g *Gateway) admit(src, dst netip.AddrPort) (netip.AddrPort, error) {
	if !g.guestSource(src.Addr()) {
		return netip.AddrPort{}, &AdmissionError{Src: src, Dst: dst, Reason: "source address outside the guest's networks", Err: ErrSource}
	}
	to, why := g.target(dst)
	if why != "" {
		return netip.AddrPort{}, &AdmissionError{Src: src, Dst: dst, Reason: why, Err: ErrDenied}
	}
	return to, nil
}

// admitForwarded is admit for a flow that gVisor's TCP or UDP forwarder
// hands over (network "tcp" or "udp"), with the guest's addresses read
// from id; a refusal is counted and logged.
func (g *Gateway) admitForwarded(network string, id gvstack.TransportEndpointID) (src, dst, to netip.AddrPort, ok bool) {
	dst = netip.AddrPortFrom(netipOf(id.LocalAddress), id.LocalPort)
	src = netip.AddrPortFrom(netipOf(id.RemoteAddress), id.RemotePort)
	to, err := g.admit(src, dst)
	if err != nil {
		g.denied.Add(1)
		g.log.Debug(network+" flow denied", "src", src, "dst", dst, "why", err)
		return src, dst, netip.AddrPort{}, false
	}
	return src, dst, to, true
}

// target maps a guest destination to the host address to dial, or says
// why not.
func (g *Gateway) target(dst netip.AddrPort) (netip.AddrPort, string) {
	a := dst.Addr()
	if !g.cfg.NoDNS && (a == g.addrs.DNS.Addr() || (g.addrs.DNS6.IsValid() && a == g.addrs.DNS6.Addr())) {
		if dst.Port() != 53 || len(g.cfg.DNSUpstream) == 0 {
			return netip.AddrPort{}, "the DNS address serves only port 53"
		}
		return g.cfg.DNSUpstream[0], ""
	}
	if why := g.cfg.Policy.verdict(a); why != "" {
		return netip.AddrPort{}, why
	}
	if a == g.addrs.Gateway.Addr() || (g.addrs.Gateway6.IsValid() && a == g.addrs.Gateway6.Addr()) {
		if !g.cfg.Policy.AllowHostLoopback {
			return netip.AddrPort{}, "host loopback is closed (Policy.AllowHostLoopback is off)"
		}
		if a.Is4() {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port()), ""
		}
		return netip.AddrPortFrom(netip.IPv6Loopback(), dst.Port()), ""
	}
	if g.inGuestNet(a) || forbidden(a) {
		return netip.AddrPort{}, "not a routable destination"
	}
	return dst, ""
}

func (g *Gateway) inGuestNet(a netip.Addr) bool {
	return g.cfg.CIDR.Contains(a) || (!g.cfg.NoIPv6 && g.cfg.CIDR6.Contains(a))
}

// guestSource reports whether a is an address the guest may send from:
// one of its networks', other than the gateway's own addresses. A flow
// from anywhere else (spoofed, or from an address the guest was never
// given) is refused on every path, so that a guest cannot open flows
// under addresses that are not its own.
func (g *Gateway) guestSource(a netip.Addr) bool {
	ad := g.addrs
	if a == ad.Gateway.Addr() || a == ad.DNS.Addr() {
		return false
	}
	if ad.Guest6.IsValid() && (a == ad.Gateway6.Addr() || a == ad.DNS6.Addr()) {
		return false
	}
	return ad.Guest.Masked().Contains(a) || (ad.Guest6.IsValid() && ad.Guest6.Masked().Contains(a))
}
