package tun

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/vishvananda/netlink"
)

// ReadyTimeout bounds how long Open waits for the kernel to finish with a
// new link's IPv6 addresses (see Open). On a TUN device duplicate address
// detection has nothing to send and ends as soon as the kernel's work
// queue runs it, normally within milliseconds; the bound is generous for
// a machine under heavy load.
const ReadyTimeout = 10 * time.Second

// ErrNotReady matches (with errors.Is) Open's error when an IPv6 address
// of the new device is still not usable after ReadyTimeout, or fails
// duplicate address detection.
var ErrNotReady = errors.New("address not ready")

// waitReady returns once every IPv6 address of link is usable
// (netns.LinkReady), which includes the link-local address the kernel
// adds when the link goes up. A tentative address can neither send nor
// receive: a guest whose command starts before the kernel's duplicate
// address detection has run (it is queued work, late on a loaded machine)
// loses its first IPv6 packets. w, made before the device was configured,
// wakes the wait at each address or route event.
func waitReady(w *netns.AddrWatch, h *netlink.Handle, link netlink.Link, limit time.Duration) error {
	name := link.Attrs().Name
	var pending string
	err := w.Wait(limit, func() (ok bool, err error) {
		ok, pending, err = netns.LinkReady(h, link)
		return ok, err
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, netns.ErrDADFailed):
		return &deviceError{msg: fmt.Sprintf("address %s on %q failed duplicate address detection: another host on the link uses it", pending, name), err: errors.Join(ErrNotReady, err)}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &deviceError{msg: fmt.Sprintf("address %s on %q is not usable after %v: the kernel has not finished duplicate address detection", pending, name, limit), err: errors.Join(ErrNotReady, err)}
	}
	return configError("wait for the addresses", name, err)
}
