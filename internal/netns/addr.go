package netns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DisableDAD turns IPv6 duplicate address detection off in the namespace
// (net.ipv6.conf.all and .default accept_dad = 0), so that the IPv6
// addresses of interfaces made afterwards are usable without DAD's wait
// of a second or more. Interfaces that exist already keep their setting.
func (ns *NS) DisableDAD() error {
	return ns.Do(func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
			if err := os.WriteFile(f, []byte("0"), 0); err != nil {
				return fmt.Errorf("netns: turning off duplicate address detection: %w", err)
			}
		}
		return nil
	})
}

// WaitAddr waits, at most timeout, until the kernel in the namespace takes
// packets for addr: the address is on an interface, not tentative, and
// its local route is in place. An IPv6 address finishes duplicate address
// detection (or skips it, with DisableDAD) in a work queue that clears
// the tentative flag before it adds the local route; a packet arriving in
// between is dropped as an address error, so the flag alone is not
// enough. The wait polls every millisecond.
func (ns *NS) WaitAddr(addr netip.Addr, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ready, err := ns.addrReady(addr)
		if err != nil {
			return fmt.Errorf("netns: waiting for %s: %w", addr, err)
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns: address %s not usable after %v (missing, tentative, or without its local route): %w", addr, timeout, os.ErrDeadlineExceeded)
		}
		time.Sleep(time.Millisecond)
	}
}

// addrReady reports whether the kernel takes packets for addr now.
func (ns *NS) addrReady(addr netip.Addr) (bool, error) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	ip := net.IP(addr.AsSlice())
	addrs, err := ns.h.AddrList(nil, family)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if !a.IP.Equal(ip) || a.Flags&unix.IFA_F_TENTATIVE != 0 {
			continue
		}
		routes, err := ns.h.RouteGet(ip)
		if err != nil {
			return false, err
		}
		return len(routes) > 0 && routes[0].Type == unix.RTN_LOCAL, nil
	}
	return false, nil
}
