//go:build linux

package tcprelay

import (
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// timing holds the relay's timer settings; tests scale them down.
type timing struct {
	rto, maxRTO, synTimeout, finTimeout, idleTimeout time.Duration
}

func defaultTiming(idle time.Duration) timing {
	return timing{rto: relayRTO, maxRTO: relayMaxRTO, synTimeout: relaySynTimeout, finTimeout: relayFinTimeout, idleTimeout: idle}
}

func (f *rflow) armTimer() {
	if f.timerOn {
		return
	}
	d := f.rto
	if f.state == stSynRcvd && !f.dialing {
		// No later than the handshake's deadline.
		d = min(d, max(0, f.r.tm.synTimeout-time.Since(f.born)))
	}
	f.timerOn = true
	f.timerAt = time.Now().Add(d)
	arm(&f.timer, d, f.onTimer)
}

func (f *rflow) restartTimer() {
	f.stopTimer()
	f.armTimer()
}

func (f *rflow) stopTimer() {
	if f.timerOn {
		f.timer.Stop()
		f.timerOn = false
	}
}

// onTimer sends again what the guest has not acknowledged (all of it, in
// the window: losses on the link come in bursts), backing off, and resets
// the flow once relayRetries are spent.
func (f *rflow) onTimer() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.timerOn || f.state == stDone || time.Now().Before(f.timerAt) {
		return // stopped or re-armed since it fired
	}
	f.timerOn = false
	if f.dialing {
		f.dialFailed(fmt.Errorf("connect: no answer in %v", f.r.dialWait))
		return
	}
	f.retries++
	synLate := f.state == stSynRcvd && time.Since(f.born) >= f.r.tm.synTimeout
	if f.retries > relayRetries || synLate {
		why := "tcp flow: guest stopped acknowledging"
		if synLate {
			why = "tcp flow: guest did not complete its handshake"
		}
		f.r.log.Debug(why, "src", f.key.guest, "dst", f.key.remote)
		f.finish(false) // first: a guest that hears the reset finds the flow gone
		f.r.write(f, header.TCPFlagRst|header.TCPFlagAck, f.sndNxt, f.rcvNxt, 0, buffer.Buffer{}, nil)
		return
	}
	f.rto = min(2*f.rto, f.r.tm.maxRTO)
	f.recovering = false
	switch {
	case f.state == stSynRcvd:
		f.sendSynAck()
		f.armTimer()
	case f.sndUna != f.sndNxt:
		f.sndNxt = f.sndUna
		f.finSent = false
		f.push()
	case f.unsent():
		// The guest's window is zero: probe it with a segment one
		// below what it has acknowledged, which draws an ACK with its
		// window, as Linux's window probes do. No byte is sent beyond
		// the window, and nothing that was sent is forgotten.
		f.r.write(f, header.TCPFlagAck, f.sndUna-1, f.rcvNxt, f.window(), buffer.Buffer{}, nil)
		f.armTimer()
	}
}

// idlePeriod is how long f may go without a segment either way: the FIN
// timeout once a side has closed, else the idle timeout (0: none).
func (f *rflow) idlePeriod() time.Duration {
	if f.guestFin || f.hostEOF || f.hostShut {
		return f.r.tm.finTimeout
	}
	return f.r.tm.idleTimeout
}

// active notes that a segment moved, and keeps the idle timer armed for
// f's period. A flow with no period (established, no idle timeout) pays
// nothing here.
func (f *rflow) active() {
	if f.state != stEstablished {
		return
	}
	d := f.idlePeriod()
	if d <= 0 {
		return
	}
	now := time.Now()
	f.lastActive = now
	due := now.Add(d)
	if f.idleOn && !due.Before(f.idleAt) {
		return // it fires in time and looks at lastActive then
	}
	f.idleOn, f.idleAt = true, due
	arm(&f.idle, d, f.onIdle)
}

// onIdle ends f, with resets both ways, if nothing has moved for its
// period; else it waits for the rest of it.
func (f *rflow) onIdle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == stDone || !f.idleOn || time.Now().Before(f.idleAt) {
		return // stopped or re-armed since it fired
	}
	d := f.idlePeriod()
	if left := d - time.Since(f.lastActive); d > 0 && left > 0 {
		f.idleAt = time.Now().Add(left)
		f.idle.Reset(left)
		return
	}
	f.idleOn = false
	if d <= 0 {
		return
	}
	f.r.log.Debug("tcp flow: idle timeout", "src", f.key.guest, "dst", f.key.remote, "after", d)
	f.finish(false) // first: a guest that hears the reset finds the flow gone
	f.r.write(f, header.TCPFlagRst|header.TCPFlagAck, f.sndNxt, f.rcvNxt, 0, buffer.Buffer{}, nil)
}

func (f *rflow) armDelAck() {
	if f.delackOn {
		return
	}
	f.delackOn = true
	arm(&f.delack, relayDelAck, f.onDelAck)
}

func (f *rflow) onDelAck() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delackOn = false
	if f.state != stDone && f.ackNeeded {
		f.ack()
	}
}

// arm has *t call fn after d, making the timer on its first use: a flow
// keeps each of its timers for its life, and a stopped one is armed again
// with Reset.
func arm(t **time.Timer, d time.Duration, fn func()) {
	if *t == nil {
		*t = time.AfterFunc(d, fn)
	} else {
		(*t).Reset(d)
	}
}
