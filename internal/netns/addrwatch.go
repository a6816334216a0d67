//go:build linux

package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddrWatch is a netlink socket subscribed to the address and route
// events of the network namespace it was made in: a wait for an address
// to become usable looks again at each event instead of polling. It
// starts no goroutine; Wait blocks in poll(2).
type AddrWatch struct{ fd int }

// NewAddrWatch subscribes to the address and route events of the calling
// thread's namespace. Make it before the change it waits for, so that no
// event is missed.
func NewAddrWatch() (*AddrWatch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	groups := uint32(unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	return &AddrWatch{fd: fd}, nil
}

// Close closes the socket.
func (w *AddrWatch) Close() error { return unix.Close(w.fd) }

// Wait returns once ready reports true, calling it first and again after
// each batch of events, or an error matching os.ErrDeadlineExceeded when
// timeout passes first. An error from ready ends the wait.
func (w *AddrWatch) Wait(timeout time.Duration, ready func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 32<<10)
	for {
		ok, err := ready()
		if err != nil || ok {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return os.NewSyscallError("poll", err)
		}
		// Drain: the events only say "look again"; so does an
		// overflow (ENOBUFS).
		for {
			if _, _, err := unix.Recvfrom(w.fd, buf, unix.MSG_DONTWAIT); err != nil && err != unix.ENOBUFS {
				break
			}
		}
	}
}

// ErrDADFailed matches an address that failed duplicate address
// detection: another host on the link has it.
var ErrDADFailed = errors.New("duplicate address detection failed")

// addrUsable reports whether the kernel takes packets for a: not
// tentative, and with its local route in place. An IPv6 address leaves
// duplicate address detection (or skips it) in a work queue that clears
// the tentative flag, and announces the address, before it adds the local
// route; a packet arriving in between is dropped, so the flag alone is not
// enough.
func addrUsable(h *netlink.Handle, a netlink.Addr) (bool, error) {
	if a.Flags&unix.IFA_F_DADFAILED != 0 {
		return false, fmt.Errorf("%s: %w", a.IPNet, ErrDADFailed)
	}
	if a.Flags&unix.IFA_F_TENTATIVE != 0 {
		return false, nil
	}
	routes, err := h.RouteGet(a.IP)
	if err != nil {
		return false, err
	}
	return len(routes) > 0 && routes[0].Type == unix.RTN_LOCAL, nil
}

// LinkReady reports whether every IPv6 address of link, the kernel's
// link-local one included, is usable (see addrUsable), through h (a
// handle in link's namespace). pending names one that is not.
func LinkReady(h *netlink.Handle, link netlink.Link) (ok bool, pending string, err error) {
	addrs, err := h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return false, "", err
	}
	for _, a := range addrs {
		ok, err := addrUsable(h, a)
		if err != nil {
			return false, a.IPNet.String(), err
		}
		if !ok {
			return false, a.IPNet.String(), nil
		}
	}
	return true, "", nil
}

// addrReady reports whether the kernel in the namespace takes packets for
// ip now.
func (ns *NS) addrReady(ip net.IP) (bool, error) {
	family := netlink.FAMILY_V4
	if ip.To4() == nil {
		family = netlink.FAMILY_V6
	}
	addrs, err := ns.h.AddrList(nil, family)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return addrUsable(ns.h, a)
		}
	}
	return false, nil
}
