package stack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

var (
	_ net.Conn       = (*PingConn)(nil)
	_ net.PacketConn = (*PingConn)(nil)
	_ net.Addr       = (*PingAddr)(nil)
)

// PingAddr is the address of an ICMP echo socket or of its peer. Its
// network is "ping4" or "ping6", after the family of Addr.
type PingAddr struct {
	Addr netip.Addr
	// ID is the echo identifier of a local socket; 0 for a peer.
	ID uint16
}

// Network returns "ping4" or "ping6".
func (a *PingAddr) Network() string {
	if a.Addr.Is4() {
		return "ping4"
	}
	return "ping6"
}

// String returns the address, as net.IPAddr does.
func (a *PingAddr) String() string { return a.Addr.String() }

// PingConn is an ICMP echo socket of a Stack, as a Linux ping socket
// (SOCK_DGRAM, IPPROTO_ICMP) is: each write sends one ICMP echo request,
// each read returns one echo reply. Written messages are whole ICMP
// messages (type, code, checksum, identifier, sequence number, data, as
// golang.org/x/net/icmp marshals them); the stack sets the identifier to
// the socket's own (ID) and computes the checksum. Read messages are the
// whole echo replies, which carry that identifier.
//
// A PingConn made by a dial is connected: Write sends to its peer and
// Read returns only that peer's replies. One made by ListenPacket sends
// with WriteTo and reads replies from every peer with ReadFrom.
//
// The identifier comes from the stack's ICMP pool (Config.Ports.ICMP) and
// goes back to it on Close. Close unblocks pending calls, which then
// return errors matching net.ErrClosed.
type PingConn struct {
	packetConn
	network string     // "ping4" or "ping6"
	laddr   netip.Addr // the bound address, possibly unspecified
	raddr   netip.Addr // the peer, valid when connected
}

// DialPingAddr makes a connected echo socket to raddr, from laddr (the
// zero Addr means the route's source address). The family of raddr
// chooses ICMPv4 or ICMPv6.
func (st *Stack) DialPingAddr(laddr, raddr netip.Addr) (*PingConn, error) {
	raddr = raddr.Unmap()
	network := pingNetwork(raddr)
	if err := checkPingPeer(raddr); err != nil {
		return nil, pingOpError("dial", network, laddr, raddr, err)
	}
	return st.ping("dial", network, laddr, raddr)
}

// ListenPingAddr opens an unconnected echo socket of the family network
// ("ping4" or "ping6") on laddr; the zero or unspecified Addr receives on
// every address of the family.
func (st *Stack) ListenPingAddr(network string, laddr netip.Addr) (*PingConn, error) {
	if network != "ping4" && network != "ping6" {
		return nil, pingOpError("listen", network, laddr, netip.Addr{}, fmt.Errorf("%w; want ping4 or ping6", net.UnknownNetworkError(network)))
	}
	laddr = laddr.Unmap()
	if laddr.IsValid() {
		if err := familyMatches(network, laddr); err != nil {
			return nil, pingOpError("listen", network, laddr, netip.Addr{}, err)
		}
	}
	return st.ping("listen", network, laddr, netip.Addr{})
}

// dialPing is DialContext for the ping networks: address is a host name
// or a literal address, without a port.
func (st *Stack) dialPing(ctx context.Context, network, address string) (net.Conn, error) {
	host := address
	if _, err := netip.ParseAddr(address); err != nil {
		if h, _, serr := net.SplitHostPort(address); serr == nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: &net.AddrError{Err: "a ping address is a host without a port", Addr: h}}
		}
	}
	addrs, err := st.lookup(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var first error
	for _, a := range addrs {
		if network != "ping" && familyMatches(network, a) != nil {
			if first == nil {
				first = &net.OpError{Op: "dial", Net: network, Err: familyMatches(network, a)}
			}
			continue
		}
		c, err := st.DialPingAddr(netip.Addr{}, a)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no address of a usable family", Name: host, IsNotFound: true}}
	}
	return nil, first
}

// listenPing is ListenPacket for the ping networks: address is a literal
// address or empty, optionally with ":ID" to ask for an identifier (0
// takes one from the ICMP pool).
func (st *Stack) listenPing(network, address string) (net.PacketConn, error) {
	if network == "ping" {
		return nil, &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("%w; ListenPacket wants ping4 or ping6", net.UnknownNetworkError(network))}
	}
	host, idStr := address, ""
	if _, err := netip.ParseAddr(address); err != nil && address != "" {
		h, p, serr := net.SplitHostPort(address)
		if serr != nil {
			return nil, &net.OpError{Op: "listen", Net: network, Err: &net.AddrError{Err: "want a literal IP address, optionally with :ID", Addr: address}}
		}
		host, idStr = h, p
	}
	var a netip.Addr
	if host != "" {
		var err error
		if a, err = netip.ParseAddr(host); err != nil {
			return nil, &net.OpError{Op: "listen", Net: network, Err: &net.AddrError{Err: "local address must be a literal IP address", Addr: host}}
		}
	}
	if idStr == "" || idStr == "0" {
		return st.ListenPingAddr(network, a)
	}
	var id uint16
	if _, err := fmt.Sscan(idStr, &id); err != nil || id == 0 || fmt.Sprint(id) != idStr {
		return nil, &net.OpError{Op: "listen", Net: network, Err: &net.AddrError{Err: "invalid echo identifier (want 0-65535)", Addr: idStr}}
	}
	return st.pingWithID("listen", network, a.Unmap(), netip.Addr{}, id)
}

