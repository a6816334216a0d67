package tun

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// TestOpenTAP attaches to a persistent TAP device made beforehand (as
// rootlesskit makes one for slirp4netns), carries TCP both ways through
// it with ARP, and leaves the device in place on Close.
func TestOpenTAP(t *testing.T) {
	t.Run("offload", func(t *testing.T) { testOpenTAP(t, true) })
	t.Run("offload refused", func(t *testing.T) {
		saved := setOffload
		setOffload = func(int) error { return unix.EINVAL }
		t.Cleanup(func() { setOffload = saved })
		testOpenTAP(t, false)
	})
}

func testOpenTAP(t *testing.T, offload bool) {
	ns := netnstest.New(t)
	h := ns.Handle()
	la := netlink.NewLinkAttrs()
	la.Name = "tap7"
	// On a thread in the namespace: netlink makes TUN/TAP devices through
	// /dev/net/tun, in the namespace of the calling thread.
	if err := ns.Do(func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: la, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI})
	}); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName("tap7")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(kernel4.String())
	if err := h.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMTU(link, 9000); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}

	d, err := OpenTAP("tap7", 0, ns.File())
	if err != nil {
		t.Fatal(err)
	}
	if !d.TAP() || d.Offload() != offload || d.MTU() != 9000 {
		t.Errorf("TAP() %v Offload() %v MTU() %d, want true, %v, 9000", d.TAP(), d.Offload(), d.MTU(), offload)
	}
	if got := d.LinkEndpoint().ARPHardwareType(); got != header.ARPHardwareEther {
		t.Errorf("ARPHardwareType %v, want Ethernet", got)
	}
	s := gvstack.New(gvstack.Options{
		NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	if err := s.CreateNIC(nicID, d.LinkEndpoint()); err != nil {
		t.Fatal(err)
	}
	s.AddProtocolAddress(nicID, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: addr4(stack4.Addr()), PrefixLen: stack4.Bits()}}, gvstack.AddressProperties{})
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	echoExchange(t, ns, s, 1<<20)

	// Checksums: a UDP datagram with a bad checksum, sent as a raw frame
	// from the kernel's side (no virtio flags vouch for it), is dropped,
	// and a good one gets through.
	laddr := fullAddr(netip.AddrPortFrom(stack4.Addr(), 9000))
	pc, err := gonet.DialUDP(s, &laddr, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	frame := func(payload []byte, corrupt bool) []byte {
		udpN := uint8(header.UDPProtocolNumber)
		u := l4Ports(udpN, netip.AddrPortFrom(kernel4.Addr(), 5555), netip.AddrPortFrom(stack4.Addr(), 9000), payload)
		if corrupt {
			u[len(u)-1] ^= 1
		}
		eth := make([]byte, header.EthernetMinimumSize)
		header.Ethernet(eth).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(link.Attrs().HardwareAddr),
			DstAddr: d.LinkEndpoint().LinkAddress(), Type: ipv4.ProtocolNumber})
		return append(eth, ip4From(kernel4.Addr(), stack4.Addr(), udpN, u, 0)...)
	}
	inject := func(f []byte) {
		t.Helper()
		if err := ns.Do(func() error {
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: link.Attrs().Index})
		}); err != nil {
			t.Fatalf("packet socket: %v", err)
		}
	}
	inject(frame([]byte("corrupt"), true))
	inject(frame([]byte("intact"), false))
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "intact" {
		t.Fatalf("after a bad and a good datagram: read %q %v, want the good one", buf[:n], err)
	}
	dropped := d.Stats().ChecksumErrors + s.Stats().UDP.ChecksumErrors.Value()
	if dropped != 1 {
		t.Errorf("checksum errors counted: device %d + gVisor %d, want 1 in all", d.Stats().ChecksumErrors, s.Stats().UDP.ChecksumErrors.Value())
	}
	if offload && d.Stats().ChecksumErrors != 1 {
		t.Errorf("offload path: the reader counted %d checksum errors, want 1", d.Stats().ChecksumErrors)
	}
	pc.Close()
	s.Destroy()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// An explicit MTU wins over the device's.
	d2, err := OpenTAP("tap7", 65520, ns.File())
	if err != nil {
		t.Fatal(err)
	}
	if d2.MTU() != 65520 {
		t.Errorf("OpenTAP with MTU 65520: MTU() %d", d2.MTU())
	}
	d2.Close()
	if _, err := h.LinkByName("tap7"); err != nil {
		t.Errorf("the persistent TAP device is gone after Close: %v", err)
	}

	// Errors: no such device; not a TAP device.
	if _, err := OpenTAP("nosuch0", 0, ns.File()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenTAP(nosuch0): %v, want os.ErrNotExist", err)
	}
	tunDev := openIn(t, ns, Config{Name: "tun9"})
	if _, err := OpenTAP(tunDev.Name(), 0, ns.File()); err == nil || !strings.Contains(err.Error(), "not a TAP device") {
		t.Errorf("OpenTAP on a TUN device: %v, want 'not a TAP device'", err)
	}
}

func addr4(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }
