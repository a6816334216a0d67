package stack

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/ustacknet/ustack/internal/errno"
	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/waiter"
)

var (
	_ net.Conn     = (*TCPConn)(nil)
	_ net.Listener = (*TCPListener)(nil)
)

// TCPConn is a TCP connection of a Stack. It implements net.Conn, and
// CloseRead and CloseWrite like *net.TCPConn.
//
// Close unblocks pending Read and Write calls, which then return an error
// matching net.ErrClosed. The connection's local port, if it came from the
// pool, is released when the endpoint leaves the stack.
type TCPConn struct {
	st      *Stack
	ep      tcpip.Endpoint
	wq      *waiter.Queue
	network string
	laddr   netip.AddrPort
	raddr   netip.AddrPort
	hold    portHold // the local port, given back when the endpoint leaves the stack

	connDeadlines
	readMu  sync.Mutex // serialises Read; held while waiting, before deadline.mu and gVisor's locks
	writeMu sync.Mutex // serialises Write; held while waiting, before deadline.mu and gVisor's locks

	closeState
}

// DialTCPAddrPort connects to raddr from laddr. A zero laddr (or one with
// port 0) takes its port from the TCP pool. The context bounds the
// handshake only.
func (st *Stack) DialTCPAddrPort(ctx context.Context, laddr, raddr netip.AddrPort) (*TCPConn, error) {
	const op = "dial"
	network := "tcp4"
	if raddr.Addr().Is6() {
		network = "tcp6"
	}
	raddr = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	if !raddr.Addr().IsValid() || raddr.Port() == 0 {
		return nil, opError(op, network, laddr, raddr, errno.Of(syscall.EINVAL))
	}
	if err := st.checkLocal(laddr.Addr(), raddr.Addr()); err != nil {
		return nil, opError(op, network, laddr, raddr, err)
	}
	if st.isClosed() {
		return nil, opError(op, network, laddr, raddr, closedErr{})
	}
	if !laddr.Addr().IsValid() || laddr.Addr().IsUnspecified() {
		src, err := st.sourceFor(raddr.Addr())
		if err != nil {
			return nil, opError(op, network, laddr, raddr, err)
		}
		laddr = netip.AddrPortFrom(src, laddr.Port())
	}
	ep, wq, hold, err := st.openEndpoint(ctx, portalloc.TCP, netProtoOf(raddr.Addr()), laddr, raddr, false)
	if err != nil {
		return nil, opError(op, network, laddr, raddr, err)
	}
	c := newTCPConn(st, ep, wq, network, hold)
	c.raddr = raddr
	if err := st.track(c); err != nil {
		c.abandon()
		return nil, opError(op, network, laddr, raddr, err)
	}
	if err := c.connect(ctx); err != nil {
		c.abandon()
		st.untrack(c)
		return nil, opError(op, network, netip.AddrPortFrom(laddr.Addr(), hold.port), raddr, err)
	}
	c.fillAddrs()
	return c, nil
}

// newTCPConn makes the conn of a TCP endpoint that holds hold.
func newTCPConn(st *Stack, ep tcpip.Endpoint, wq *waiter.Queue, network string, hold portHold) *TCPConn {
	return &TCPConn{st: st, ep: ep, wq: wq, network: network, hold: hold,
		connDeadlines: newConnDeadlines(), closeState: newCloseState()}
}

func (c *TCPConn) connect(ctx context.Context) error {
	entry, ch := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	c.wq.EventRegister(&entry)
	defer c.wq.EventUnregister(&entry)
	terr := c.ep.Connect(fullAddr(c.raddr))
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return timeoutErr
			}
			return ctx.Err()
		case <-c.closed:
			return closedErr{}
		case <-ch:
		}
		terr = c.ep.LastError()
	}
	if terr != nil {
		return translate(terr)
	}
	return nil
}

func (c *TCPConn) fillAddrs() {
	if a, err := c.ep.GetLocalAddress(); err == nil {
		c.laddr = addrPortOf(a)
	}
	if a, err := c.ep.GetRemoteAddress(); err == nil {
		c.raddr = addrPortOf(a)
	}
}

// abandon closes an endpoint that never became a usable connection.
func (c *TCPConn) abandon() {
	c.closeOnce(func() {
		close(c.closed)
		c.st.closeEndpoint(c.ep, c.wq, c.hold)
	})
}

func (c *TCPConn) opErr(op string, err error) error {
	if err == io.EOF {
		return err
	}
	return opError(op, c.network, c.laddr, c.raddr, err)
}

