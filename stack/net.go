package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// DialContext connects to address on the named network, as
// (*net.Dialer).DialContext does. Networks: "tcp", "tcp4", "tcp6", "udp",
// "udp4", "udp6", and "ping4", "ping6" or "ping" (either family) for an
// ICMP echo socket (a *PingConn). The address is "host:port", or just the
// host for ping; a host name is resolved through the stack's DNS servers
// (Config.DNS) and its addresses ordered by RFC 6724; a TCP dial to a
// name with addresses of both families races them (Happy Eyeballs, RFC
// 8305, see Config.HappyEyeballsDelay), a UDP one takes the first.
func (st *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := checkNetwork(network); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if isPing(network) {
		return st.dialPing(ctx, network, address)
	}
	addrs, err := st.resolve(ctx, "dial", network, address)
	if err != nil {
		return nil, err
	}
	return st.dialAddrs(ctx, network, addrs)
}

// Dial is DialContext with a background context.
func (st *Stack) Dial(network, address string) (net.Conn, error) {
	return st.DialContext(context.Background(), network, address)
}

// Listen listens for TCP connections on address ("host:port", where an
// empty host means every address and port 0 takes a port from the pool).
// Networks: "tcp", "tcp4", "tcp6". As in package net, "tcp6" on the
// unspecified address listens on IPv6 only, and "tcp" on it on both
// families.
func (st *Stack) Listen(network, address string) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
	}
	ap, err := parseLocal(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	return st.listenTCP(ap, 0, network == "tcp6")
}

// ListenPacket opens a UDP socket on address, like net.ListenPacket.
// Networks: "udp", "udp4", "udp6"; "udp6" on the unspecified address
// receives IPv6 only, "udp" on it both families. "ping4" and "ping6" open
// an unconnected ICMP echo socket (a *PingConn); its address is a literal
// IP address or empty, optionally with ":ID" to choose the identifier.
func (st *Stack) ListenPacket(network, address string) (net.PacketConn, error) {
	if isPing(network) {
		return st.listenPing(network, address)
	}
	if !isUDP(network) {
		return nil, &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("%w; want udp, udp4, udp6, ping4 or ping6", net.UnknownNetworkError(network))}
	}
	ap, err := parseLocal(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	return st.udp("listen", ap, netip.AddrPort{}, network == "udp6")
}

func checkNetwork(network string) error {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "ping", "ping4", "ping6":
		return nil
	}
	return fmt.Errorf("%w; want tcp, tcp4, tcp6, udp, udp4, udp6, ping, ping4 or ping6", net.UnknownNetworkError(network))
}

func isPing(network string) bool {
	return network == "ping" || network == "ping4" || network == "ping6"
}

// parseLocal parses a local "host:port" whose host must be a literal
// address or empty.
func parseLocal(network, address string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := parsePort(network, portStr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var a netip.Addr
	if host != "" {
		if a, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, &net.AddrError{Err: "local address must be a literal IP address", Addr: host}
		}
		a = a.Unmap()
		if err := familyMatches(network, a); err != nil {
			return netip.AddrPort{}, err
		}
	} else if network == "tcp4" || network == "udp4" {
		a = netip.IPv4Unspecified()
	} else if network == "tcp6" || network == "udp6" {
		a = netip.IPv6Unspecified()
	}
	return netip.AddrPortFrom(a, port), nil
}

func parsePort(network, s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err == nil {
		return uint16(n), nil
	}
	p, lerr := net.LookupPort(network, s)
	if lerr != nil {
		return 0, &net.AddrError{Err: "invalid port (want 0-65535 or a service name)", Addr: s}
	}
	return uint16(p), nil
}

func familyMatches(network string, a netip.Addr) error {
	switch network[len(network)-1] {
	case '4':
		if !a.Is4() {
			return &net.AddrError{Err: "not an IPv4 address", Addr: a.String()}
		}
	case '6':
		if !a.Is6() {
			return &net.AddrError{Err: "not an IPv6 address", Addr: a.String()}
		}
	}
	return nil
}

// resolve turns a remote "host:port" into addresses to try, in order.
func (st *Stack) resolve(ctx context.Context, op, network, address string) ([]netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: op, Net: network, Err: err}
	}
	port, err := parsePort(network, portStr)
	if err != nil {
		return nil, &net.OpError{Op: op, Net: network, Err: err}
	}
	if port == 0 {
		return nil, &net.OpError{Op: op, Net: network, Err: &net.AddrError{Err: "port 0 is not a valid destination", Addr: address}}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if err := familyMatches(network, a); err != nil {
			return nil, &net.OpError{Op: op, Net: network, Err: err}
		}
		return []netip.AddrPort{netip.AddrPortFrom(a, port)}, nil
	}
	ips, err := st.lookup(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: op, Net: network, Err: err}
	}
	var out []netip.AddrPort
	for _, a := range ips {
		if familyMatches(network, a) == nil && ((a.Is4() && st.has4.Load()) || (a.Is6() && st.has6.Load())) {
			out = append(out, netip.AddrPortFrom(a, port))
		}
	}
	if len(out) == 0 {
		return nil, &net.OpError{Op: op, Net: network, Err: &net.DNSError{Err: "no address of a usable family", Name: host, IsNotFound: true}}
	}
	return out, nil
}

var errNoDNS = errors.New("no DNS server configured (Config.DNS)")
