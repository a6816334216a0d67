//go:build linux

package tcprelay

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/ustacknet/ustack/internal/rawsys"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
)

// The relay's host side: every flow's host socket is a raw non-blocking
// descriptor in one epoll set of the relay's, registered edge-triggered
// for input and the peer's FIN (and for output while a connect is in
// progress or a write found the socket full). One goroutine waits on the set,
// and it does not block a thread in epoll_wait to do so: the set's own
// descriptor goes into Go's network poller (an epoll descriptor is
// readable while it has events), so the goroutine parks like any socket
// reader and drains the set when woken. A flow therefore costs no
// goroutine, no net.Conn and no registration with Go's poller; the
// connect, reads and writes are the system calls pasta makes (raw ones:
// package rawsys), called where the event that needs them is handled (the
// guest's segment on the link's reader, or the host's event on the
// poller).

// hostPoll is the relay's epoll set and its goroutine.
type hostPoll struct {
	fd     int
	ep     *os.File // fd, in Go's poller
	rc     syscall.RawConn
	closed atomic.Bool
}

// pollIn is what a connected socket is registered for; EPOLLOUT joins
// it while a connect is in progress, and once a write found the socket
// full (watchOut). A connected socket is writable at once, and an edge
// for that would only wake the poller for nothing.
const pollIn = unix.EPOLLIN | unix.EPOLLPRI | unix.EPOLLRDHUP | unix.EPOLLET

func newHostPoll() (*hostPoll, error) {
	fd, ep, rc, err := rawsys.NewEpoll("relay-epoll")
	if err != nil {
		return nil, err
	}
	return &hostPoll{fd: fd, ep: ep, rc: rc}, nil
}

// ctl registers sock under id (op EPOLL_CTL_ADD), or changes its events
// (EPOLL_CTL_MOD): pollIn, and EPOLLOUT if out.
func (p *hostPoll) ctl(op, sock int, id uint64, out bool) error {
	ev := unix.EpollEvent{Events: pollIn, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if out {
		ev.Events |= unix.EPOLLOUT
	}
	return os.NewSyscallError("epoll_ctl", unix.EpollCtl(p.fd, op, sock, &ev))
}

// watchOut asks for f's socket's EPOLLOUT edges, after a write found it
// full; it reports false if the flow ended.
func (f *rflow) watchOut() bool {
	if f.outWatched {
		return true
	}
	if err := f.r.poll.ctl(unix.EPOLL_CTL_MOD, f.fd, f.id, true); err != nil {
		f.hostFailed(err)
		return false
	}
	f.outWatched = true
	return true
}

// run hands each event to the flow registered under its id, until close.
func (p *hostPoll) run(r *Relay) {
	var evs [128]unix.EpollEvent
	err := p.rc.Read(func(fd uintptr) bool {
		for {
			n, err := rawsys.EpollPoll(int(fd), evs[:])
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				r.fail(os.NewSyscallError("epoll_wait", err))
				return true
			}
			for i := range n {
				r.hostEvent(uint64(uint32(evs[i].Fd))|uint64(uint32(evs[i].Pad))<<32, evs[i].Events)
			}
			if n < len(evs) {
				return false // drained: park until the set is readable
			}
		}
	})
	if err != nil && !p.closed.Load() {
		r.fail(err)
	}
}

// fail is the end of the host poller other than by close: the relay's
// flows can no longer hear their host sockets. It logs once, resets every
// flow both ways, and from then on the relay refuses new flows with a
// reset (open).
func (r *Relay) fail(err error) {
	if r.failed.Swap(true) {
		return
	}
	r.log.Error("tcp relay: the host poller stopped; new TCP flows are refused", "err", err)
	r.mu.Lock()
	fs := make([]*rflow, 0, len(r.flows))
	for _, f := range r.flows {
		fs = append(fs, f)
	}
	r.mu.Unlock()
	for _, f := range fs {
		f.mu.Lock()
		if f.state != stDone {
			f.hostFailed(err)
		}
		f.mu.Unlock()
	}
}

