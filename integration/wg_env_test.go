package integration

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/wgtun"
	"github.com/ustacknet/ustack/wgtun/wgtest"
	"github.com/vishvananda/netlink"
	wgtundev "golang.zx2c4.com/wireguard/tun"
)

// Tunnel addresses of the WireGuard tests: side B (the kernel, behind a
// real TUN in a private namespace) and side A (ustack, no kernel
// interface).
var (
	wgKernel4 = netip.MustParsePrefix("198.18.10.1/24")
	wgStack4  = netip.MustParsePrefix("198.18.10.2/24")
	wgKernel6 = netip.MustParsePrefix("fd00:10::1/64")
	wgStack6  = netip.MustParsePrefix("fd00:10::2/64")
)

const wgMTU = 1420

// wgEnv is a WireGuard tunnel between a ustack stack (side A: a wgtun
// device under wireguard-go) and the Linux kernel (side B: wireguard-go on
// a real TUN device inside a private namespace). Both wireguard-go
// devices' UDP sockets are in the host namespace and peer over 127.0.0.1;
// only the TUN device and what the kernel serves behind it are in the
// private namespace, which has no route out.
type wgEnv struct {
	ns     *netns.NS
	a      *wgtun.Device
	tunnel *wgtest.Tunnel
}

// fixedMTU reports a fixed MTU for a wireguard-go TUN device. The native
// device reads its MTU with an ioctl by interface name on a socket made by
// whatever thread asks, which is in the host namespace, not the device's.
type fixedMTU struct {
	wgtundev.Device
	mtu int
}

func (d fixedMTU) MTU() (int, error) { return d.mtu, nil }

// newWGEnv brings up the tunnel for the test, with cfg for side A's stack
// (its Addrs are set here), and tears it all down at the test's end.
func newWGEnv(t *testing.T, cfg stack.Config) *wgEnv {
	t.Helper()
	ns := netnstest.New(t)
	var kdev wgtundev.Device
	// The TUN device belongs to the namespace of the thread that opens
	// /dev/net/tun; wireguard-go also makes its netlink monitor socket
	// there, on the same call.
	if err := ns.Do(func() error {
		for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
			if err := os.WriteFile(f, []byte("0"), 0); err != nil {
				return err
			}
		}
		var err error
		kdev, err = wgtundev.CreateTUN("wgb%d", wgMTU)
		return err
	}); err != nil {
		t.Fatalf("creating side B's TUN in the namespace: %v", err)
	}
	name, err := kdev.Name()
	if err != nil {
		kdev.Close()
		t.Fatal(err)
	}
	if err := configureKernelSide(ns, name); err != nil {
		kdev.Close()
		t.Fatalf("configuring %s: %v", name, err)
	}
	cfg.Addrs = []netip.Prefix{wgStack4, wgStack6}
	a, err := wgtun.New(wgtun.Config{Stack: cfg, MTU: wgMTU})
	if err != nil {
		kdev.Close()
		t.Fatal(err)
	}
	// Called from an ordinary goroutine, so both devices' UDP sockets are
	// made in the host namespace, where 127.0.0.1 reaches both.
	tunnel, err := wgtest.New(
		wgtest.Side{TUN: a, Addrs: cfg.Addrs},
		wgtest.Side{TUN: fixedMTU{kdev, wgMTU}, Addrs: []netip.Prefix{wgKernel4, wgKernel6}},
		nil)
	if err != nil {
		t.Fatal(err) // New closed both devices
	}
	t.Cleanup(tunnel.Close)
	return &wgEnv{ns: ns, a: a, tunnel: tunnel}
}

// configureKernelSide gives the kernel's end of the TUN its addresses and
// sets it up, then waits (bounded) until its IPv6 address is usable.
func configureKernelSide(ns *netns.NS, name string) error {
	h := ns.Handle()
	link, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	for _, p := range []netip.Prefix{wgKernel4, wgKernel6} {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if err := h.AddrAdd(link, addr); err != nil {
			return err
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return err
	}
	if err := netnstest.AwaitAddr(ns, 5*time.Second, netnstest.Settled(link.Attrs().Index, wgKernel6.Addr())); err != nil {
		return fmt.Errorf("kernel address %v: %w", wgKernel6.Addr(), err)
	}
	return nil
}

// kernelListen listens in the kernel of the env's namespace.
func (e *wgEnv) kernelListen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	return listenIn(t, e.ns, network, addr)
}

func (e *wgEnv) kernelListenPacket(t *testing.T, network, addr string) net.PacketConn {
	t.Helper()
	return listenPacketIn(t, e.ns, network, addr)
}
