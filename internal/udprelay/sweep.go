//go:build linux

package udprelay

import (
	"time"

	"golang.org/x/sys/unix"
)

// The end of a flow: idle, or by Close.

// sweep ends flows idle for their timeout, checking a few times per
// timeout: a flow ends between its timeout and a quarter more.
func (r *Relay) sweep() {
	period := min(r.cfg.IdleTimeout, r.cfg.DNSTimeout) / 4
	t := time.NewTicker(period)
	defer t.Stop()
	var idle []*flow
	for until(t.C, r.stopc) {
		now := time.Now().UnixNano()
		r.mu.Lock()
		for _, f := range r.byID {
			timeout := r.cfg.IdleTimeout
			if f.isDNS {
				timeout = r.cfg.DNSTimeout
			}
			if now-f.last.Load() >= int64(timeout) {
				idle = append(idle, f)
			}
		}
		r.mu.Unlock()
		for i, f := range idle {
			f.end()
			idle[i] = nil
		}
		idle = idle[:0]
	}
}

// end ends f: its endpoint, its host socket and its slot.
func (f *flow) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endLocked()
}

func (f *flow) endLocked() {
	if f.ended {
		return
	}
	f.ended = true
	r := f.r
	r.mu.Lock()
	delete(r.byID, f.id)
	r.mu.Unlock()
	if f.entry.Mask() != 0 {
		f.wq.EventUnregister(&f.entry)
	}
	f.ep.Close()
	unix.Close(f.fd) // leaves the epoll set with it
	f.fd = -1
	f.pend = nil
	r.gw.DropFlow()
}
