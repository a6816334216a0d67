package stack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Interception bounds.
const (
	// maxPendingSYNs is how many TCP handshakes may wait for a
	// HandleTCP handler at once; SYNs beyond it are dropped (the client
	// retransmits), as a listen backlog does.
	maxPendingSYNs = 1024
	// maxPendingDatagrams is how many datagrams of a UDP flow are kept
	// while its HandleUDP handler decides; later ones are dropped.
	maxPendingDatagrams = 16
)

// ErrNotPromiscuous is returned by HandleTCP and HandleUDP on a stack
// without Config.Promiscuous.
var ErrNotPromiscuous = errors.New("ustack: interception needs a promiscuous stack (Config.Promiscuous)")

// ErrRequestDone is returned by Accept on a request already accepted or
// refused.
var ErrRequestDone = errors.New("ustack: the flow was already accepted or refused")

// TCPRequest is a new TCP connection, its SYN received, that a HandleTCP
// handler accepts or refuses.
type TCPRequest struct {
	// Src is the client's address and port.
	Src netip.AddrPort
	// Dst is the original destination the client asked for.
	Dst netip.AddrPort

	st *Stack
	fr *tcp.ForwarderRequest
	decision
}

// decision is what a TCPRequest and a UDPRequest share: whether their
// handler has decided, and how to undo an accept if it then panics.
type decision struct {
	// mu guards the fields below. It is held while Accept completes the
	// handshake or takes the flow's queued datagrams and registers the
	// conn, so it comes before pendingFlows.mu and Stack.mu.
	mu   sync.Mutex
	done bool
	// undo closes the accepted conn; nil until Accept succeeds.
	undo func()
}

// decide runs f, Accept's or Refuse's work, under mu unless the request
// was decided already, and reports whether it ran.
func (d *decision) decide(f func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return false
	}
	d.done = true
	f()
	return true
}

// undoAccept closes the conn Accept made, if any.
func (d *decision) undoAccept() {
	d.mu.Lock()
	undo := d.undo
	d.mu.Unlock()
	if undo != nil {
		undo()
	}
}

// Accept completes the handshake and returns the connection, whose
// LocalAddr is the original destination and RemoteAddr the client. It is
// closed with the Stack.
func (r *TCPRequest) Accept() (c *TCPConn, err error) {
	if !r.decide(func() { c, err = r.accept() }) {
		return nil, ErrRequestDone
	}
	return c, err
}

// accept completes the handshake; it runs once, under r.mu.
func (r *TCPRequest) accept() (*TCPConn, error) {
	var wq waiter.Queue
	ep, terr := r.fr.CreateEndpoint(&wq)
	r.fr.Complete(terr != nil)
	if terr != nil {
		return nil, opError("accept", networkOf("tcp", r.Dst.Addr()), r.Dst, r.Src, translate(terr))
	}
	c, err := r.st.WrapTCP(ep, &wq)
	if err != nil {
		return nil, err
	}
	r.undo = c.Abort
	return c, nil
}

// Refuse refuses the connection with a reset (RST), as a closed port
// does. It does nothing after Accept or Refuse.
func (r *TCPRequest) Refuse() {
	r.decide(func() { r.fr.Complete(true) })
}

// HandleTCP makes h decide every new TCP connection the stack receives
// for a destination it does not listen on (any address: the stack is
// promiscuous), which is what a transparent proxy or tun2socks needs. h
// runs on a goroutine of its own per connection and may block (for
// example to dial the original destination before deciding), and may go
// on serving the accepted connection. If h returns without deciding, or
// panics, the connection is refused; a panic is logged with its stack
// and does not spread. Stack.Close closes accepted connections and waits
// for running handlers, which must therefore return once their
// connections are closed.
//
// A nil h stops the interception: connections to addresses without a
// listener are then refused by the stack. HandleTCP fails with
// ErrNotPromiscuous on a stack without Config.Promiscuous.
func (st *Stack) HandleTCP(h func(*TCPRequest)) error {
	if !st.promiscuous {
		return ErrNotPromiscuous
	}
	if h == nil {
		st.s.SetTransportProtocolHandler(tcp.ProtocolNumber, nil)
		return nil
	}
	f := tcp.NewForwarder(st.s, 0, maxPendingSYNs, func(fr *tcp.ForwarderRequest) {
		id := fr.ID()
		r := &TCPRequest{
			Src: netip.AddrPortFrom(netipAddr(id.RemoteAddress), id.RemotePort),
			Dst: netip.AddrPortFrom(netipAddr(id.LocalAddress), id.LocalPort),
			st:  st,
			fr:  fr,
		}
		if !st.handlerStart() {
			r.Refuse()
			return
		}
		// gVisor's forwarder runs each request on a goroutine of its own.
		st.runHandler("HandleTCP", r.Src, r.Dst, &r.decision, func() { h(r) }, r.Refuse)
	})
	st.s.SetTransportProtocolHandler(tcp.ProtocolNumber, f.HandlePacket)
	return nil
}

// runHandler runs a handler, counted in by handlerStart, for the request
// from src to dst whose decision is d. If the handler returns without
// deciding, or panics, refuse refuses the flow; a panic is logged with
// its stack as name's, and the conn the handler accepted is closed.
func (st *Stack) runHandler(name string, src, dst netip.AddrPort, d *decision, handle, refuse func()) {
	defer st.handlers.Done()
	defer func() {
		if p := recover(); p != nil {
			st.log.Error(name+" handler panicked; flow refused", "src", src, "dst", dst, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			d.undoAccept()
		}
		refuse()
	}()
	handle()
}

// handlerStart counts a handler in, unless the stack is closing.
func (st *Stack) handlerStart() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return false
	}
	st.handlers.Add(1)
	return true
}