func pingNetwork(a netip.Addr) string {
	if a.Is4() {
		return "ping4"
	}
	return "ping6"
}

// checkPingPeer refuses what an echo request cannot be sent to.
func checkPingPeer(a netip.Addr) error {
	switch {
	case !a.IsValid() || a.IsUnspecified():
		return &net.AddrError{Err: "no destination address; want a unicast address", Addr: a.String()}
	case a.IsMulticast():
		return &net.AddrError{Err: "ping to a multicast address is not supported; want a unicast address", Addr: a.String()}
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return &net.AddrError{Err: "ping to the broadcast address is not supported; want a unicast address", Addr: a.String()}
	}
	return nil
}

func pingOpError(op, network string, src, dst netip.Addr, err error) *net.OpError {
	oe := &net.OpError{Op: op, Net: network, Err: err}
	if src.IsValid() {
		oe.Source = &PingAddr{Addr: src}
	}
	if dst.IsValid() {
		oe.Addr = &PingAddr{Addr: dst}
	}
	return oe
}

// ping opens an echo socket with an identifier from the pool.
func (st *Stack) ping(op, network string, laddr, raddr netip.Addr) (*PingConn, error) {
	return st.pingWithID(op, network, laddr, raddr, 0)
}

// pingWithID opens an echo socket, bound to laddr (the route's source for
// raddr if unspecified and raddr is valid) with the identifier id, or one
// from the pool if id is 0.
//
// The gVisor endpoint is only bound, never connected: a connect would
// register it with the stack a second time, under the connected ID, and
// Close unregisters only that one, so the identifier would stay taken
// below. A connected PingConn sends to raddr explicitly and filters what
// it reads instead, as a connected ping socket does.
func (st *Stack) pingWithID(op, network string, laddr, raddr netip.Addr, id uint16) (*PingConn, error) {
	netProto := ipv4.ProtocolNumber
	if network == "ping6" {
		netProto = ipv6.ProtocolNumber
	}
	if laddr.IsValid() && laddr.IsMulticast() {
		return nil, pingOpError(op, network, laddr, raddr, &net.AddrError{Err: "local address is multicast; want one of the stack's addresses", Addr: laddr.String()})
	}
	if err := st.checkLocal(laddr, raddr); err != nil {
		return nil, pingOpError(op, network, laddr, raddr, err)
	}
	if !raddr.IsValid() && ((netProto == ipv4.ProtocolNumber && !st.has4.Load()) || (netProto == ipv6.ProtocolNumber && !st.has6.Load())) {
		return nil, pingOpError(op, network, laddr, raddr, syscall.EAFNOSUPPORT)
	}
	if st.isClosed() {
		return nil, pingOpError(op, network, laddr, raddr, closedErr{})
	}
	if raddr.IsValid() && (!laddr.IsValid() || laddr.IsUnspecified()) {
		src, err := st.sourceFor(raddr)
		if err != nil {
			return nil, pingOpError(op, network, laddr, raddr, err)
		}
		laddr = src
	}
	bindAddr := laddr
	if bindAddr.IsValid() && bindAddr.IsUnspecified() {
		bindAddr = netip.Addr{}
	}
	ep, wq, hold, err := st.openEndpoint(context.Background(), portalloc.ICMP, netProto, netip.AddrPortFrom(bindAddr, id), netip.AddrPortFrom(raddr, 0), false)
	if err != nil {
		return nil, pingOpError(op, network, laddr, raddr, err)
	}
	c := &PingConn{network: network, raddr: raddr}
	c.init(st, ep, wq, hold)
	if a, terr := ep.GetLocalAddress(); terr == nil {
		v6 := netProto == ipv6.ProtocolNumber
		in := st.echo.register(bindAddr, v6, a.Port, int(ep.SocketOptions().GetReceiveBufferSize()))
		c.inbox, c.inboxDone = in, func() { st.echo.unregister(bindAddr, v6, a.Port, in) }
	}
	c.laddr = laddr
	if !c.laddr.IsValid() {
		c.laddr = unspecified(netProto)
	}
	if err := c.track(); err != nil {
		c.closeFromStack()
		return nil, pingOpError(op, network, laddr, raddr, err)
	}
	return c, nil
}

// ID returns the socket's echo identifier.
func (c *PingConn) ID() uint16 {
	if a, terr := c.ep.GetLocalAddress(); terr == nil {
		return a.Port
	}
	return c.hold.port
}

