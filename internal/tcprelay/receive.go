//go:build linux

package tcprelay

import (
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

// input handles a segment of the flow from the guest.
func (f *rflow) input(s *seg) {
	if f.state == stDone {
		return
	}
	if s.flags&header.TCPFlagRst != 0 {
		// RFC 5961 3.2: a reset ends the flow only at exactly the
		// next sequence number; elsewhere in the window it draws a
		// challenge ACK, which a guest that really reset answers
		// with a reset that fits. Outside the window it is ignored.
		switch {
		case s.seq == f.rcvNxt:
			f.finish(false)
		case f.state == stEstablished && f.rcvNxt.LessThan(s.seq) && s.seq.LessThan(f.rcvNxt.Add(seqnum.Size(max(f.lastWnd, 1)))):
			f.ack()
		}
		return
	}
	if s.flags&header.TCPFlagSyn != 0 {
		if f.state == stSynRcvd {
			if !f.dialing && s.flags&header.TCPFlagAck == 0 && s.seq == f.irs {
				f.sendSynAck() // the guest sent its SYN again
			}
			return // still dialling: the SYN-ACK comes when the dial ends
		}
		// RFC 5961 4.2: a SYN on a synchronized connection draws a
		// challenge ACK. A guest that lost the connection answers
		// with a reset (at rcvNxt, which ends the flow) and sends its
		// SYN again; an off-path SYN changes nothing.
		f.ack()
		return
	}
	if s.flags&header.TCPFlagAck == 0 {
		return
	}
	if f.state == stSynRcvd {
		if f.dialing || s.ack != f.iss+1 {
			if !f.dialing {
				f.r.resetFor(s)
			}
			return
		}
		f.state = stEstablished
		f.endSyn()
		f.sndUna = f.iss + 1
		f.wl1, f.wl2 = s.seq, s.ack
		f.retries, f.rto = 0, f.r.tm.rto
		f.stopTimer()
		defer func() {
			// Host data that came before the guest's ACK goes now.
			if f.state == stEstablished {
				f.push()
				f.pull()
			}
		}()
	}
	if f.sndMax.LessThan(s.ack) {
		// It acknowledges what was never sent: RFC 9293 3.10.7.4 has
		// the segment dropped and answered with an ACK (RFC 5961 5.2).
		f.ack()
		return
	}
	if !f.onData(s) { // first, so that data sent below carries the new ACK
		f.active() // a keepalive probe is activity too
		return     // unacceptable: answered with an ACK, and dropped
	}
	if f.state == stDone {
		return
	}
	f.onAck(s)
	if f.state == stDone {
		return
	}
	if f.ackNeeded {
		// In-order data is acknowledged at once only every second
		// full segment (as Linux and RFC 9293 3.8.6.3 do); otherwise
		// the ACK waits up to relayDelAck to ride on the host's answer,
		// which on a request and response saves the guest a packet.
		if f.ackDelay && int(f.rcvAcked.Size(f.rcvNxt)) < 2*f.mss {
			f.armDelAck()
		} else {
			f.ack()
		}
	}
	f.maybeDone()
	f.active()
}

// onData takes the payload and FIN of s. It reports false for a segment
// that is not acceptable (RFC 9293 3.10.7.4), which it has answered with
// an ACK: the caller drops it, ACK field and all.
func (f *rflow) onData(s *seg) bool {
	fin := s.flags&header.TCPFlagFin != 0
	if s.n == 0 && !fin {
		// A bare segment is acceptable at rcvNxt, or inside a window
		// that is open. Otherwise it gets an ACK: keepalive probes
		// (one below rcvNxt) are such segments, and their senders
		// count on the answer.
		// The right edge counts (as Linux's tcp_sequence has it): a
		// guest that filled the window sends its ACKs from there.
		if s.seq != f.rcvNxt && !(f.rcvNxt.LessThan(s.seq) && s.seq.LessThanEq(f.rcvAdv)) {
			f.ack()
			return false
		}
		return true
	}
	f.ackNeeded = true // whatever happens next, the guest hears where we are
	f.ackDelay = false
	seq, n, payload := s.seq, s.n, s.payload
	if seq.LessThan(f.rcvNxt) {
		// Partly or wholly old: skip what was taken.
		skip := int(seq.Size(f.rcvNxt))
		if skip > n || (skip == n && !fin) || (skip == n && f.guestFin) {
			f.ack() // a duplicate: tell the guest where we are
			return false
		}
		n -= skip
		seq = f.rcvNxt
		for skip > 0 {
			if len(payload[0]) > skip {
				payload[0] = payload[0][skip:]
				break
			}
			skip -= len(payload[0])
			payload = payload[1:]
		}
	}
	if seq != f.rcvNxt || f.guestFin {
		// Out of order (dropped; the guest sends it again) or after
		// the FIN. The ACK goes at once and bare, whatever data is
		// waiting to go: a guest counts only bare ACKs as duplicates,
		// and three of them make it send the missing segment.
		f.ack()
		return true
	}
	room := relayWindow - int(f.pend.Size())
	whole := true // all the segment's new data was taken
	if n > room {
		n, fin, whole = room, false, false // beyond the window offered
		payload = capSlices(payload, n)
	}
	if n > 0 {
		took, ok := f.toHost(payload, n)
		if !ok {
			return true // the flow ended
		}
		if took < n {
			// The host socket is full and the budget spent: the
			// rest is not acknowledged, and comes again.
			n, fin = took, false
		}
		f.rcvNxt = f.rcvNxt.Add(seqnum.Size(n))
		whole = whole && n == s.n-int(s.seq.Size(seq))
	}
	// The ACK of a FIN may wait too, for the host's FIN (as Linux's
	// does in CLOSE_WAIT): a host that closes in turn saves the guest a
	// segment. Not when ours has gone: nothing would carry it.
	f.ackDelay = whole && (!fin || !f.hostEOF)
	if fin {
		f.rcvNxt++
		f.guestFin = true
		if f.pend.Size() == 0 {
			f.shutHost()
		}
	}
	return true
}

func capSlices(p [][]byte, n int) [][]byte {
	for i, b := range p {
		if len(b) >= n {
			p[i] = b[:n]
			return p[:i+1]
		}
		n -= len(b)
	}
	return p
}

// onAck handles the acknowledgement and window of s.
// The caller has dropped segments whose ACK is beyond sndMax.
func (f *rflow) onAck(s *seg) {
	if s.ack.LessThan(f.sndUna) {
		return // an old ACK (RFC 9293 3.10.7.4: ignored)
	}
	wnd := s.wnd << f.guestWS
	// The window comes only from a segment no older than the one it
	// last came from (SND.WL1 and SND.WL2): a reordered old ACK does
	// not move it.
	fresh := f.wl1.LessThan(s.seq) || (f.wl1 == s.seq && f.wl2.LessThanEq(s.ack))
	// An acceptable ACK: the guest is there. A guest that keeps its
	// window closed while it answers our probes keeps the flow.
	f.retries = 0
	if s.ack == f.sndUna {
		// A duplicate ACK as RFC 5681 counts them: no data, no FIN,
		// the same window, and data outstanding.
		if s.n == 0 && f.sndUna != f.sndNxt && s.flags&header.TCPFlagFin == 0 && wnd == f.sndWnd {
			f.dupAcks++
			if f.dupAcks == 3 && !f.recovering {
				// Fast retransmit, and recovery until everything
				// sent so far is acknowledged (NewReno, RFC 6582).
				f.recovering, f.recover = true, f.sndMax
				f.retransmit()
			}
		}
		if fresh {
			f.wl1, f.wl2 = s.seq, s.ack
			f.setWindow(wnd)
		}
		return
	}
	acked := int(f.sndUna.Size(s.ack))
	if f.finOut && f.finSeq.LessThan(s.ack) {
		f.finAcked = true
		acked--
	}
	if f.sndNxt.LessThan(s.ack) {
		// Acknowledges what was sent before a timeout took sndNxt back.
		f.sndNxt = s.ack
		f.finSent = f.finAcked
	}
	f.sndUna = s.ack
	f.trim(acked)
	if f.state == stDone {
		return // the host socket failed
	}
	f.dupAcks, f.rto = 0, f.r.tm.rto
	if f.recovering {
		if s.ack.LessThan(f.recover) {
			f.retransmit() // a partial ACK: the next hole
		} else {
			f.recovering = false
		}
	}
	if fresh {
		f.wl1, f.wl2 = s.seq, s.ack
		f.setWindow(wnd)
	}
	if f.sndUna == f.sndNxt {
		f.stopTimer()
	} else {
		f.restartTimer()
	}
	f.push()
	f.pull()
}

func (f *rflow) setWindow(w uint32) {
	grew := w > f.sndWnd
	if f.sndWnd == 0 && w > 0 && f.sndUna == f.sndNxt {
		// The window opened: the persist timer, backed off maybe to
		// maxRTO, gives way to a fresh retransmission timer.
		f.stopTimer()
		f.rto = f.r.tm.rto
	}
	f.sndWnd = w
	if grew {
		f.push()
		f.pull()
	}
}

// window returns the window to advertise, scaled, and notes it, with the
// furthest right edge advertised so far (rcvAdv). The window may shrink,
// down to zero, when the budget is spent: RFC 9293 3.8.6.2.2 advises
// against it, but a window the relay could not honour would have the
// guest send what is then dropped, and a zero window is what tells a
// stalled guest to wait. Segments up to rcvAdv stay acceptable, so a
// guest that had sent up to an earlier edge still gets its ACKs through.
func (f *rflow) window() uint16 {
	w := uint32(f.rcvRoom())
	if f.ourWS == 0 {
		w = min(w, 0xffff)
	}
	w = min(w, 0xffff<<f.ourWS)
	f.lastWnd = w >> f.ourWS << f.ourWS
	if edge := f.rcvNxt.Add(seqnum.Size(f.lastWnd)); f.rcvAdv.LessThan(edge) {
		f.rcvAdv = edge
	}
	return uint16(w >> f.ourWS)
}

// rcvRoom is the window to offer: what pend may still take, within the
// relay's budget. The host socket takes more at once, as a rule, but a
// window the relay could not hold when it does not would have the guest
// send segments that are then dropped.
func (f *rflow) rcvRoom() int {
	room := relayWindow - int(f.pend.Size())
	if f.hostFull {
		// Only what pend can still hold; a socket that takes data
		// at once needs no budget, so a new flow is never starved by
		// the others' stalls.
		room = min(room, f.r.budget.availPend())
	}
	return max(0, room)
}

// ack sends a bare ACK.
func (f *rflow) ack() {
	f.ackNeeded = false
	f.r.write(f, header.TCPFlagAck, f.sndNxt, f.rcvNxt, f.window(), buffer.Buffer{}, nil)
}
