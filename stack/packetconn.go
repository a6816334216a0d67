package stack

import (
	"bytes"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// packetConn is what UDPConn and PingConn share: a bound gVisor datagram
// endpoint, the port it holds, the deadlines, the loops that read and
// write one datagram, and Close. Its methods return the inner errors
// (closedErr, timeoutErr, a translated gVisor error), which each conn
// type wraps in a *net.OpError with its own kind of address.
type packetConn struct {
	st   *Stack
	ep   tcpip.Endpoint
	wq   *waiter.Queue
	hold portHold // the local port or echo identifier, given back on Close
	// inbox holds the echo replies the link's reader handed to a
	// PingConn directly (see echoLink); nil for UDP, or when the stack
	// has no echoLink.
	inbox     *echoInbox
	inboxDone func() // unregisters inbox; run by the close, before the identifier goes back

	connDeadlines
	readMu  sync.Mutex // serialises reads; held while waiting, before deadline.mu and gVisor's locks
	writeMu sync.Mutex // serialises writes; held while waiting, before deadline.mu and gVisor's locks

	closeState
}

// init sets up c around ep, which holds hold.
func (c *packetConn) init(st *Stack, ep tcpip.Endpoint, wq *waiter.Queue, hold portHold) {
	c.st, c.ep, c.wq, c.hold = st, ep, wq, hold
	c.connDeadlines = newConnDeadlines()
	c.closeState = newCloseState()
}

// track registers c to be closed by Stack.Close.
func (c *packetConn) track() error { return c.st.track(c) }

// readFrom reads one datagram into b, truncating a longer one, and
// returns its sender. If keep is not nil, datagrams from senders it
// refuses are dropped.
func (c *packetConn) readFrom(b []byte, keep func(from tcpip.FullAddress) bool) (int, tcpip.FullAddress, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	ev := eventWait{wq: c.wq, mask: waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr}
	defer ev.unregister()
	for {
		if c.isClosed() {
			return 0, tcpip.FullAddress{}, closedErr{}
		}
		if c.inbox != nil {
			if r, ok := c.inbox.pop(); ok {
				from := fullAddr(netip.AddrPortFrom(r.from, 0))
				if keep != nil && !keep(from) {
					continue
				}
				return copy(b, r.msg), from, nil
			}
		}
		w := tcpip.SliceWriter(b)
		res, terr := c.ep.Read(&w, tcpip.ReadOptions{NeedRemoteAddr: true})
		switch terr.(type) {
		case nil:
			if keep != nil && !keep(res.RemoteAddr) {
				continue
			}
			return res.Count, res.RemoteAddr, nil
		case *tcpip.ErrWouldBlock:
		case *tcpip.ErrClosedForReceive:
			return 0, tcpip.FullAddress{}, closedErr{}
		default:
			return 0, tcpip.FullAddress{}, translate(terr)
		}
		if ev.register() {
			continue // re-check after registering, to miss no event
		}
		select {
		case <-ev.ch:
		case <-c.inbox.ready():
		case <-c.rd.wait():
			return 0, tcpip.FullAddress{}, timeoutErr
		case <-c.closed:
		}
	}
}

// writeTo sends b as one datagram, to to or, if to is nil, to the
// connected peer.
func (c *packetConn) writeTo(b []byte, to *tcpip.FullAddress) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	ev := eventWait{wq: c.wq, mask: waiter.WritableEvents | waiter.EventHUp | waiter.EventErr}
	defer ev.unregister()
	var r bytes.Reader
	for {
		if c.isClosed() {
			return 0, closedErr{}
		}
		select {
		case <-c.wd.wait():
			return 0, timeoutErr
		default:
		}
		r.Reset(b)
		n, terr := c.ep.Write(&r, tcpip.WriteOptions{To: to})
		switch terr.(type) {
		case nil:
			return int(n), nil
		case *tcpip.ErrWouldBlock:
		case *tcpip.ErrInvalidEndpointState:
			// An open endpoint whose connected route lost its
			// source address (RemoveAddress): Linux says
			// ENETUNREACH, as it does for a bound socket's send.
			return int(n), translate(&tcpip.ErrNetworkUnreachable{})
		default:
			return int(n), translate(terr)
		}
		if ev.register() {
			continue
		}
		select {
		case <-ev.ch:
		case <-c.wd.wait():
		case <-c.closed:
		}
	}
}

// close closes c the first time and reports whether this call did.
func (c *packetConn) close() bool {
	first := c.closeOnce(c.closeLocked)
	c.st.untrack(c)
	return first
}

func (c *packetConn) closeFromStack() { c.closeOnce(c.closeLocked) }

// closeLocked runs once, through closeOnce: it unblocks pending calls and
// gives the port back.
func (c *packetConn) closeLocked() {
	close(c.closed)
	if c.inboxDone != nil {
		c.inboxDone()
	}
	c.connDeadlines.stop()
	c.st.closeEndpoint(c.ep, c.wq, c.hold)
}
