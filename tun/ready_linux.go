package tun

import (
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ReadyTimeout bounds how long Open waits for the kernel to finish with a
// new link's IPv6 addresses (see Open). On a TUN device duplicate address
// detection has nothing to send and ends as soon as the kernel's work
// queue runs it, normally within milliseconds; the bound is generous for
// a machine under heavy load.
const ReadyTimeout = 10 * time.Second

// addrWatch is a netlink socket subscribed to the IPv6 address events of
// the namespace it was made in. Open makes it before it configures a
// device, so no event that matters can be missed, and waits on it with
// poll(2): no goroutine, nothing left behind.
type addrWatch struct{ fd int }

func newAddrWatch() (*addrWatch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, &deviceError{msg: "netlink socket for address events: " + errnoString(err), err: err}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV6_IFADDR}); err != nil {
		unix.Close(fd)
		return nil, &deviceError{msg: "subscribe to address events: " + errnoString(err), err: err}
	}
	return &addrWatch{fd: fd}, nil
}

func (w *addrWatch) close() { unix.Close(w.fd) }

// ErrNotReady matches (with errors.Is) Open's error when an IPv6 address
// of the new device stays tentative past ReadyTimeout, or fails duplicate
// address detection.
var ErrNotReady = errors.New("address not ready")

// waitReady returns once no IPv6 address of link is tentative, which
// includes the link-local address the kernel adds when the link goes up.
// A tentative address can neither send nor receive: a guest whose
// command starts before the kernel's duplicate address detection has run
// (it is queued work, late on a loaded machine) loses its first IPv6
// packets. Every address event wakes it to look again.
func (w *addrWatch) waitReady(h *netlink.Handle, link netlink.Link, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	buf := make([]byte, 16<<10)
	name := link.Attrs().Name
	for {
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return configError("list addresses", name, err)
		}
		pending := ""
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return &deviceError{msg: fmt.Sprintf("address %s on %q failed duplicate address detection: another host on the link uses it", a.IPNet, name), err: ErrNotReady}
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				pending = a.IPNet.String()
			}
		}
		if pending == "" {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return &deviceError{msg: fmt.Sprintf("address %s on %q is still tentative after %v: the kernel has not finished duplicate address detection", pending, name, limit), err: ErrNotReady}
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return &deviceError{msg: "wait for address events: " + errnoString(err), err: err}
		}
		// Drain: the events only say "look again". An overflow
		// (ENOBUFS) says the same.
		for {
			if _, _, err := unix.Recvfrom(w.fd, buf, unix.MSG_DONTWAIT); err != nil && err != unix.ENOBUFS {
				break
			}
		}
	}
}
