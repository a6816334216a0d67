package stack

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The port lifecycle. Every TCP, UDP and ICMP echo socket of a Stack
// takes and gives back its port (an echo identifier, for ICMP) through
// the functions of this file, in this order:
//
//  1. openEndpoint makes the gVisor endpoint and binds it (bindPort). A
//     port the caller names is reserved in its pool if it lies in the
//     ephemeral range (bindReserved); port 0 is allocated from the pool
//     (bindAllocated, allocate), each candidate vetoed by gVisor's bind.
//     What the socket then holds in the pool is a portHold.
//  2. The socket lives: TCP connects or listens, UDP and ICMP send and
//     receive. Nothing here is involved.
//  3. closeEndpoint closes the endpoint and gives its port back: at once
//     for UDP and ICMP, whose endpoints let go of their ports in Close;
//     through the reaper for TCP, whose endpoints linger (FIN exchange,
//     TIME_WAIT) and keep their gVisor reservations until they leave the
//     stack.
//  4. The reaper releases a TCP port (release) when gVisor says that its
//     endpoint has gone: from gVisor's notification, from a dial that
//     finds the range full (sweep), or from its slow periodic sweep.
//  5. A TCP dial that finds its range full does not fail while ports of
//     closing connections are about to come back: allocate sweeps, takes
//     TIME_WAIT ports with Config.TimeWaitReuse (reclaimTimeWait), and
//     waits a bounded time for a closing connection (reaper.closing).
//
// The sockets enter at step 1 from DialTCPAddrPort and listenTCP
// (tcp.go), udp (udp.go) and pingWithID (ping.go), and at step 3 from the
// close of TCPConn, TCPListener (tcp.go) and packetConn (packetconn.go,
// under UDPConn and PingConn). gVisor's own ephemeral picker is never
// used (the package doc says why).

// portHold is what a socket holds in its protocol's pool, to give back
// when its endpoint leaves the stack.
type portHold struct {
	proto portalloc.Protocol
	// port is the pool's port to give back; 0 if none: a port outside
	// the ephemeral range, or a port the pool did not hand out (an
	// accepted or wrapped connection's).
	port uint16
	// to is the remote endpoint port is held toward on a
	// per-destination pool; the zero AddrPort if it is held for every
	// destination.
	to netip.AddrPort
}

// openEndpoint makes a gVisor endpoint of proto (TCP, UDP, or ICMP echo
// of netProto's family) and binds it to laddr, taking the port from the
// pool if laddr has none (step 1). raddr is where the socket will
// connect or send, if it is known: a per-destination pool holds the port
// toward it. v6only makes an IPv6 endpoint IPv6-only. ctx bounds a TCP
// dial's wait for a closing connection's port.
//
// It returns the bound endpoint, its waiter queue and the port it holds,
// which closeEndpoint gives back; on failure nothing is left open or
// held.
func (st *Stack) openEndpoint(ctx context.Context, proto portalloc.Protocol, netProto tcpip.NetworkProtocolNumber, laddr, raddr netip.AddrPort, v6only bool) (tcpip.Endpoint, *waiter.Queue, portHold, error) {
	wq := new(waiter.Queue)
	ep, terr := st.s.NewEndpoint(transportOf(proto, netProto), netProto, wq)
	if terr != nil {
		return nil, nil, portHold{}, translate(terr)
	}
	if v6only {
		ep.SocketOptions().SetV6Only(true)
	}
	hold, err := st.bindPort(ctx, proto, ep, laddr, raddr)
	if err != nil {
		ep.Close() // bound to nothing: no port to give back
		return nil, nil, portHold{}, err
	}
	return ep, wq, hold, nil
}

// transportOf is the gVisor transport protocol of a pool's protocol.
func transportOf(proto portalloc.Protocol, netProto tcpip.NetworkProtocolNumber) tcpip.TransportProtocolNumber {
	switch proto {
	case portalloc.TCP:
		return tcp.ProtocolNumber
	case portalloc.UDP:
		return udp.ProtocolNumber
	}
	if netProto == ipv4.ProtocolNumber {
		return icmp.ProtocolNumber4
	}
	return icmp.ProtocolNumber6
}

