package tun

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TestOffloadRefused makes TUNSETOFFLOAD fail: Open must fall back to a
// device without offloads that still carries traffic both ways.
func TestOffloadRefused(t *testing.T) {
	saved := setOffload
	setOffload = func(int) error { return unix.EINVAL }
	t.Cleanup(func() { setOffload = saved })

	ns := netnstest.New(t)
	d := openIn(t, ns, Config{MultiQueue: true, Queues: 2, Addrs: []netip.Prefix{kernel4}, Up: true})
	if d.Offload() {
		t.Fatal("Offload() = true after the kernel refused TUNSETOFFLOAD")
	}
	if names := linkNames(t, ns); len(names) != 2 { // lo and the device
		t.Errorf("links after the fallback: %v, want lo and one device", names)
	}
	s := newStack(t, d.LinkEndpoint(), stack4)
	echoExchange(t, ns, s, 1<<20)
}

// TestFromFDOffload hands a device's descriptor to FromFD, as the sandbox
// does: the new Device must find out from the descriptor whether it
// carries virtio headers, and carry traffic either way.
func TestFromFDOffload(t *testing.T) {
	for _, noOffload := range []bool{false, true} {
		t.Run(map[bool]string{false: "offload", true: "no offload"}[noOffload], func(t *testing.T) {
			ns := netnstest.New(t)
			orig := openIn(t, ns, Config{NoOffload: noOffload, Addrs: []netip.Prefix{kernel4}, Up: true})
			f, err := orig.DupFile()
			if err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Dup(int(f.Fd()))
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			d, err := FromFD(fd, orig.Name(), orig.MTU())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			if got, want := d.Offload(), !noOffload; got != want {
				t.Errorf("Offload() = %v, want %v", got, want)
			}
			s := newStack(t, d.LinkEndpoint(), stack4)
			echoExchange(t, ns, s, 1<<20)
		})
	}
}

