package nsexec

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/tun"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Guest is how the guest's device is made inside the namespace. The
// caller has checked it: nsexec passes it to tun and netlink as it is.
type Guest struct {
	IfName     string         `json:"if_name"`
	MTU        int            `json:"mtu"`
	TxQueueLen int            `json:"tx_queue_len"` // tun.Config.TxQueueLen
	Addrs      []netip.Prefix `json:"addrs"`        // the guest's addresses
	Gateways   []netip.Addr   `json:"gateways"`     // a default route via each
	// Down leaves the device to the namespace's owner: no addresses,
	// routes or up, and a TAP device named IfName made there beforehand
	// is attached to, if there is one (OpenDevice only).
	Down bool `json:"down,omitempty"`
}

// makeDevice makes the guest's device in the namespace nsf (nil: the one
// the whole process is in, as in Init): a TAP device made there
// beforehand if g.Down and there is one, else a new TUN device with g's
// addresses and default routes. Creating one needs CAP_NET_ADMIN over the
// namespace.
func makeDevice(nsf *os.File, g Guest) (*tun.Device, error) {
	if g.Down {
		dev, err := tun.OpenTAP(g.IfName, g.MTU, nsf)
		if err == nil {
			return dev, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sandbox: attaching to %s: %w", g.IfName, err)
		}
	}
	dev, err := tun.Open(tun.Config{Name: g.IfName, MTU: g.MTU, TxQueueLen: g.TxQueueLen, Addrs: g.Addrs, Up: !g.Down, NetNS: nsf})
	if err != nil {
		return nil, fmt.Errorf("sandbox: creating the interface: %w", err)
	}
	routes := func() error {
		noSLAAC(dev.Name(), g.Addrs)
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("sandbox: netlink: %w", err)
		}
		defer h.Close()
		return addDefaultRoutes(h, dev.Name(), g.Gateways)
	}
	if nsf != nil {
		err = netns.DoIn(nsf, routes)
	} else {
		err = routes()
	}
	if err != nil {
		dev.Close()
		return nil, err
	}
	return dev, nil
}

// noSLAAC turns address autoconfiguration off on the guest's link name
// when addrs (what ustack assigned there) include an IPv6 address, in the
// calling thread's network namespace. The gateway's router advertisements
// still give the route and the MTU, but the guest keeps the one address
// the sandbox documents, instead of gaining a second one from the prefix
// some time after its command started, tentative at first. Best effort:
// where /proc/sys is read-only the guest just gets both.
func noSLAAC(name string, addrs []netip.Prefix) {
	for _, p := range addrs {
		if p.Addr().Is6() {
			os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/autoconf", []byte("0"), 0)
			return
		}
	}
}

// addDefaultRoutes adds a default route via each gateway on link name.
func addDefaultRoutes(h *netlink.Handle, name string, gws []netip.Addr) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("sandbox: %s: %w", name, err)
	}
	for _, gw := range gws {
		dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		if gw.Is6() {
			dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw.AsSlice()}); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("sandbox: default route via %s: the namespace already has a default route (%w)", gw, err)
			}
			return fmt.Errorf("sandbox: default route via %s: %w", gw, err)
		}
	}
	return nil
}

// tunMode is /dev/net/tun's permission bits, for messages.
func tunMode() string {
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%04o", fi.Mode().Perm())
}

// isUserNS reports whether the process is in a user namespace other than
// the initial one.
func isUserNS() bool {
	data, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	return !(len(data) > 0 && string(data) != "" && containsFullMap(string(data)))
}

func containsFullMap(s string) bool {
	var a, b, c uint64
	n, _ := fmt.Sscan(s, &a, &b, &c)
	return n == 3 && a == 0 && b == 0 && c == 4294967295
}