// close ends run and closes the set. The relay ends every flow first
// (shut), so that no socket is added to a closed set.
func (p *hostPoll) close() {
	p.closed.Store(true)
	p.ep.Close()
}

// hostEvent handles events of the host socket of flow id.
func (r *Relay) hostEvent(id uint64, events uint32) {
	r.mu.Lock()
	f := r.byID[id]
	r.mu.Unlock()
	if f == nil {
		return // ended since the event was queued
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == stDone || f.fd < 0 {
		return
	}
	if f.dialing {
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		errno, err := rawsys.GetsockoptInt(f.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && errno != 0 {
			err = syscall.Errno(errno)
		}
		if err == nil && events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			err = syscall.ECONNREFUSED // no error left to read: say what the kernel usually does
		}
		if err != nil {
			f.dialFailed(os.NewSyscallError("connect", err))
			return
		}
		f.connected()
	}
	if events&(unix.EPOLLIN|unix.EPOLLPRI|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		f.readable = true
		f.finQueued = events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
		if events&unix.EPOLLPRI != 0 {
			// Urgent data: reads stop short at its mark with more
			// queued behind it, which brings no new event, so a short
			// read does not mean an empty socket until one says EAGAIN.
			f.urgent = true
		}
		f.pull()
		if f.state != stDone && events&unix.EPOLLERR != 0 {
			// An error (the host's reset) that a closed window kept
			// the reads or peeks from meeting (a peek flow reads
			// nothing past the window, a reading one no further than
			// its room) ends the flow now: its data would never go.
			if errno, err := rawsys.GetsockoptInt(f.fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && errno != 0 {
				f.hostFailed(os.NewSyscallError("recvfrom", syscall.Errno(errno)))
			}
		}
	}
	if f.state != stDone && (f.pend.Size() > 0 || f.hostFull) && events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		f.flush()
	}
	f.maybeDone()
	f.active()
}

// keepAlive turns on keepalive on a host socket, first probe after
// relayKeepIdle of silence, then the system's interval and count
// (net.ipv4.tcp_keepalive_intvl and _probes: 75 s and 9 by default): a
// host peer that dies without a word while the flow is idle then fails
// the socket, and the guest hears a reset, instead of the flow and its
// descriptor being held for good. Two calls per connection.
//
// It also has urgent data (MSG_OOB) kept in line: the relay carries a
// byte stream and no urgent pointer, and a socket that took the urgent
// byte out of the stream would have the guest miss it, and a peek flow
// count its offsets wrong (the kernel's peek offset skips the byte that
// sequence numbers count).
func keepAlive(fd int) {
	rawsys.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	rawsys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, relayKeepIdle)
	rawsys.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_OOBINLINE, 1)
}

// pull reads the host's data while the socket has some and the guest's
// window and the relay's budget leave room, and sends it. It does not end
// the flow: its callers do, once they have sent what they owe the guest
// (an ACK of its FIN).
func (f *rflow) pull() {
	if f.peek {
		f.push() // it peeks at the socket as it sends
		return
	}
	read := false
	for f.readable && !f.hostEOF && f.state != stDone {
		room := f.readRoom()
		if room <= 0 {
			break // resumed by the guest's ACKs (onAck)
		}
		size := f.r.budget.take(f, min(room, f.readSize), false)
		if size == 0 {
			break // resumed by a wake (relayBudget)
		}
		v := buffer.NewViewSize(size)
		n, err := rawsys.Read(f.fd, v.AsSlice())
		f.r.budget.give(size-max(n, 0), false)
		if n <= 0 {
			v.Release()
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			f.readable = false
		case err != nil:
			if read {
				f.push()
			}
			f.hostFailed(os.NewSyscallError("read", err))
			return
		case n == 0:
			f.hostEOF = true
		default:
			read = true
			if n < size {
				// A short read: keep a view of the size it holds,
				// so the memory matches what the budget counts.
				w := buffer.NewViewWithData(v.AsSlice()[:n])
				v.Release()
				v = w
			} else {
				v.CapLength(n)
			}
			f.q = append(f.q, v)
			f.qLen += n
			if n < size && !f.finQueued && !f.urgent {
				// The socket is empty, and had no FIN (or error) when
				// its events were collected: its next data or FIN
				// is a new event, so the read that would only say
				// EAGAIN is saved.
				f.readable = false
			} else if n == size && f.readSize < relayReadMax {
				f.readSize = relayReadMax // a bulk flow: read in large pieces
			}
		}
	}
	if read || f.hostEOF {
		f.push()
	}
}

