//go:build linux

package netnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AwaitAddr waits, from the kernel's address events, until an address
// for which match holds is reported in ns (nil: the calling thread's
// namespace). It subscribes to the events first and then lists the
// addresses already there, so it misses none. It returns nil at the first
// match, or, once bound has passed, an error listing what it saw.
func AwaitAddr(ns *netns.NS, bound time.Duration, match func(netlink.AddrUpdate) bool) error {
	ch := make(chan netlink.AddrUpdate, 16)
	done := make(chan struct{})
	subErr := make(chan error, 1)
	opts := netlink.AddrSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case subErr <- err:
			default:
			}
		},
	}
	subscribe := func() error { return netlink.AddrSubscribeWithOptions(ch, done, opts) }
	var err error
	if ns != nil {
		// The subscription's socket stays in the namespace it was made in.
		err = ns.Do(subscribe)
	} else {
		err = subscribe()
	}
	if err != nil {
		return fmt.Errorf("subscribing to address events: %w", err)
	}
	defer func() {
		close(done)
		for range ch { // until the subscription's goroutine has ended
		}
	}()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	var seen []string
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				select {
				case err := <-subErr:
					return fmt.Errorf("address events ended: %w", err)
				default:
					return errors.New("address events ended")
				}
			}
			if match(u) {
				return nil
			}
			seen = append(seen, describe(u))
		case <-timer.C:
			return fmt.Errorf("no matching address within %v; events seen: %v", bound, seen)
		}
	}
}

// Settled returns a match for AwaitAddr that holds for addr, on the link
// with index linkIndex (0: any), once it is present and has passed
// duplicate address detection: neither tentative nor failed.
func Settled(linkIndex int, addr netip.Addr) func(netlink.AddrUpdate) bool {
	ip := net.IP(addr.AsSlice())
	return func(u netlink.AddrUpdate) bool {
		return u.NewAddr && u.LinkAddress.IP.Equal(ip) && (linkIndex == 0 || u.LinkIndex == linkIndex) &&
			u.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0
	}
}

func describe(u netlink.AddrUpdate) string {
	op := "new"
	if !u.NewAddr {
		op = "del"
	}
	return fmt.Sprintf("%s %v on link %d flags %#x", op, u.LinkAddress.String(), u.LinkIndex, u.Flags)
}
