//go:build linux

package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
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
// its local route is in place (see addrUsable). It looks again at each of
// the namespace's address and route events.
func (ns *NS) WaitAddr(addr netip.Addr, timeout time.Duration) error {
	var w *AddrWatch
	if err := ns.Do(func() (err error) {
		w, err = NewAddrWatch()
		return err
	}); err != nil {
		return fmt.Errorf("netns: waiting for %s: %w", addr, err)
	}
	defer w.Close()
	err := w.Wait(timeout, func() (bool, error) { return ns.addrReady(net.IP(addr.AsSlice())) })
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("netns: address %s not usable after %v (missing, tentative, or without its local route): %w", addr, timeout, err)
	}
	if err != nil {
		return fmt.Errorf("netns: waiting for %s: %w", addr, err)
	}
	return nil
}