// Read implements net.Conn. It returns io.EOF once the peer has closed its
// side and all data has been read.
func (c *TCPConn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.isClosed() {
		return 0, c.opErr("read", closedErr{})
	}
	if len(b) == 0 {
		return 0, nil
	}
	ev := eventWait{wq: c.wq, mask: waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr}
	defer ev.unregister()
	for {
		w := tcpip.SliceWriter(b)
		res, terr := c.ep.Read(&w, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
			return res.Count, nil
		case *tcpip.ErrWouldBlock:
		case *tcpip.ErrClosedForReceive:
			if c.isClosed() || c.st.isClosed() {
				return 0, c.opErr("read", closedErr{})
			}
			return 0, io.EOF
		default:
			if c.isClosed() || c.st.isClosed() {
				return 0, c.opErr("read", closedErr{})
			}
			return 0, c.opErr("read", translate(terr))
		}
		if ev.register() {
			continue // re-check after registering, to miss no event
		}
		select {
		case <-ev.ch:
		case <-c.rd.wait():
			return 0, c.opErr("read", timeoutErr)
		case <-c.closed:
			return 0, c.opErr("read", closedErr{})
		}
	}
}

// Write implements net.Conn. It blocks until all of b is queued, the
// deadline passes, or the connection fails.
func (c *TCPConn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.isClosed() {
		return 0, c.opErr("write", closedErr{})
	}
	select {
	case <-c.wd.wait():
		return 0, c.opErr("write", timeoutErr)
	default:
	}
	ev := eventWait{wq: c.wq, mask: waiter.WritableEvents | waiter.EventHUp | waiter.EventErr}
	defer ev.unregister()
	var (
		n int
		r bytes.Reader
	)
	for n < len(b) {
		r.Reset(b[n:])
		m, terr := c.ep.Write(&r, tcpip.WriteOptions{})
		n += int(m)
		switch terr.(type) {
		case nil:
			continue
		case *tcpip.ErrWouldBlock:
		default:
			if c.isClosed() || c.st.isClosed() {
				return n, c.opErr("write", closedErr{})
			}
			return n, c.opErr("write", translate(terr))
		}
		if ev.register() {
			continue
		}
		select {
		case <-ev.ch:
		case <-c.wd.wait():
			return n, c.opErr("write", timeoutErr)
		case <-c.closed:
			return n, c.opErr("write", closedErr{})
		}
	}
	return n, nil
}

// Close closes the connection. Pending Read and Write calls return errors
// matching net.ErrClosed. A second Close returns such an error too, as
// with package net.
func (c *TCPConn) Close() error {
	first := c.closeOnce(c.closeLocked)
	c.st.untrack(c)
	if !first {
		return c.opErr("close", closedErr{})
	}
	return nil
}

func (c *TCPConn) closeFromStack() {
	c.closeOnce(c.closeLocked)
}

func (c *TCPConn) closeLocked() {
	close(c.closed)
	c.connDeadlines.stop()
	c.st.closeEndpoint(c.ep, c.wq, c.hold)
}

// CloseRead shuts down the reading side.
func (c *TCPConn) CloseRead() error {
	if c.isClosed() {
		return c.opErr("close", closedErr{})
	}
	if terr := c.ep.Shutdown(tcpip.ShutdownRead); terr != nil {
		return c.opErr("close", translate(terr))
	}
	return nil
}

// CloseWrite shuts down the writing side, sending FIN.
func (c *TCPConn) CloseWrite() error {
	if c.isClosed() {
		return c.opErr("close", closedErr{})
	}
	if terr := c.ep.Shutdown(tcpip.ShutdownWrite); terr != nil {
		return c.opErr("close", translate(terr))
	}
	return nil
}

// LocalAddr returns a *net.TCPAddr.
func (c *TCPConn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.laddr) }

// RemoteAddr returns a *net.TCPAddr.
func (c *TCPConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.raddr) }

// LocalAddrPort returns the local address.
func (c *TCPConn) LocalAddrPort() netip.AddrPort { return c.laddr }

// RemoteAddrPort returns the remote address.
func (c *TCPConn) RemoteAddrPort() netip.AddrPort { return c.raddr }

// SetNoDelay controls Nagle's algorithm, as (*net.TCPConn).SetNoDelay.
func (c *TCPConn) SetNoDelay(noDelay bool) error {
	c.ep.SocketOptions().SetDelayOption(!noDelay)
	return nil
}

// SetLinger with sec 0 makes Close send a reset and skip TIME_WAIT, as
// (*net.TCPConn).SetLinger.
func (c *TCPConn) SetLinger(sec int) error {
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: sec >= 0, Timeout: time.Duration(max(sec, 0)) * time.Second})
	return nil
}

// TCPListener is a TCP listener of a Stack. It implements net.Listener.
type TCPListener struct {
	st      *Stack
	ep      tcpip.Endpoint
	wq      *waiter.Queue
	network string
	laddr   netip.AddrPort
	hold    portHold // the listening port, given back when the endpoint leaves the stack
	adl     acceptDeadline

	closeState
}

