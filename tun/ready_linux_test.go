package tun

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Open with Up returns a device none of whose IPv6 addresses, the
// kernel's link-local one included, is tentative.
func TestOpenWaitsForAddresses(t *testing.T) {
	ns := netnstest.New(t)
	d, err := Open(Config{Name: "ustk-ready", Up: true, NetNS: ns.File(), Addrs: []netip.Prefix{netip.MustParsePrefix("fd00:1::1/64")}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var addrs []netlink.Addr
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName("ustk-ready")
		if err != nil {
			return err
		}
		addrs, err = netlink.AddrList(l, netlink.FAMILY_V6)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	linkLocal := false
	for _, a := range addrs {
		if a.Flags&unix.IFA_F_TENTATIVE != 0 {
			t.Errorf("%s is tentative after Open returned", a.IPNet)
		}
		linkLocal = linkLocal || a.IP.IsLinkLocalUnicast()
	}
	if !linkLocal {
		t.Errorf("no link-local address among %v: the test checks nothing", addrs)
	}
}

// waitReady waits through real duplicate address detection (a veth
// link, which has ARP, with DAD on: the address stays tentative for the
// kernel's one-second retransmit timer), and fails with ErrNotReady when
// the bound is shorter than that.
func TestWaitReady(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit time.Duration
		ok    bool
	}{
		{"through DAD", 10 * time.Second, true},
		{"bound too short", 50 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netnstest.New(t)
			err := ns.Do(func() error {
				for _, f := range []string{"all/accept_dad", "default/accept_dad"} {
					if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f, []byte("1"), 0); err != nil {
						return err
					}
				}
				w, err := netns.NewAddrWatch()
				if err != nil {
					return err
				}
				defer w.Close()
				h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
				if err != nil {
					return err
				}
				defer h.Close()
				l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "dad0"}, PeerName: "dad1"}
				if err := h.LinkAdd(l); err != nil {
					return err
				}
				peer, err := h.LinkByName("dad1")
				if err != nil {
					return err
				}
				if err := h.LinkSetUp(peer); err != nil {
					return err
				}
				_, ipn, _ := net.ParseCIDR("fd00:2::1/64")
				ipn.IP = net.ParseIP("fd00:2::1")
				if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
					return err
				}
				if err := h.LinkSetUp(l); err != nil {
					return err
				}
				link, err := h.LinkByName("dad0")
				if err != nil {
					return err
				}
				before, _ := h.AddrList(link, netlink.FAMILY_V6)
				tentative := 0
				for _, a := range before {
					if a.Flags&unix.IFA_F_TENTATIVE != 0 {
						tentative++
					}
				}
				if tentative == 0 {
					t.Fatalf("no tentative address to wait for: %v", before)
				}
				werr := waitReady(w, h, link, tc.limit)
				after, _ := h.AddrList(link, netlink.FAMILY_V6)
				for _, a := range after {
					if werr == nil && a.Flags&unix.IFA_F_TENTATIVE != 0 {
						t.Errorf("%s still tentative after waitReady returned nil", a.IPNet)
					}
				}
				return werr
			})
			switch {
			case tc.ok && err != nil:
				t.Fatalf("waitReady: %v", err)
			case !tc.ok && !errors.Is(err, ErrNotReady):
				t.Fatalf("waitReady = %v, want an error matching ErrNotReady", err)
			}
		})
	}
}
