//go:build linux

package tcprelay

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// refuseReason says why the relay refused a guest's SYN.
type refuseReason uint8

const (
	refuseSource refuseReason = iota // from outside the guest's networks
	refuseSYNs                       // over MaxSYNs
	refuseFlows                      // over MaxFlows
	refusePoller                     // the host poller has failed
	nRefuseReasons
)

var refuseText = [nRefuseReasons]string{
	"the source address is outside the guest's networks",
	"too many handshakes in progress (MaxSYNs)",
	"too many flows (MaxFlows)",
	"the relay's host poller has failed",
}

// refusalLogEvery is how often refusals are logged, at most.
const refusalLogEvery = time.Second

// refusalLog counts the relay's refusals and logs them from a timer's
// goroutine, never on the packet path: the first at once, then at most
// one line per reason every refusalLogEvery, with the count and the
// first flow of the period. A guest that floods SYNs costs a counter
// increment each, not a log line.
type refusalLog struct {
	log *slog.Logger

	// LOCK ORDERING: mu is a leaf: note takes it with no other lock
	// held, and flush logs after letting it go.

	mu      sync.Mutex // guards the fields below
	counts  [nRefuseReasons]int
	first   [nRefuseReasons][2]netip.Addr // source and destination of the period's first
	armed   bool
	stopped bool      // no logging from now on
	last    time.Time // the last flush
	timer   *time.Timer
}

// note counts one refusal.
func (l *refusalLog) note(why refuseReason, src, dst netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts[why] == 0 {
		l.first[why] = [2]netip.Addr{src, dst}
	}
	l.counts[why]++
	if l.armed || l.stopped {
		return
	}
	l.armed = true
	wait := max(0, refusalLogEvery-time.Since(l.last))
	arm(&l.timer, wait, l.flush)
}

func (l *refusalLog) flush() {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	counts, first := l.counts, l.first
	l.counts = [nRefuseReasons]int{}
	l.armed = false
	l.last = time.Now()
	l.mu.Unlock()
	for why, n := range counts {
		if n > 0 {
			l.log.Warn("tcp flows refused", "why", refuseText[why], "count", n, "first_src", first[why][0], "first_dst", first[why][1])
		}
	}
}

// stop stops the timer; refusals still counted are not logged.
func (l *refusalLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.stopped = true
}