// bindPort binds ep to laddr: to the port it names (bindReserved), or to
// one from proto's pool if it names none (bindAllocated).
func (st *Stack) bindPort(ctx context.Context, proto portalloc.Protocol, ep tcpip.Endpoint, laddr, raddr netip.AddrPort) (portHold, error) {
	if laddr.Port() != 0 {
		return st.bindReserved(proto, ep, laddr)
	}
	return st.bindAllocated(ctx, proto, ep, laddr, raddr)
}

// bindReserved binds ep to laddr, whose port the caller chose. A port in
// the ephemeral range is reserved in the pool first, so that allocation
// skips it, and is the socket's to give back; a port outside it is
// gVisor's business only.
func (st *Stack) bindReserved(proto portalloc.Protocol, ep tcpip.Endpoint, laddr netip.AddrPort) (portHold, error) {
	hold := portHold{proto: proto}
	owned, err := st.reserve(proto, laddr.Port())
	if err != nil {
		return hold, err
	}
	if owned {
		hold.port = laddr.Port()
	}
	if terr := ep.Bind(fullAddr(laddr)); terr != nil {
		st.release(hold)
		return portHold{proto: proto}, translate(terr)
	}
	return hold, nil
}

// reserve claims an explicitly requested port in the pool if it lies in
// the ephemeral range, so that allocation skips it. It reports whether the
// port must be released later.
func (st *Stack) reserve(proto portalloc.Protocol, port uint16) (bool, error) {
	pool := st.alloc.Pool(proto)
	if !pool.Range().Contains(port) {
		return false, nil
	}
	if err := pool.Reserve(port); err != nil {
		return false, syscallOf(err)
	}
	return true, nil
}