// TestInboundChecksums runs the reader's checksum handling on a real
// device: a datagram the kernel sends whole (partial checksum, trusted),
// one it fragments (complete checksums, verified by the reader at the IP
// header), and datagrams written raw with a packet socket (no flags: the
// reader verifies them) with a wrong and then a right checksum. The wrong
// one must be dropped and counted; the others arrive intact, in order.
func TestInboundChecksums(t *testing.T) {
	ns := netnstest.New(t)
	d := openIn(t, ns, Config{MTU: 1500, Addrs: []netip.Prefix{kernel4}, Up: true})
	if !d.Offload() {
		t.Fatal("the device has no offloads; this test is about the offload path")
	}
	s := newStack(t, d.LinkEndpoint(), stack4)
	laddr := fullAddr(netip.AddrPortFrom(stack4.Addr(), 9000))
	pc, err := gonet.DialUDP(s, &laddr, nil, protoOf(stack4.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	c, err := ns.Dial("udp", netip.AddrPortFrom(stack4.Addr(), 9000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	small := bytes.Repeat([]byte("s"), 100)
	big := make([]byte, 4000) // three fragments at MTU 1500
	rand.Read(big)
	raw := func(payload []byte, corrupt bool) []byte {
		udpN := uint8(header.UDPProtocolNumber)
		u := l4Ports(udpN, netip.AddrPortFrom(kernel4.Addr(), 5555), netip.AddrPortFrom(stack4.Addr(), 9000), payload)
		if corrupt {
			u[len(u)-1] ^= 1
		}
		return ip4From(kernel4.Addr(), stack4.Addr(), udpN, u, 0)
	}
	link, err := ns.Handle().LinkByName(d.Name())
	if err != nil {
		t.Fatal(err)
	}
	inject := func(p []byte) {
		t.Helper()
		err := ns.Do(func() error {
			const proto = unix.ETH_P_IP<<8&0xff00 | unix.ETH_P_IP>>8 // network byte order
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Sendto(fd, p, 0, &unix.SockaddrLinklayer{Ifindex: link.Attrs().Index, Protocol: proto})
		})
		if err != nil {
			t.Fatalf("packet socket: %v", err)
		}
	}

	if _, err := c.Write(small); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	inject(raw([]byte("corrupt"), true))
	inject(raw([]byte("intact"), false))

	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 8192)
	for _, want := range [][]byte{small, big, []byte("intact")} {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("waiting for a %d-byte datagram: %v", len(want), err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("got a %d-byte datagram %.16q, want %d bytes %.16q", n, buf[:n], len(want), want)
		}
	}
	if got := d.Stats().ChecksumErrors; got != 1 {
		t.Errorf("Stats().ChecksumErrors = %d, want 1", got)
	}
	if got := s.Stats().UDP.ChecksumErrors.Value(); got != 0 {
		t.Errorf("gVisor counted %d UDP checksum errors; the reader should have dropped the bad datagram first", got)
	}
}

// TestReaderSurvivesBlockingFlag turns O_NONBLOCK off on the device's
// shared status flags through a DupFile duplicate, as a program it is
// handed to may well do: traffic must still flow, and Close must still
// stop the reader (a blocking read could not be woken).
func TestReaderSurvivesBlockingFlag(t *testing.T) {
	ns := netnstest.New(t)
	// No IPv6 on the kernel side: its router solicitations would wake a
	// blocked reader by chance.
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	d := openIn(t, ns, Config{Addrs: []netip.Prefix{kernel4}, Up: true})
	if !d.Offload() {
		t.Fatal("the device has no offloads; this test is about the offload path")
	}
	s := newStack(t, d.LinkEndpoint(), stack4)
	f, err := d.DupFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		t.Fatal(err)
	}
	if nb, _ := unix.FcntlInt(uintptr(d.fds[0]), unix.F_GETFL, 0); nb&unix.O_NONBLOCK != 0 {
		t.Fatal("O_NONBLOCK still set; the test would prove nothing")
	}
	echoExchange(t, ns, s, 1<<20)
	// Wait for the connection's last packets to go by, so that none wakes
	// a reader that would be blocked.
	waitTCPQuiet(t, ns, s)
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung: the reader could not be stopped") // and leaks the reader
	}
}

// waitTCPQuiet waits (bounded) until every TCP connection between the
// kernel in ns and s has ended on both sides: each side's end of it is
// gone or in TIME_WAIT, so neither has a FIN or an ACK still to send
// unprompted, and no packet of theirs is still on its way.
func waitTCPQuiet(t *testing.T, ns *netns.NS, s *gvstack.Stack) {
	t.Helper()
	testnet.WaitFor(t, 10*time.Second, "the TCP connections to end on both sides", func() error {
		// sock_diag from a thread in ns: ns.Handle() has only a route
		// socket there, and would ask the host's namespace instead.
		var socks []*netlink.Socket
		if err := ns.Do(func() (err error) { socks, err = netlink.SocketDiagTCP(unix.AF_INET); return err }); err != nil {
			return fmt.Errorf("kernel sockets: %v", err)
		}
		for _, k := range socks {
			if k.ID.Destination.Equal(stack4.Addr().AsSlice()) && k.State != netlink.TCP_TIME_WAIT {
				return fmt.Errorf("kernel socket %v:%d -> %v:%d in state %d", k.ID.Source, k.ID.SourcePort, k.ID.Destination, k.ID.DestinationPort, k.State)
			}
		}
		for _, te := range append(s.RegisteredEndpoints(), s.CleanupEndpoints()...) {
			ep, ok := te.(*tcp.Endpoint)
			if !ok {
				continue
			}
			switch st := tcp.EndpointState(ep.State()); st {
			case tcp.StateTimeWait, tcp.StateClose, tcp.StateError:
			default:
				return fmt.Errorf("gVisor endpoint in state %v", st)
			}
		}
		return nil
	})
}

// echoExchange runs a kernel echo server in ns, dials it from s through
// the device and checks n bytes both ways; the server and the connection
// are closed when it returns.
func echoExchange(t *testing.T, ns *netns.NS, s *gvstack.Stack, n int) {
	t.Helper()
	l, err := ns.Listen("tcp", netip.AddrPortFrom(kernel4.Addr(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	stop := echo(t, l)
	defer stop()
	c := dialTCP(t, s, netip.MustParseAddrPort(l.Addr().String()))
	defer c.Close()
	exchange(t, c, n)
}