func (c *PingConn) opErr(op string, dst netip.Addr, err error) error {
	return pingOpError(op, c.network, c.laddr, dst, err)
}

// ReadFromAddr reads one echo reply into b and returns its sender. A
// reply longer than b is truncated. A connected socket skips replies from
// other peers.
func (c *PingConn) ReadFromAddr(b []byte) (int, netip.Addr, error) {
	var keep func(tcpip.FullAddress) bool
	if c.raddr.IsValid() {
		keep = func(from tcpip.FullAddress) bool { return netipAddr(from.Addr) == c.raddr }
	}
	n, from, err := c.readFrom(b, keep)
	if err != nil {
		return 0, netip.Addr{}, c.opErr("read", c.raddr, err)
	}
	return n, netipAddr(from.Addr), nil
}

// ReadFrom implements net.PacketConn; the address is a *PingAddr.
func (c *PingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromAddr(b)
	if err != nil {
		return n, nil, err
	}
	return n, &PingAddr{Addr: from}, nil
}

// Read implements net.Conn: it returns the next echo reply.
func (c *PingConn) Read(b []byte) (int, error) {
	n, _, err := c.ReadFromAddr(b)
	return n, err
}

// errNotEcho is the inner error of a write that is not an echo request.
type errNotEcho struct{ msg string }

func (e errNotEcho) Error() string { return e.msg }

// Is makes the error match syscall.EINVAL, as the kernel's ping socket
// returns for such a write.
func (e errNotEcho) Is(target error) bool { return target == syscall.EINVAL }

// checkEcho verifies that b is an ICMP echo request of the socket's
// family.
func (c *PingConn) checkEcho(b []byte) error {
	want, name := byte(header.ICMPv4Echo), "ICMPv4 echo request (type 8, code 0)"
	if c.network == "ping6" {
		want, name = byte(header.ICMPv6EchoRequest), "ICMPv6 echo request (type 128, code 0)"
	}
	if len(b) < header.ICMPv4MinimumSize {
		return errNotEcho{fmt.Sprintf("message of %d bytes is too short: want an %s of at least 8 bytes", len(b), name)}
	}
	if b[0] != want || b[1] != 0 {
		return errNotEcho{fmt.Sprintf("ICMP type %d code %d: want an %s", b[0], b[1], name)}
	}
	return nil
}

// WriteToAddr sends b, an echo request, to dst.
func (c *PingConn) WriteToAddr(b []byte, dst netip.Addr) (int, error) {
	dst = dst.Unmap()
	if err := checkPingPeer(dst); err != nil {
		return 0, c.opErr("write", dst, err)
	}
	if err := familyMatches(c.network, dst); err != nil {
		return 0, c.opErr("write", dst, err)
	}
	return c.write(b, dst)
}

// WriteTo implements net.PacketConn. addr is a *PingAddr or a
// *net.IPAddr.
func (c *PingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var dst netip.Addr
	switch a := addr.(type) {
	case *PingAddr:
		dst = a.Addr
	case *net.IPAddr:
		dst, _ = netip.AddrFromSlice(a.IP)
	default:
		return 0, &net.OpError{Op: "write", Net: c.network, Source: c.LocalAddr(), Addr: addr,
			Err: errNotEcho{fmt.Sprintf("address of type %T: want a *stack.PingAddr or a *net.IPAddr", addr)}}
	}
	return c.WriteToAddr(b, dst)
}

// Write implements net.Conn for a connected socket: b, an echo request,
// goes to the peer.
func (c *PingConn) Write(b []byte) (int, error) {
	if !c.raddr.IsValid() {
		return 0, c.opErr("write", c.raddr, syscall.EDESTADDRREQ)
	}
	return c.write(b, c.raddr)
}

func (c *PingConn) write(b []byte, dst netip.Addr) (int, error) {
	if err := c.checkEcho(b); err != nil {
		return 0, c.opErr("write", dst, err)
	}
	to := fullAddr(netip.AddrPortFrom(dst, 0))
	n, err := c.writeTo(b, &to)
	if err != nil {
		return n, c.opErr("write", dst, err)
	}
	return n, nil
}

// Close closes the socket and returns its identifier to the ICMP pool.
// Blocked reads and writes return errors matching net.ErrClosed; so does
// a second Close.
func (c *PingConn) Close() error {
	if !c.close() {
		return c.opErr("close", c.raddr, closedErr{})
	}
	return nil
}

// LocalAddr returns a *PingAddr carrying the identifier.
func (c *PingConn) LocalAddr() net.Addr { return &PingAddr{Addr: c.laddr, ID: c.ID()} }

// RemoteAddr returns a *PingAddr, or nil if not connected.
func (c *PingConn) RemoteAddr() net.Addr {
	if !c.raddr.IsValid() {
		return nil
	}
	return &PingAddr{Addr: c.raddr}
}