// startPeek turns the socket's peek offset on (SO_PEEK_OFF), so that the
// host's data can stay in its receive queue until the guest acknowledges
// it: a peek flow holds none of it in user space. Linux has the option
// for TCP from 6.9; before, the first refusal has the relay read into q
// from then on.
func (f *rflow) startPeek() {
	if f.r.noPeek.Load() {
		return
	}
	if err := rawsys.SetsockoptInt(f.fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		if err == unix.EOPNOTSUPP || err == unix.ENOPROTOOPT || err == unix.EINVAL {
			f.r.noPeek.Store(true)
			f.r.log.Debug("tcp relay: no SO_PEEK_OFF for TCP; host data is read into the relay's budget", "err", err)
		}
		return // this flow reads, whatever the error
	}
	f.peek, f.peekPos = true, 0
}

// peekData copies up to n bytes of the host's data from offset off (from
// sndUna) out of the socket's receive queue, leaving them there. A peek
// that finds nothing there now clears readable; one at the host's FIN sets
// hostEOF. ok is false if the flow ended.
func (f *rflow) peekData(off, n int) (b buffer.Buffer, got int, ok bool) {
	if n <= 0 {
		return b, 0, true // a peek of nothing would say EOF
	}
	if pos := f.skip + off; pos != f.peekPos {
		if err := rawsys.SetsockoptInt(f.fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, pos); err != nil {
			f.hostFailed(os.NewSyscallError("setsockopt SO_PEEK_OFF", err))
			return b, 0, false
		}
		f.peekPos = pos
	}
	v := buffer.NewViewSize(n)
	for {
		m, err := rawsys.Peek(f.fd, v.AsSlice())
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			v.Release()
			f.readable, f.urgent = false, false
			return b, 0, true
		case err != nil:
			v.Release()
			f.hostFailed(os.NewSyscallError("recvfrom", err))
			return b, 0, false
		case m == 0:
			v.Release()
			f.hostEOF = true
			return b, 0, true
		}
		f.peekPos += m
		f.qLen = max(f.qLen, off+m)
		if m < n {
			v.CapLength(m)
			if f.finQueued {
				// The FIN may be next: one more peek tells, so that
				// it rides on this data.
				var one [1]byte
				switch k, err := rawsys.Peek(f.fd, one[:]); {
				case k == 0 && err == nil:
					f.hostEOF = true
				case k > 0:
					f.peekPos += k
					f.qLen = max(f.qLen, off+m+k)
				case err != nil && err != unix.EAGAIN && err != unix.EINTR:
					// An error (the host's reset): this peek took
					// it off the socket, so it is kept for push to
					// fail the flow with once this data is sent, as
					// a read does.
					f.hostErr = os.NewSyscallError("recvfrom", err)
				}
			} else if !f.urgent {
				// The socket held no more, and had no FIN (or error)
				// when its events were collected: its next data or
				// FIN is a new event.
				f.readable = false
			}
		} else if n == f.readSize && f.readSize < relayReadMax {
			f.readSize = relayReadMax // a bulk flow: peek in large pieces
		}
		b.Append(v)
		return b, m, true
	}
}

// discard takes the bytes the guest acknowledged off the host socket's
// receive queue, which opens the window its peer sees.
func (f *rflow) discard() error {
	for f.skip > 0 {
		n, err := rawsys.Discard(f.fd, f.skip)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return os.NewSyscallError("recvfrom", err)
		case n == 0:
			return fmt.Errorf("recvfrom: %d acknowledged bytes are gone from the socket", f.skip)
		}
		f.skip -= n
		// The kernel moves the peek offset back by what was taken
		// (TestPeekOffsetFollowsDiscard).
		if f.peekPos >= 0 {
			f.peekPos = max(f.peekPos-n, 0)
		}
	}
	return nil
}

