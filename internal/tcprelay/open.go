//go:build linux

package tcprelay

import (
	"context"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// A new flow: the Gateway's admission, the relay's limits, and the host
// connect that comes before the guest's SYN-ACK.

// open starts a flow for a SYN, or refuses it with a reset. to and
// denied are Gateway.Admit's answer (take asked).
func (r *Relay) open(s *seg, to netip.AddrPort, denied error) {
	opts := header.ParseSynOptions(s.opts, false)
	if denied != nil {
		r.denied.Add(1)
		r.log.Debug("tcp flow denied", "src", s.key.guest, "dst", s.key.remote, "why", denied)
		r.resetFor(s)
		return
	}
	refuse := func(why refuseReason) {
		if why != refuseFlows { // TakeFlow counts its own
			r.refused.Add(1)
		}
		r.refusals.note(why, s.key.guest.Addr(), s.key.remote.Addr())
		r.resetFor(s)
	}
	if r.failed.Load() {
		refuse(refusePoller)
		return
	}
	// Counted first, then checked: readers on several queues cannot
	// overshoot MaxSYNs together.
	if r.syns.Add(1) > r.maxSYNs {
		r.syns.Add(-1)
		refuse(refuseSYNs)
		return
	}
	if !r.gw.TakeFlow() {
		r.syns.Add(-1)
		refuse(refuseFlows)
		return
	}
	f := &rflow{r: r, key: s.key, v6: s.v6, guestA: s.src, remoteA: s.dst, guestMAC: s.mac, irs: s.seq, rcvNxt: s.seq + 1, state: stSynRcvd,
		sndWnd: s.wnd, rto: r.tm.rto, fd: -1, readSize: relayReadFirst, dialing: true, synCounted: true}
	f.born = time.Now()
	// ParseSynOptions floors the MSS at 48, as Linux's tcp_min_snd_mss
	// does: an MSS of 1 would cost a segment per byte.
	f.mss = int(opts.MSS)
	if f.mss == 0 {
		f.mss = header.TCPDefaultMSS
		if s.v6 {
			f.mss = 1220
		}
	}
	lim := r.mss4
	if s.v6 {
		lim = r.mss6
	}
	f.mss = min(f.mss, lim)
	if opts.WS >= 0 {
		f.guestWS, f.ourWS = uint8(min(opts.WS, header.MaxWndScale)), relayWS
	}
	f.iss = r.isn(s.key)
	f.sndUna, f.sndNxt = f.iss, f.iss
	f.wl1, f.wl2 = s.seq, f.iss
	f.mu.Lock()
	defer f.mu.Unlock()
	r.mu.Lock()
	if r.closing || r.flows[s.key] != nil || r.failed.Load() {
		// Under r.mu: fail takes its list of flows under it after
		// marking the relay failed, so no flow slips past both.
		r.mu.Unlock()
		f.endSyn()
		r.gw.DropFlow()
		return
	}
	r.nextID++
	f.id = r.nextID
	r.flows[s.key] = f
	r.byID[f.id] = f
	r.mu.Unlock()
	if r.blocking {
		// The Gateway's Socket may block: it runs on a goroutine,
		// and the flow takes its descriptor when it returns.
		f.armDialDeadline()
		if !r.gw.Go(func() { f.dialBlocking(to) }) {
			f.finish(false)
		}
		return
	}
	fd, done, err := r.gw.Socket(r.ctx, to)
	if err != nil {
		f.dialFailed(err)
		return
	}
	if f.attach(fd, done) && !done {
		f.armDialDeadline()
	}
}

// attach makes fd, connected (done) or connecting, f's host socket, in
// the relay's epoll set; it reports false if the flow ended.
func (f *rflow) attach(fd int, done bool) bool {
	keepAlive(fd)
	f.fd = fd
	f.outWatched = !done
	if err := f.r.poll.ctl(unix.EPOLL_CTL_ADD, fd, f.id, !done); err != nil {
		f.dialFailed(err)
		return false
	}
	if done {
		f.connected()
	}
	return true
}

// armDialDeadline arms the dial's deadline, on the timer that later sends
// the SYN-ACK again.
func (f *rflow) armDialDeadline() {
	f.rto = f.r.dialWait
	f.armTimer()
	f.rto = f.r.tm.rto
}

// dialBlocking opens f's host connection with a Gateway.Socket that may
// block.
func (f *rflow) dialBlocking(to netip.AddrPort) {
	r := f.r
	ctx, cancel := context.WithTimeout(r.ctx, r.dialWait)
	fd, done, err := r.gw.Socket(ctx, to)
	cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == stDone {
		if err == nil {
			unix.Close(fd)
		}
		return
	}
	if err != nil {
		f.dialFailed(err)
		return
	}
	f.attach(fd, done)
}

// dialFailed refuses the guest's connection after a failed dial.
func (f *rflow) dialFailed(err error) {
	f.r.refused.Add(1)
	f.r.log.Debug("tcp dial failed", "src", f.key.guest, "dst", f.key.remote, "err", err)
	f.finish(false) // first: a guest that hears the reset finds the flow gone
	f.r.write(f, header.TCPFlagRst|header.TCPFlagAck, 0, f.rcvNxt, 0, buffer.Buffer{}, nil)
}

// endDial notes that f's connect is over. The flow stays in Relay.syns
// until the guest completes its handshake too (endSyn).
func (f *rflow) endDial() { f.dialing = false }

// connected completes the guest's handshake once the host's is done.
func (f *rflow) connected() {
	f.endDial()
	f.born = time.Now() // SYN-RECEIVED starts: its timeout counts from the SYN-ACK
	f.stopTimer()       // the dial's deadline
	f.r.carried.Add(1)
	f.sndNxt, f.sndMax = f.iss+1, f.iss+1
	f.startPeek()
	f.sendSynAck()
	f.armTimer()
}