// ListenTCPAddrPort listens on laddr. Port 0 takes a port from the TCP
// pool. An unspecified or invalid address listens on every address of
// the family; the IPv6 unspecified address (or none) listens on IPv4 too,
// as package net's "tcp" network does, and a specific IPv6 address on
// IPv6 only.
func (st *Stack) ListenTCPAddrPort(laddr netip.AddrPort, backlog int) (*TCPListener, error) {
	return st.listenTCP(laddr, backlog, false)
}

// listenTCP is ListenTCPAddrPort; v6only also makes the IPv6 unspecified
// address IPv6-only (Listen's "tcp6", as IPV6_V6ONLY in package net).
func (st *Stack) listenTCP(laddr netip.AddrPort, backlog int, v6only bool) (*TCPListener, error) {
	const op = "listen"
	network := "tcp"
	proto := ipv6.ProtocolNumber
	if laddr.Addr().Is4() {
		network, proto = "tcp4", ipv4.ProtocolNumber
	} else if laddr.Addr().Is6() {
		network = "tcp6"
	} else if !st.has6.Load() {
		proto = ipv4.ProtocolNumber
	}
	if err := st.checkLocal(laddr.Addr(), netip.Addr{}); err != nil {
		return nil, opError(op, network, netip.AddrPort{}, laddr, err)
	}
	if st.isClosed() {
		return nil, opError(op, network, netip.AddrPort{}, laddr, closedErr{})
	}
	v6only = laddr.Addr().Is6() && (v6only || !laddr.Addr().IsUnspecified())
	ep, wq, hold, err := st.openEndpoint(context.Background(), portalloc.TCP, proto, laddr, netip.AddrPort{}, v6only)
	if err != nil {
		return nil, opError(op, network, netip.AddrPort{}, laddr, err)
	}
	if backlog <= 0 {
		backlog = 4096
	}
	l := &TCPListener{st: st, ep: ep, wq: wq, network: network, hold: hold, closeState: newCloseState()}
	if terr := ep.Listen(backlog); terr != nil {
		st.closeEndpoint(ep, wq, hold)
		return nil, opError(op, network, netip.AddrPort{}, laddr, translate(terr))
	}
	if a, terr := ep.GetLocalAddress(); terr == nil {
		l.laddr = netip.AddrPortFrom(laddr.Addr(), a.Port)
		if !laddr.Addr().IsValid() {
			l.laddr = netip.AddrPortFrom(netip.IPv6Unspecified(), a.Port)
			if proto == ipv4.ProtocolNumber {
				l.laddr = netip.AddrPortFrom(netip.IPv4Unspecified(), a.Port)
			}
		}
	}
	if err := st.track(l); err != nil {
		l.closeFromStack()
		return nil, opError(op, network, netip.AddrPort{}, laddr, err)
	}
	return l, nil
}

// Accept waits for and returns the next connection. After Close it
// returns an error matching net.ErrClosed.
func (l *TCPListener) Accept() (net.Conn, error) { return l.AcceptTCP() }

// AcceptTCP is Accept with the concrete type.
func (l *TCPListener) AcceptTCP() (*TCPConn, error) {
	entry, ch := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		select {
		case <-l.closed:
			return nil, opError("accept", l.network, netip.AddrPort{}, l.laddr, closedErr{})
		case <-l.adl.get().wait():
			return nil, opError("accept", l.network, netip.AddrPort{}, l.laddr, timeoutErr)
		default:
		}
		var peer tcpip.FullAddress
		nep, nwq, terr := l.ep.Accept(&peer)
		switch terr.(type) {
		case nil:
			c := newTCPConn(l.st, nep, nwq, l.network, portHold{proto: portalloc.TCP})
			c.fillAddrs()
			if err := l.st.track(c); err != nil {
				c.abandon()
				return nil, opError("accept", l.network, netip.AddrPort{}, l.laddr, err)
			}
			return c, nil
		case *tcpip.ErrWouldBlock:
		default:
			if l.isClosed() {
				return nil, opError("accept", l.network, netip.AddrPort{}, l.laddr, closedErr{})
			}
			return nil, opError("accept", l.network, netip.AddrPort{}, l.laddr, translate(terr))
		}
		select {
		case <-ch:
		case <-l.closed:
		case <-l.adl.get().wait():
		}
	}
}

// Close stops listening; a blocked Accept returns net.ErrClosed. A second
// Close returns such an error too.
func (l *TCPListener) Close() error {
	first := l.closeOnce(l.closeLocked)
	l.st.untrack(l)
	if !first {
		return opError("close", l.network, netip.AddrPort{}, l.laddr, closedErr{})
	}
	return nil
}

func (l *TCPListener) closeFromStack() { l.closeOnce(l.closeLocked) }

func (l *TCPListener) closeLocked() {
	close(l.closed)
	l.adl.get().stop()
	l.st.closeEndpoint(l.ep, l.wq, l.hold)
}

// Addr returns the listening address as a *net.TCPAddr.
func (l *TCPListener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.laddr) }

// AddrPort returns the listening address.
func (l *TCPListener) AddrPort() netip.AddrPort { return l.laddr }
