package wg

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/wgtun"
	"github.com/ustacknet/ustack/wgtun/wgtest"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

var (
	kernel4 = netip.MustParsePrefix("198.18.40.1/24")
	sideA4  = netip.MustParsePrefix("198.18.40.2/24")
	kernel6 = netip.MustParsePrefix("fd00:40::1/64")
	sideA6  = netip.MustParsePrefix("fd00:40::2/64")
)

const mtu = 1420

// Kernel services behind side B.
const (
	sinkPort   = 9  // discards what it reads
	sourcePort = 19 // writes until the client closes
	echoPort   = 7  // echoes one byte, then closes first
	waitPort   = 8  // echoes one byte, then waits for the client to close
)

// sideA is the user-space end of the tunnel under test.
type sideA struct {
	dev  tun.Device
	dial func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
}

// opts shape side A for a scenario.
type opts struct {
	// small confines TCP to the 64-port range 40000-40063 instead of the
	// stack's default.
	small bool
	// reuse lets a dial take a port held by a connection in TIME_WAIT:
	// ustack's Config.TimeWaitReuse, gVisor's TCPTimeWaitReuseGlobal
	// (whose default, loopback only, never applies through a tunnel).
	reuse bool
}

// impl builds a side A.
type impl struct {
	name string
	new  func(b *testing.B, o opts) sideA
}

var impls = []impl{
	{"ustack", newUstack},
	{"netstack", newNetstack},
}

func newUstack(b *testing.B, o opts) sideA {
	cfg := stack.Config{Addrs: []netip.Prefix{sideA4, sideA6}, TimeWaitReuse: o.reuse}
	if o.small {
		cfg.Ports.TCP.Range = portalloc.Range{First: 40000, Last: 40063}
	}
	d, err := wgtun.New(wgtun.Config{Stack: cfg, MTU: mtu})
	if err != nil {
		b.Fatal(err)
	}
	st := d.Stack()
	return sideA{
		dev: d,
		dial: func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			return st.DialTCPAddrPort(ctx, netip.AddrPort{}, dst)
		},
	}
}

func newNetstack(b *testing.B, o opts) sideA {
	dev, tnet, err := netstack.CreateNetTUN([]netip.Addr{sideA4.Addr(), sideA6.Addr()}, nil, mtu)
	if err != nil {
		b.Fatal(err)
	}
	gs := netstackStack(tnet)
	if o.small {
		if err := gs.SetPortRange(40000, 40063); err != nil {
			b.Fatalf("netstack SetPortRange: %v", err)
		}
	}
	if o.reuse {
		opt := tcpip.TCPTimeWaitReuseGlobal
		if err := gs.SetTransportProtocolOption(tcp.ProtocolNumber, &opt); err != nil {
			b.Fatalf("netstack TIME_WAIT reuse: %v", err)
		}
	}
	return sideA{
		dev: &safeClose{Device: dev, gs: gs},
		dial: func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			return tnet.DialContextTCPAddrPort(ctx, dst)
		},
	}
}

// safeClose works around a race in tun/netstack's Close: it closes the
// channel its WriteNotify sends on while the stack may still send (a reset
// from a TCP processor, or one sent inline while wireguard-go's receiver
// is delivering a packet through Write), which panics with "send on
// closed channel". Close first stops Write and waits for the deliveries
// under way, then stops the stack and waits for its goroutines, so that
// nothing is left to send when netstack closes the channel.
type safeClose struct {
	tun.Device
	gs *gvstack.Stack

	mu     sync.RWMutex // held for reading by Write while it delivers
	closed bool         // guarded by mu
}

func (d *safeClose) Write(bufs [][]byte, offset int) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, os.ErrClosed
	}
	return d.Device.Write(bufs, offset)
}

func (d *safeClose) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.gs.Close()
	d.gs.Wait()
	return d.Device.Close()
}

// netstackStack digs the gVisor stack out of a netstack.Net, which does
// not export it, to set its port range and TIME_WAIT reuse.
func netstackStack(n *netstack.Net) *gvstack.Stack {
	f := reflect.ValueOf(n).Elem().FieldByName("stack")
	return (*gvstack.Stack)(unsafe.Pointer(f.Pointer()))
}

// fixedMTU reports a fixed MTU for a wireguard-go TUN device, whose own
// MTU lookup runs by name in the host namespace, not the device's.
type fixedMTU struct {
	tun.Device
	mtu int
}

func (d fixedMTU) MTU() (int, error) { return d.mtu, nil }

// newTunnel brings up a tunnel between a (side A) and the kernel behind a
// real TUN in a fresh namespace (side B) serving the kernel services,
// all torn down when b's run ends.
func newTunnel(b *testing.B, a sideA) {
	ns := netnstest.New(b)
	var kdev tun.Device
	if err := ns.Do(func() error {
		for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
			if err := os.WriteFile(f, []byte("0"), 0); err != nil {
				return err
			}
		}
		var err error
		kdev, err = tun.CreateTUN("wgb%d", mtu)
		return err
	}); err != nil {
		a.dev.Close()
		b.Fatalf("side B's TUN: %v", err)
	}
	if err := configure(ns, kdev); err != nil {
		a.dev.Close()
		kdev.Close()
		b.Fatalf("side B's TUN: %v", err)
	}
	tn, err := wgtest.New(wgtest.Side{TUN: a.dev, Addrs: []netip.Prefix{sideA4, sideA6}},
		wgtest.Side{TUN: fixedMTU{kdev, mtu}, Addrs: []netip.Prefix{kernel4, kernel6}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(tn.Close)
	serve(b, ns, sinkPort, func(c net.Conn) { io.Copy(io.Discard, c) })
	serve(b, ns, sourcePort, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	serve(b, ns, waitPort, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		one := make([]byte, 1)
		if _, err := io.ReadFull(c, one); err == nil {
			c.Write(one)
			io.Copy(io.Discard, c)
		}
	})
	serve(b, ns, echoPort, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		one := make([]byte, 1)
		if _, err := io.ReadFull(c, one); err == nil {
			c.Write(one)
		}
	})
}

func configure(ns *netns.NS, kdev tun.Device) error {
	name, err := kdev.Name()
	if err != nil {
		return err
	}
	h := ns.Handle()
	link, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	for _, p := range []netip.Prefix{kernel4, kernel6} {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if err := h.AddrAdd(link, addr); err != nil {
			return err
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return err
	}
	if err := netnstest.AwaitAddr(ns, 5*time.Second, netnstest.Settled(link.Attrs().Index, kernel6.Addr())); err != nil {
		return fmt.Errorf("kernel address %v: %w", kernel6.Addr(), err)
	}
	return nil
}

// serve runs handle on each connection to the kernel's port until the
// run ends, then closes the listener and the open connections and waits.
func serve(b *testing.B, ns *netns.NS, port int, handle func(net.Conn)) {
	l, err := ns.Listen("tcp", net.JoinHostPort("", strconv.Itoa(port)))
	if err != nil {
		b.Fatal(err)
	}
	testnet.Serve(b, l, handle)
}
