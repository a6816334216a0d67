//go:build linux

package udprelay

import (
	"github.com/ustacknet/ustack/internal/rawsys"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// From the guest to the host: the pump.

// schedule queues f for the pump. It runs in the stack's delivery of the
// guest's datagram, so it only queues.
func (r *Relay) schedule(f *flow) {
	if f.queue.Swap(true) {
		return
	}
	r.mu.Lock()
	r.ready = append(r.ready, f)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// pump sends the datagrams of the flows in ready to their host sockets.
func (r *Relay) pump() {
	buf := make([]byte, 64<<10)
	var batch []*flow
	for until(r.wake, r.stopc) {
		r.mu.Lock()
		batch, r.ready = r.ready, batch[:0]
		r.mu.Unlock()
		for i, f := range batch {
			f.queue.Store(false) // a datagram from now on queues f again
			f.fromGuest(buf)
			batch[i] = nil
		}
	}
}

// fromGuest sends what f's endpoint holds to the host socket, until the
// endpoint is empty or the socket full (then the poller resumes once the
// socket is writable).
func (f *flow) fromGuest(buf []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended || f.pend != nil {
		return
	}
	for {
		w := tcpip.SliceWriter(buf)
		res, terr := f.ep.Read(&w, tcpip.ReadOptions{})
		if terr != nil {
			if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
				f.endLocked()
			}
			return
		}
		f.touch()
		if !f.sendLocked(buf[:res.Count]) {
			return
		}
	}
}

// sendLocked sends one datagram on the host socket and reports whether
// the flow can go on: if the socket is full it keeps the datagram and
// waits for the socket to be writable. A datagram the host refuses
// otherwise (an ICMP error from an earlier one, too big for the path, no
// route) is lost, as it would be from a socket of the guest's own, and the
// flow goes on; an ICMP error read from the socket ends it (hostEvent).
func (f *flow) sendLocked(b []byte) bool {
	for {
		_, err := rawsys.Send(f.fd, b)
		switch err {
		case nil:
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			f.pend = append([]byte(nil), b...)
			if unix.EpollCtl(f.r.epfd, unix.EPOLL_CTL_MOD, f.fd, f.event(unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLET)) != nil {
				f.endLocked()
			}
			return false
		default:
			f.r.log.Debug("udp flow: send", "err", err)
			return true
		}
	}
}
