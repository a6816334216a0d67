//go:build linux

package netnstest_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// AwaitAddr returns once an address on a veth has passed duplicate
// address detection, and not before; for an address never added it fails
// at its bound, saying what it saw.
func TestAwaitAddr(t *testing.T) {
	ns := netnstest.New(t)
	h := ns.Handle()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ua0"}, PeerName: "ub0"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName("ua0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("fd00:77::1")
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(64, 128)}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ua0", "ub0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := netnstest.AwaitAddr(ns, 10*time.Second, netnstest.Settled(link.Attrs().Index, addr)); err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	settled := false
	for _, a := range addrs {
		if a.IP.Equal(addr.AsSlice()) {
			settled = a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0
		}
	}
	if !settled {
		t.Fatalf("AwaitAddr returned while %v is tentative or missing: %+v", addr, addrs)
	}

	never := netip.MustParseAddr("fd00:77::99")
	start := time.Now()
	err = netnstest.AwaitAddr(ns, 100*time.Millisecond, netnstest.Settled(0, never))
	if err == nil || !strings.Contains(err.Error(), "fd00:77::1/64") {
		t.Fatalf("AwaitAddr for an address never added: %v, want an error listing the events seen", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("AwaitAddr gave up after %v, before its bound", d)
	}
}
