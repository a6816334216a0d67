package stack

import (
	"net/netip"
	"sync"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// reaper returns the ports of closed TCP endpoints to the pool once gVisor
// has let go of them: when the endpoint reaches CLOSE (after TIME_WAIT or
// LAST_ACK) or ERROR (after a reset). gVisor signals that with EventHUp,
// after it has released its own reservation and left the demultiplexer,
// and the port is released right there, in gVisor's notification, so a
// dial that follows finds it free. A dial that finds the range full
// sweeps the closed endpoints first (allocate), and a slow periodic sweep
// catches any endpoint that closes without a notification.
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

// lingering is a closed TCP endpoint whose port is still held: toward
// remote on a per-destination pool, for every destination if remote is
// the zero AddrPort.
type lingering struct {
	ep     tcpip.Endpoint
	wq     *waiter.Queue
	port   uint16
	remote netip.AddrPort
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

// add takes a TCP endpoint the user has closed, with the pool port it
// holds (0 if none) and the remote endpoint it is held toward (the zero
// AddrPort if it is held for every destination), and releases the port
// once the endpoint is gone.
func (r *reaper) add(ep tcpip.Endpoint, wq *waiter.Queue, port uint16, remote netip.AddrPort) {
	if port == 0 {
		return
	}
	l := &lingering{ep: ep, wq: wq, port: port, remote: remote, closed: time.Now()}
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
		r.st.releaseTo(portalloc.TCP, port, remote)
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
	r.st.releaseTo(portalloc.TCP, l.port, l.remote)
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
		if remote.IsValid() && l.remote.IsValid() && l.remote != remote {
			continue
		}
		if r.st.reuse || tcp.EndpointState(l.ep.State()) != tcp.StateTimeWait {
			n++
		}
	}
	return n, r.changed
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
		if remote.IsValid() && l.remote.IsValid() && l.remote != remote {
			continue
		}
		if tcp.EndpointState(l.ep.State()) == tcp.StateTimeWait {
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
