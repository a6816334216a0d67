package stack

import (
	"sync"
	"time"
)

// deadline is one direction's deadline of a connection. wait returns a
// channel that is closed once the deadline has passed; setting a new
// deadline replaces the channel if the old one already fired.
type deadline struct {
	mu    sync.Mutex // guards the fields below; a leaf, taken after a conn's readMu or writeMu
	timer *time.Timer
	ch    chan struct{} // closed when the deadline passes
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

// set arms the deadline for t; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		// The timer fired or is firing; its callback may have closed ch.
		// Start over with a fresh channel if so.
		select {
		case <-d.ch:
			d.ch = make(chan struct{})
		default:
		}
	}
	d.timer = nil
	select {
	case <-d.ch:
		d.ch = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.ch)
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.ch == ch {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
	})
}

// wait returns the channel closed at the deadline.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// stop disarms the timer for good.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

// connDeadlines are a conn's read and write deadlines, with the setters
// of net.Conn.
type connDeadlines struct {
	rd, wd *deadline
}

func newConnDeadlines() connDeadlines {
	return connDeadlines{rd: newDeadline(), wd: newDeadline()}
}

// SetDeadline implements net.Conn.
func (d connDeadlines) SetDeadline(t time.Time) error {
	d.rd.set(t)
	d.wd.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (d connDeadlines) SetReadDeadline(t time.Time) error { d.rd.set(t); return nil }

// SetWriteDeadline implements net.Conn.
func (d connDeadlines) SetWriteDeadline(t time.Time) error { d.wd.set(t); return nil }

// stop disarms both timers for good.
func (d connDeadlines) stop() {
	d.rd.stop()
	d.wd.stop()
}
