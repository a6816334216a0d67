package stack

import (
	"context"
	"net"
	"net/netip"
	"syscall"

	"github.com/ustacknet/ustack/internal/errno"
	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

var (
	_ net.Conn       = (*UDPConn)(nil)
	_ net.PacketConn = (*UDPConn)(nil)
)

// UDPConn is a UDP socket of a Stack. It implements net.PacketConn, and
// net.Conn when connected (made by a dial). Its port, if it came from the
// pool or lies in the ephemeral range, is released on Close.
type UDPConn struct {
	packetConn
	network string
	laddr   netip.AddrPort
	raddr   netip.AddrPort // valid when connected
}

// DialUDPAddrPort makes a connected UDP socket to raddr. A zero laddr (or
// port 0) takes its port from the UDP pool.
func (st *Stack) DialUDPAddrPort(laddr, raddr netip.AddrPort) (*UDPConn, error) {
	raddr = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	if !raddr.Addr().IsValid() || raddr.Port() == 0 {
		network := "udp"
		return nil, opError("dial", network, laddr, raddr, errno.Of(syscall.EINVAL))
	}
	return st.udp("dial", laddr, raddr, false)
}

// ListenUDPAddrPort opens an unconnected UDP socket on laddr. Port 0 takes
// a port from the UDP pool. The IPv6 unspecified address (or none)
// receives IPv4 too, as package net's "udp" network does; a specific IPv6
// address IPv6 only.
func (st *Stack) ListenUDPAddrPort(laddr netip.AddrPort) (*UDPConn, error) {
	return st.udp("listen", laddr, netip.AddrPort{}, false)
}

// udp opens a UDP endpoint; v6only also makes the IPv6 unspecified
// address IPv6-only (ListenPacket's "udp6").
func (st *Stack) udp(op string, laddr, raddr netip.AddrPort, v6only bool) (*UDPConn, error) {
	network := "udp"
	proto := ipv6.ProtocolNumber
	switch {
	case raddr.Addr().Is4() || laddr.Addr().Is4():
		network, proto = "udp4", ipv4.ProtocolNumber
	case raddr.Addr().Is6() || laddr.Addr().Is6():
		network = "udp6"
	case !st.has6.Load():
		proto = ipv4.ProtocolNumber
	}
	if err := st.checkLocal(laddr.Addr(), raddr.Addr()); err != nil {
		return nil, opError(op, network, laddr, raddr, err)
	}
	if st.isClosed() {
		return nil, opError(op, network, laddr, raddr, closedErr{})
	}
	v6only = proto == ipv6.ProtocolNumber && laddr.Addr().Is6() && (v6only || !laddr.Addr().IsUnspecified())
	ep, wq, hold, err := st.openEndpoint(context.Background(), portalloc.UDP, proto, laddr, raddr, v6only)
	if err != nil {
		return nil, opError(op, network, laddr, raddr, err)
	}
	c := &UDPConn{network: network}
	c.init(st, ep, wq, hold)
	if raddr.IsValid() {
		if terr := ep.Connect(fullAddr(raddr)); terr != nil {
			c.closeFromStack()
			return nil, opError(op, network, laddr, raddr, translate(terr))
		}
	}
	if a, terr := ep.GetLocalAddress(); terr == nil {
		c.laddr = addrPortOf(a)
		if !c.laddr.Addr().IsValid() {
			c.laddr = netip.AddrPortFrom(unspecified(proto), a.Port)
		}
	}
	if a, terr := ep.GetRemoteAddress(); terr == nil {
		c.raddr = addrPortOf(a)
	}
	if err := c.track(); err != nil {
		c.closeFromStack()
		return nil, opError(op, network, laddr, raddr, err)
	}
	return c, nil
}

func unspecified(proto tcpip.NetworkProtocolNumber) netip.Addr {
	if proto == ipv4.ProtocolNumber {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func (c *UDPConn) opErr(op string, dst netip.AddrPort, err error) error {
	return opError(op, c.network, c.laddr, dst, err)
}

// ReadFromUDPAddrPort reads one datagram into b. A datagram longer than b
// is truncated, as with package net.
func (c *UDPConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, from, err := c.readFrom(b, nil)
	if err != nil {
		return 0, netip.AddrPort{}, c.opErr("read", c.raddr, err)
	}
	return n, addrPortOf(from), nil
}

// ReadFrom implements net.PacketConn; the address is a *net.UDPAddr.
func (c *UDPConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// Read implements net.Conn.
func (c *UDPConn) Read(b []byte) (int, error) {
	n, _, err := c.ReadFromUDPAddrPort(b)
	return n, err
}

// WriteToUDPAddrPort sends b as one datagram to dst.
func (c *UDPConn) WriteToUDPAddrPort(b []byte, dst netip.AddrPort) (int, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !dst.IsValid() || dst.Port() == 0 {
		return 0, c.opErr("write", dst, errno.Of(syscall.EINVAL))
	}
	to := fullAddr(dst)
	return c.write(b, &to, dst)
}

func (c *UDPConn) write(b []byte, to *tcpip.FullAddress, dst netip.AddrPort) (int, error) {
	n, err := c.writeTo(b, to)
	if err != nil {
		return n, c.opErr("write", dst, err)
	}
	return n, nil
}

// WriteTo implements net.PacketConn. addr must be a *net.UDPAddr.
func (c *UDPConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: c.network, Source: c.LocalAddr(), Addr: addr, Err: errno.Of(syscall.EINVAL)}
	}
	return c.WriteToUDPAddrPort(b, ua.AddrPort())
}

// Write implements net.Conn for a connected socket.
func (c *UDPConn) Write(b []byte) (int, error) {
	if !c.raddr.IsValid() {
		return 0, c.opErr("write", c.raddr, errno.Of(syscall.EDESTADDRREQ))
	}
	return c.write(b, nil, c.raddr)
}

// Close closes the socket and releases its port. Blocked reads and writes
// return errors matching net.ErrClosed; so does a second Close.
func (c *UDPConn) Close() error {
	if !c.close() {
		return c.opErr("close", c.raddr, closedErr{})
	}
	return nil
}

// LocalAddr returns a *net.UDPAddr.
func (c *UDPConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.laddr) }

// RemoteAddr returns a *net.UDPAddr, or nil if not connected.
func (c *UDPConn) RemoteAddr() net.Addr {
	if !c.raddr.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(c.raddr)
}

// LocalAddrPort returns the local address.
func (c *UDPConn) LocalAddrPort() netip.AddrPort { return c.laddr }