// resume goes on after a wait for the relay's budget: it reads what the
// host has, and tells the guest of a window that has opened.
func (f *rflow) resume() {
	before := f.lastWnd
	f.pull()
	if f.state == stEstablished {
		if w := uint32(f.rcvRoom()); w > before && (before < uint32(f.mss) || w-before >= uint32(f.mss)) {
			f.ack()
		}
	}
	f.maybeDone()
}

// toHost writes guest data to the host socket without blocking, keeping
// what the socket does not take in pend, as far as the relay's budget
// allows, until it is writable again. It returns how many of the n bytes
// it took (written or kept), and false if the flow ended.
func (f *rflow) toHost(p [][]byte, n int) (int, bool) {
	total := n
	if f.pend.Size() == 0 {
		for n > 0 {
			var w int
			var err error
			if len(p) == 1 {
				w, err = rawsys.Write(f.fd, p[0])
			} else {
				w, err = rawsys.Writev(f.fd, p)
			}
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				// The socket's EPOLLOUT edge calls flush.
				f.hostFull = true
				if !f.watchOut() {
					return 0, false
				}
				break
			}
			if err != nil {
				f.hostFailed(os.NewSyscallError("write", err))
				return 0, false
			}
			n -= w
			for w > 0 { // drop what was written
				if len(p[0]) > w {
					p[0] = p[0][w:]
					break
				}
				w -= len(p[0])
				p = p[1:]
			}
		}
		if n == 0 {
			f.hostFull = false
			return total, true
		}
	}
	kept := f.r.budget.take(f, n, true)
	left := kept
	for _, b := range p {
		if left == 0 {
			break
		}
		b = b[:min(len(b), left)]
		f.pend.Append(buffer.NewViewWithData(b))
		left -= len(b)
	}
	return total - n + kept, true
}

// flush writes pend to the host socket, without blocking, after the
// socket became writable, and gives what it wrote back to the budget.
func (f *rflow) flush() {
	before := int(f.lastWnd)
	var iov [16][]byte
	for f.pend.Size() > 0 {
		p := iov[:0]
		f.pend.Apply(func(v *buffer.View) { // no clones, unlike SubApply
			if len(p) < len(iov) {
				p = append(p, v.AsSlice())
			}
		})
		w, err := rawsys.Writev(f.fd, p)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			f.hostFailed(os.NewSyscallError("write", err))
			return
		}
		f.pend.TrimFront(int64(w))
		f.r.budget.give(w, true)
	}
	if f.pend.Size() == 0 {
		f.hostFull = false
	}
	// Tell the guest once the window has grown by a quarter, or from
	// less than a segment.
	if w := f.rcvRoom(); w-before >= relayWindow/4 || (before < f.mss && w >= f.mss) {
		f.ack()
	}
	if f.pend.Size() == 0 && f.guestFin {
		f.shutHost()
		f.maybeDone()
	}
}

// shutHost passes the guest's FIN on, once pend is written. When the
// host has sent its FIN too, the close that ends the flow (maybeDone)
// sends ours, one system call fewer; its socket has nothing left to read,
// so the close is a FIN and not a reset.
func (f *rflow) shutHost() {
	if f.hostShut || f.hostEOF {
		return
	}
	f.hostShut = true
	if err := rawsys.Shutdown(f.fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
		f.hostFailed(os.NewSyscallError("shutdown", err))
	}
}

// closeHost closes the host socket: gracefully, or with a reset.
func (f *rflow) closeHost(graceful bool) {
	if f.fd < 0 {
		return
	}
	if !graceful {
		rawsys.SetLinger0(f.fd)
	}
	rawsys.Close(f.fd) // and out of the epoll set
	f.fd = -1
}