// syscallOf unwraps a portalloc error to the errno inside it, if any, so
// that the *net.OpError around it reads like the kernel's.
func syscallOf(err error) error {
	var pe *portalloc.PortError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// bindAllocated binds ep to a port from proto's pool, on laddr's address.
//
// On a per-destination pool a socket that will talk to raddr holds its
// port toward raddr only, and sockets that talk to other destinations may
// have bound the same port. A TCP or UDP endpoint then binds with
// SO_REUSEADDR, which gVisor keeps as its TupleOnly flag for TCP and its
// MostRecent flag for UDP: binds that carry it share the port, a bind
// without it (a listener, an explicit bind) conflicts with them, and
// gVisor's demultiplexer still refuses a second endpoint with the same
// 4-tuple. The pool keeps each (port, destination) to one socket, and a
// candidate whose 4-tuple gVisor still has registered (a closed TCP
// connection not yet gone) is skipped before the bind. An ICMP echo endpoint is bound, never
// connected (see pingWithID), so gVisor keeps an identifier to one
// socket whatever the pool allows: its bind refuses a shared candidate,
// which is skipped.
func (st *Stack) bindAllocated(ctx context.Context, proto portalloc.Protocol, ep tcpip.Endpoint, laddr, raddr netip.AddrPort) (portHold, error) {
	hold := portHold{proto: proto}
	if raddr.IsValid() && st.alloc.Pool(proto).Sharing() == portalloc.PerDestination {
		hold.to = raddr
	}
	shared := hold.to.IsValid() && proto != portalloc.ICMP
	if shared {
		ep.SocketOptions().SetReuseAddress(true)
	}
	port, err := st.allocate(ctx, proto, laddr.Addr(), raddr, func(port uint16) tcpip.Error {
		local := netip.AddrPortFrom(laddr.Addr(), port)
		if shared && st.tupleInUse(transportOf(proto, 0), local, raddr) {
			return &tcpip.ErrPortInUse{}
		}
		return ep.Bind(fullAddr(local))
	})
	if err != nil {
		return portHold{proto: proto}, err
	}
	hold.port = port
	return hold, nil
}

// tupleInUse reports whether gVisor has an endpoint registered for the
// connection from local to remote.
func (st *Stack) tupleInUse(proto tcpip.TransportProtocolNumber, local, remote netip.AddrPort) bool {
	id := gvstack.TransportEndpointID{
		LocalPort:     local.Port(),
		LocalAddress:  tcpAddr(local.Addr()),
		RemotePort:    remote.Port(),
		RemoteAddress: tcpAddr(remote.Addr()),
	}
	return st.s.FindTransportEndpoint(netProtoOf(remote.Addr()), proto, id, nicID) != nil
}

// allocate takes a port from proto's pool, trying bind on each candidate;
// a candidate gVisor refuses (still bound below) is skipped and stays free
// in the pool.
//
// When the TCP pool is full, allocate first collects ports of endpoints
// gVisor has let go of but the reaper has not seen yet, and with TIME_WAIT
// reuse on, takes ports held only by TIME_WAIT. If it is still full and
// some of its ports belong to connections that are closing (their FIN
// exchange under way), it waits for one of them, up to closingWait or
// until ctx is done, rather than fail a dial that would succeed a round
// trip later; with every port held by a live connection it fails at once
// (step 5).
func (st *Stack) allocate(ctx context.Context, proto portalloc.Protocol, local netip.Addr, remote netip.AddrPort, bind func(port uint16) tcpip.Error) (uint16, error) {
	pool := st.alloc.Pool(proto)
	var bindErr tcpip.Error
	req := portalloc.Request{
		Local:  local,
		Remote: remote,
		Veto: func(port uint16) bool {
			err := bind(port)
			if err == nil {
				return false
			}
			if _, inUse := err.(*tcpip.ErrPortInUse); !inUse {
				bindErr = err
			}
			return true
		},
	}
	// A full TCP range is retried below; the pool counts as exhausted
	// only a dial that finally fails.
	req.Retry = proto == portalloc.TCP
	port, err := pool.Allocate(req)
	// On a per-destination pool only ports held toward remote (or for
	// every destination) can end this dial's exhaustion.
	var toward netip.AddrPort
	if pool.Sharing() == portalloc.PerDestination {
		toward = remote
	}
	var deadline time.Time
	for err != nil && bindErr == nil && req.Retry && errors.Is(err, portalloc.ErrExhausted) {
		// Take the channel before collecting, so that a port freed
		// from here on wakes the wait below.
		closing, changed := st.reap.closing(toward)
		n := st.reap.sweep()
		if st.reuse {
			n += st.reap.reclaimTimeWait(toward)
		}
		if n == 0 {
			if closing == 0 {
				break
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(closingWait)
			}
			if !waitChange(ctx, changed, deadline) {
				break
			}
		}
		port, err = pool.Allocate(req)
	}
	if err != nil && bindErr == nil && req.Retry && errors.Is(err, portalloc.ErrExhausted) {
		// Giving up: once more without Retry, so that the failure counts.
		req.Retry = false
		port, err = pool.Allocate(req)
	}
	if bindErr != nil {
		if err == nil {
			pool.ReleaseTo(port, remote)
		}
		return 0, translate(bindErr)
	}
	return port, err
}

// closingWait bounds how long a dial waits for a closing connection's port
// when the range is full. On a TUN the FIN exchange takes microseconds; a
// peer that never answers leaves the port held until gVisor's timeouts.
const closingWait = 250 * time.Millisecond

// waitChange waits until changed is closed, the deadline passes or ctx is
// done, and reports whether changed was closed.
func waitChange(ctx context.Context, changed <-chan struct{}, deadline time.Time) bool {
	d := time.Until(deadline)
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-changed:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// closeEndpoint closes ep, which holds hold, and gives the port back
// (step 3). A UDP or ICMP endpoint lets go of its port in Close, so the
// port goes back to the pool at once. A TCP endpoint lingers through its
// FIN exchange and TIME_WAIT, keeping its gVisor reservation: the reaper
// gives its port back once gVisor has let go of it (step 4).
func (st *Stack) closeEndpoint(ep tcpip.Endpoint, wq *waiter.Queue, hold portHold) {
	ep.Close()
	if hold.proto == portalloc.TCP {
		st.reap.add(ep, wq, hold)
		return
	}
	st.release(hold)
}

// release gives hold's port back to its pool; a hold without a port is
// nothing to give back.
func (st *Stack) release(hold portHold) {
	if hold.port == 0 {
		return
	}
	if err := st.alloc.Pool(hold.proto).ReleaseTo(hold.port, hold.to); err != nil {
		st.log.Error("releasing port", "proto", hold.proto, "port", hold.port, "remote", hold.to, "err", err)
	}
}

// reaper returns the ports of closed TCP endpoints to the pool once gVisor
// has let go of them (step 4): when the endpoint reaches CLOSE (after
// TIME_WAIT or LAST_ACK) or ERROR (after a reset). gVisor signals that
// with EventHUp, after it has released its own reservation and left the
// demultiplexer, and the port is released right there, in gVisor's
// notification, so a dial that follows finds it free. A dial that finds
// the range full sweeps the closed endpoints first (allocate), and a slow
// periodic sweep catches any endpoint that closes without a notification.
type reaper struct {
	st   *Stack
	done chan struct{} // closed by stop
	wg   sync.WaitGroup

	// mu guards the fields below. It is a leaf: nothing is locked while
	// it is held, and it is released before the pool or gVisor is called
	// (an endpoint's State is an atomic read). gVisor's waiter-queue lock
	// may be held when it is taken, in a notification.
	mu      sync.Mutex
	pending map[*lingering]struct{}
	changed chan struct{} // closed (and replaced) on a release or a closed endpoint's progress
	stopped bool
}

// lingering is a closed TCP endpoint whose port is still held.
type lingering struct {
	ep     tcpip.Endpoint
	wq     *waiter.Queue
	hold   portHold
	entry  waiter.Entry
	closed time.Time
}

// sweepInterval bounds how long a port can stay held after its endpoint
// closed without a notification.
var sweepInterval = 500 * time.Millisecond // a variable for tests

func newReaper(st *Stack) *reaper {
	r := &reaper{
		st:      st,
		done:    make(chan struct{}),
		pending: make(map[*lingering]struct{}),
		changed: make(chan struct{}),
	}
	r.wg.Add(1)
	go r.run()
	return r
}

// add takes a TCP endpoint the user has closed, with the port it holds,
// and releases the port once the endpoint is gone.
func (r *reaper) add(ep tcpip.Endpoint, wq *waiter.Queue, hold portHold) {
	if hold.port == 0 {
		return
	}
	l := &lingering{ep: ep, wq: wq, hold: hold, closed: time.Now()}
	// EventIn comes with the peer's FIN, which moves a closing
	// endpoint on (to TIME_WAIT, or to CLOSE after LAST_ACK); a dial
	// waiting for a port (allocate) wants to hear of it.
	l.entry = waiter.NewFunctionEntry(waiter.EventHUp|waiter.EventErr|waiter.EventIn, func(m waiter.EventMask) {
		if m&(waiter.EventHUp|waiter.EventErr) != 0 && gone(l.ep) {
			// gVisor notifies with the queue's lock held: the entry
			// cannot be unregistered from here, and need not be (a
			// later call finds l no longer pending).
			r.finishOnce(l, false)
			return
		}
		r.mu.Lock()
		r.signalLocked()
		r.mu.Unlock()
	})
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		r.st.release(hold)
		return
	}
	r.pending[l] = struct{}{}
	r.mu.Unlock()
	wq.EventRegister(&l.entry)
	// It may have gone already, before the entry was registered.
	if gone(ep) {
		r.finish(l)
	}
}

// gone reports whether gVisor has let go of a closed TCP endpoint.
func gone(ep tcpip.Endpoint) bool {
	switch tcp.EndpointState(ep.State()) {
	case tcp.StateClose, tcp.StateError:
		return true
	}
	return false
}

func (r *reaper) run() {
	defer r.wg.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
			r.sweep()
		}
	}
}

