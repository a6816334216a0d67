package stack

import (
	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// WrapTCP turns a connected gVisor TCP endpoint that the caller created on
// this stack's gVisor stack (for example with a tcp.Forwarder) into a
// *TCPConn. The conn takes ownership of ep; it is closed with the Stack.
// Its port did not come from the pool and is not released to it.
func (st *Stack) WrapTCP(ep tcpip.Endpoint, wq *waiter.Queue) (*TCPConn, error) {
	network := "tcp4"
	c := newTCPConn(st, ep, wq, "", portHold{proto: portalloc.TCP})
	c.fillAddrs()
	if c.raddr.Addr().Is6() {
		network = "tcp6"
	}
	c.network = network
	if err := st.track(c); err != nil {
		c.abandon()
		return nil, opError("wrap", network, c.laddr, c.raddr, err)
	}
	return c, nil
}

// WrapUDP turns a gVisor UDP endpoint that the caller created on this
// stack's gVisor stack (for example with a udp.Forwarder) into a *UDPConn,
// which takes ownership of ep. Its port is not released to the pool.
func (st *Stack) WrapUDP(ep tcpip.Endpoint, wq *waiter.Queue) (*UDPConn, error) {
	c := &UDPConn{network: "udp4"}
	c.init(st, ep, wq, portHold{proto: portalloc.UDP})
	if a, terr := ep.GetLocalAddress(); terr == nil {
		c.laddr = addrPortOf(a)
	}
	if a, terr := ep.GetRemoteAddress(); terr == nil {
		c.raddr = addrPortOf(a)
	}
	if c.laddr.Addr().Is6() {
		c.network = "udp6"
	}
	if err := c.track(); err != nil {
		c.closeFromStack()
		return nil, opError("wrap", c.network, c.laddr, c.raddr, err)
	}
	return c, nil
}

// Abort closes the connection with a reset (RST) instead of an orderly
// FIN, as SetLinger(0) followed by Close does.
func (c *TCPConn) Abort() {
	c.closeOnce(func() {
		c.ep.Abort()
		c.closeLocked()
	})
	c.st.untrack(c)
}