// UDPRequest is the first datagram of a new UDP flow (a source and
// destination address and port pair), which a HandleUDP handler accepts
// or refuses.
type UDPRequest struct {
	// Src is the client's address and port.
	Src netip.AddrPort
	// Dst is the original destination the client sent to.
	Dst netip.AddrPort

	st    *Stack
	fr    *udp.ForwarderRequest
	first *gvstack.PacketBuffer // the first datagram, fr's; released when decided
	key   flowKey
	decision
}

type flowKey struct {
	id    gvstack.TransportEndpointID
	proto tcpip.NetworkProtocolNumber
}

// pendingFlows holds the UDP flows whose handler has not decided yet,
// with the datagrams that arrived meanwhile.
type pendingFlows struct {
	// mu guards flows. It is a leaf, taken on gVisor's inbound path (the
	// UDP handler) and by the requests after their own locks.
	mu    sync.Mutex
	flows map[flowKey][]*gvstack.PacketBuffer
}

// Accept makes a connected UDP socket for the flow: the first datagram
// and those that came while the handler decided (up to 16) are waiting in
// it. Its LocalAddr is the original destination, its RemoteAddr the
// client; writes go to the client from the original destination.
func (r *UDPRequest) Accept() (c *UDPConn, err error) {
	if !r.decide(func() { c, err = r.accept() }) {
		return nil, ErrRequestDone
	}
	return c, err
}

// accept makes the flow's socket; it runs once, under r.mu.
func (r *UDPRequest) accept() (*UDPConn, error) {
	var wq waiter.Queue
	ep, terr := r.fr.CreateEndpoint(&wq)
	r.first.DecRef()
	queued := r.st.pending.take(r.key)
	if te, ok := ep.(gvstack.TransportEndpoint); terr == nil && ok {
		for _, p := range queued {
			te.HandlePacket(r.key.id, p)
		}
	}
	for _, p := range queued {
		p.DecRef()
	}
	if terr != nil {
		return nil, opError("accept", networkOf("udp", r.Dst.Addr()), r.Dst, r.Src, translate(terr))
	}
	c, err := r.st.WrapUDP(ep, &wq)
	if err != nil {
		return nil, err
	}
	r.undo = func() { c.Close() }
	return c, nil
}

// Refuse refuses the flow as a closed port does: its datagrams are
// dropped, and the client gets an ICMP port unreachable about the first
// (within the stack's ICMP rate limit, and not for a multicast or
// broadcast destination), from the original destination, so that a
// connected socket of the client's fails with ECONNREFUSED. The next
// datagram of the flow is a new request. It does nothing after Accept or
// Refuse.
func (r *UDPRequest) Refuse() { r.refuse(true) }

// refuse drops the flow's datagrams, telling the client if unreachable.
func (r *UDPRequest) refuse(unreachable bool) {
	r.decide(func() {
		if unreachable {
			r.st.portUnreachable(r.first, r.Src.Addr(), r.Dst.Addr())
		}
		r.first.DecRef()
		for _, p := range r.st.pending.take(r.key) {
			p.DecRef()
		}
	})
}

// take removes a flow from the pending set and returns its queued
// datagrams.
func (p *pendingFlows) take(k flowKey) []*gvstack.PacketBuffer {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.flows[k]
	delete(p.flows, k)
	return q
}

// HandleUDP makes h decide every new UDP flow the stack receives for a
// destination it has no socket on (any address: the stack is
// promiscuous). h runs on a goroutine of its own per flow and may block;
// datagrams of the flow that arrive meanwhile are kept (up to 16) for the
// accepted socket. If h returns without deciding, or panics, the flow is
// refused (see Refuse); a panic is logged and does not spread.
// Stack.Close closes accepted sockets and waits for running handlers.
//
// A nil h stops the interception. HandleUDP fails with ErrNotPromiscuous
// on a stack without Config.Promiscuous.
func (st *Stack) HandleUDP(h func(*UDPRequest)) error {
	if !st.promiscuous {
		return ErrNotPromiscuous
	}
	if h == nil {
		st.s.SetTransportProtocolHandler(udp.ProtocolNumber, nil)
		return nil
	}
	handle := func(id gvstack.TransportEndpointID, pkt *gvstack.PacketBuffer) bool {
		key := flowKey{id: id, proto: pkt.NetworkProtocolNumber}
		st.pending.mu.Lock()
		if st.pending.flows == nil {
			st.pending.flows = make(map[flowKey][]*gvstack.PacketBuffer)
		}
		if q, ok := st.pending.flows[key]; ok {
			// The flow's handler is deciding: keep the datagram for it.
			if len(q) < maxPendingDatagrams {
				st.pending.flows[key] = append(q, pkt.Clone())
			}
			st.pending.mu.Unlock()
			return true
		}
		st.pending.flows[key] = nil
		st.pending.mu.Unlock()
		first := pkt.Clone()
		fr := udp.NewForwarderRequest(st.s, id, first)
		r := &UDPRequest{
			Src:   netip.AddrPortFrom(netipAddr(id.RemoteAddress), id.RemotePort),
			Dst:   netip.AddrPortFrom(netipAddr(id.LocalAddress), id.LocalPort),
			st:    st,
			fr:    fr,
			first: first,
			key:   key,
		}
		if !st.handlerStart() {
			r.refuse(false) // the stack is closing
			return true
		}
		go st.runHandler("HandleUDP", r.Src, r.Dst, &r.decision, func() { h(r) }, r.Refuse)
		return true
	}
	st.s.SetTransportProtocolHandler(udp.ProtocolNumber, handle)
	return nil
}

func networkOf(proto string, a netip.Addr) string {
	if a.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

var _ net.Conn = (*TCPConn)(nil)
