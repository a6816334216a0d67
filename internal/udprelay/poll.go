//go:build linux

package udprelay

import (
	"bytes"

	"github.com/ustacknet/ustack/internal/rawsys"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// From the host to the guest: the poller.

// poll hands the host sockets' events to their flows until Close.
func (r *Relay) poll() {
	var evs [128]unix.EpollEvent
	buf := make([]byte, 64<<10)
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), evs[:], 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				r.log.Error("udp flows: epoll_wait", "err", err)
				return true
			}
			for i := range n {
				id := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
				r.mu.Lock()
				f := r.byID[id]
				r.mu.Unlock()
				if f != nil {
					f.hostEvent(evs[i].Events, buf)
				}
			}
			if n < len(evs) {
				return false // drained: park until the set is readable
			}
		}
	})
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if err != nil && !closed {
		r.log.Error("udp flows: host poller stopped", "err", err)
	}
}

// hostEvent handles the host socket's events: datagrams for the guest,
// room for a datagram that waits.
func (f *flow) hostEvent(events uint32, buf []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return
	}
	if events&unix.EPOLLOUT != 0 && f.pend != nil {
		p := f.pend
		f.pend = nil
		if unix.EpollCtl(f.r.epfd, unix.EPOLL_CTL_MOD, f.fd, f.event(unix.EPOLLIN|unix.EPOLLET)) != nil {
			f.endLocked()
			return
		}
		if !f.sendLocked(p) {
			return
		}
		// What the guest sent meanwhile waits in the endpoint.
		f.r.schedule(f)
	}
	var rd bytes.Reader
	for {
		n, err := rawsys.Recv(f.fd, buf)
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return
		default:
			// ICMP port unreachable and the like: the host's peer is
			// gone, and so is the flow (the guest's next datagram
			// opens a new one).
			f.endLocked()
			return
		}
		f.touch()
		rd.Reset(buf[:n])
		// A datagram the stack cannot take at once (its send buffer
		// full) is dropped, as a full queue drops it.
		f.ep.Write(&rd, tcpip.WriteOptions{})
		if f.isDNS {
			f.endLocked() // a DNS flow ends with its answer
			return
		}
	}
}