// finish releases l's port once, and stops listening to its endpoint.
func (r *reaper) finish(l *lingering) bool { return r.finishOnce(l, true) }

// finishOnce releases l's port once and reports whether this call did.
// In gVisor's notification l's waiter queue is locked, so unregister is
// false there: unregistering would take that lock again.
func (r *reaper) finishOnce(l *lingering, unregister bool) bool {
	r.mu.Lock()
	_, ok := r.pending[l]
	delete(r.pending, l)
	r.mu.Unlock()
	if !ok {
		return false
	}
	if unregister {
		l.wq.EventUnregister(&l.entry)
	}
	r.st.release(l.hold)
	r.mu.Lock()
	r.signalLocked()
	r.mu.Unlock()
	return true
}

// signalLocked wakes everyone waiting on the current changed channel.
func (r *reaper) signalLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// closing returns how many closed endpoints hold ports that will come back
// without waiting out TIME_WAIT (those in TIME_WAIT count only with
// TIME_WAIT reuse, which reclaims them), and a channel closed at the next
// release or progress of a closed endpoint. With a valid remote (a dial on
// a per-destination pool) it counts only the ports that dial could use:
// those held toward remote or for every destination.
func (r *reaper) closing(remote netip.AddrPort) (int, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for l := range r.pending {
		if !l.usableToward(remote) {
			continue
		}
		if r.st.reuse || tcp.EndpointState(l.ep.State()) != tcp.StateTimeWait {
			n++
		}
	}
	return n, r.changed
}

