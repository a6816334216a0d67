package integration

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Inside a sandbox, the test binary plays the guest's part.
	if role := os.Getenv("USTACK_GUEST_ROLE"); role != "" {
		os.Exit(guestMain(role, os.Args[len(os.Args)-1]))
	}
	goleak.VerifyTestMain(m)
}

var (
	kernel4 = netip.MustParsePrefix("198.18.0.1/24")
	stack4  = netip.MustParsePrefix("198.18.0.2/24")
	kernel6 = netip.MustParsePrefix("fd00:18::1/64")
	stack6  = netip.MustParsePrefix("fd00:18::2/64")
)

// env is a stack over a TUN whose kernel side is in a private namespace.
type env struct {
	ns  *netns.NS
	dev *tun.Device
	st  *stack.Stack
}

// newEnv builds an env for the test; everything is torn down at its end.
// mtu 0 means 1500.
func newEnv(t *testing.T, cfg stack.Config, mtu int) *env {
	t.Helper()
	ns := netnstest.New(t)
	// IPv6 addresses must be usable at once, without duplicate address
	// detection.
	if err := ns.Do(func() error {
		for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
			if err := os.WriteFile(f, []byte("0"), 0); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("disabling DAD: %v", err)
	}
	dev, err := tun.Open(tun.Config{Name: "ust%d", MTU: mtu, NetNS: ns.File(), Addrs: []netip.Prefix{kernel4, kernel6}, Up: true})
	if err != nil {
		t.Fatalf("tun.Open: %v", err)
	}
	t.Cleanup(func() { dev.Close() })
	cfg.Link = dev.LinkEndpoint()
	cfg.Addrs = []netip.Prefix{stack4, stack6}
	st, err := stack.New(cfg)
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{ns: ns, dev: dev, st: st}
	e.waitIPv6(t)
	return e
}

// waitIPv6 waits (bounded), from the namespace's address events, until
// the kernel's IPv6 address is no longer tentative.
func (e *env) waitIPv6(t *testing.T) {
	t.Helper()
	link, err := e.ns.Handle().LinkByName(e.dev.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := netnstest.AwaitAddr(e.ns, 5*time.Second, netnstest.Settled(link.Attrs().Index, kernel6.Addr())); err != nil {
		t.Fatalf("kernel address %s: %v", kernel6, err)
	}
}

// kernelListen listens in the kernel of the env's namespace.
func (e *env) kernelListen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	return listenIn(t, e.ns, network, addr)
}

func (e *env) kernelListenPacket(t *testing.T, network, addr string) net.PacketConn {
	t.Helper()
	return listenPacketIn(t, e.ns, network, addr)
}

// listenIn listens in the kernel of ns until the test ends.
func listenIn(t *testing.T, ns *netns.NS, network, addr string) net.Listener {
	t.Helper()
	l, err := ns.Listen(network, addr)
	if err != nil {
		t.Fatalf("kernel listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// listenPacketIn opens a packet socket in the kernel of ns until the test
// ends.
func listenPacketIn(t *testing.T, ns *netns.NS, network, addr string) net.PacketConn {
	t.Helper()
	pc, err := ns.ListenPacket(network, addr)
	if err != nil {
		t.Fatalf("kernel listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}
