//go:build linux

package sandbox

import "sync"

// DefaultRelayBuffer is Config.RelayBuffer's default.
const DefaultRelayBuffer = 16 << 20

// relayBudget bounds the data the relay holds in user space, all flows
// together: guest data acknowledged but not yet taken by a full host
// socket (rflow.pend), and, on a kernel where flows cannot peek (before
// Linux 6.9), host data read and not yet acknowledged by the guest
// (rflow.q). The rest stays in the host sockets' kernel
// buffers, which the kernel bounds. A flow that finds the budget spent
// waits: it reads no more from its host socket, and takes (and
// acknowledges) no more guest data than its host socket accepts at once,
// with its window closing accordingly. As the budget frees, the waiting
// flows are woken in turn, on a goroutine of the Gateway's, to read and
// to announce their windows again. Memory never grows past the limit,
// whatever the guests and hosts do.
type relayBudget struct {
	r *relay

	// LOCK ORDERING: rflow.mu > relayBudget.mu. A flow takes and gives
	// with its lock held; the budget never takes a flow's lock (wake
	// runs without it).

	mu       sync.Mutex // guards the fields below, and rflow.budgetWait
	limit    int
	used     int
	usedPend int      // of used, what pend (guest data for full host sockets) holds
	waiting  []*rflow // flows that found it spent, in order; each once (rflow.budgetWait)
	waking   bool     // a wake goroutine runs
}

// take grants f up to n bytes, and reports how many. A flow granted less
// than it asked for waits for a wake. Guest data kept for full host
// sockets (pend) may hold at most half the budget: hosts that stop
// reading cannot starve the downloads of the other flows.
func (b *relayBudget) take(f *rflow, n int, pend bool) int {
	if n <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	g := min(n, b.limit-b.used)
	if pend {
		g = min(g, b.limit/2-b.usedPend)
		g = max(g, 0)
		b.usedPend += g
	}
	b.used += g
	if g < n && !f.budgetWait {
		f.budgetWait = true
		b.waiting = append(b.waiting, f)
	}
	return g
}

// availPend is what take would grant pend now, at most.
func (b *relayBudget) availPend() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(0, min(b.limit-b.used, b.limit/2-b.usedPend))
}

// give returns n bytes (of pend's, if pend), and wakes the waiting flows.
// One wake goroutine at a time serves every waiter, so returns while it
// runs cost nothing more.
func (b *relayBudget) give(n int, pend bool) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if pend {
		b.usedPend -= n
	}
	if len(b.waiting) == 0 || b.waking || b.used >= b.limit {
		b.mu.Unlock()
		return
	}
	b.waking = true
	b.mu.Unlock()
	if !b.r.g.go_(b.wake) {
		b.mu.Lock()
		b.waking = false
		b.mu.Unlock()
	}
}

// wake resumes the waiting flows while the budget has room, oldest
// first; a flow that finds it spent again waits again, at the back.
func (b *relayBudget) wake() {
	for {
		b.mu.Lock()
		if len(b.waiting) == 0 || b.limit-b.used <= 0 {
			b.waking = false
			b.mu.Unlock()
			return
		}
		f := b.waiting[0]
		b.waiting[0] = nil
		b.waiting = b.waiting[1:]
		f.budgetWait = false // here, so that a take from now on queues f again
		b.mu.Unlock()
		f.mu.Lock()
		if f.state != stDone {
			f.resume()
		}
		f.mu.Unlock()
	}
}