// usableToward reports whether l's port, once released, could serve a
// dial toward remote (the zero AddrPort: toward anywhere).
func (l *lingering) usableToward(remote netip.AddrPort) bool {
	return !remote.IsValid() || !l.hold.to.IsValid() || l.hold.to == remote
}

// sweep releases the ports of every pending endpoint that has gone, at
// once, and returns how many it freed.
func (r *reaper) sweep() int {
	r.mu.Lock()
	all := make([]*lingering, 0, len(r.pending))
	for l := range r.pending {
		all = append(all, l)
	}
	r.mu.Unlock()
	n := 0
	for _, l := range all {
		if gone(l.ep) && r.finish(l) {
			n++
		}
	}
	return n
}

// reclaimTimeWait aborts every closed endpoint that is in TIME_WAIT and
// releases its port, for TIME_WAIT reuse, and returns how many it freed.
// With a valid remote (a dial on a per-destination pool), it leaves alone
// the endpoints whose ports are held toward other destinations: freeing
// them would not give that dial a port.
func (r *reaper) reclaimTimeWait(remote netip.AddrPort) int {
	r.mu.Lock()
	var tw []*lingering
	for l := range r.pending {
		if l.usableToward(remote) && tcp.EndpointState(l.ep.State()) == tcp.StateTimeWait {
			tw = append(tw, l)
		}
	}
	r.mu.Unlock()
	n := 0
	for _, l := range tw {
		// Abort notifies, and the entry may release the port from
		// there before finish gets to it: count it either way.
		l.ep.Abort()
		if r.finish(l) || !r.isPending(l) {
			n++
		}
	}
	return n
}

func (r *reaper) isPending(l *lingering) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pending[l]
	return ok
}

// stop ends the goroutine and releases every port still held; the gVisor
// stack has been closed and waited for by then.
func (r *reaper) stop() {
	r.mu.Lock()
	r.stopped = true
	rest := make([]*lingering, 0, len(r.pending))
	for l := range r.pending {
		rest = append(rest, l)
	}
	r.mu.Unlock()
	close(r.done)
	r.wg.Wait()
	for _, l := range rest {
		r.finish(l)
	}
}
