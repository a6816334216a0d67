//go:build linux

package tcprelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/rawsys"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests' network, as the sandbox lays it out: the guest is
// 10.0.2.100 and fd00::100, and the gateway's addresses 10.0.2.2 and
// fd00::2 stand for the host's loopback.
var (
	guestNet4 = netip.MustParsePrefix("10.0.2.0/24")
	guestNet6 = netip.MustParsePrefix("fd00::/64")
	guest4    = netip.MustParsePrefix("10.0.2.100/24")
	guest6    = netip.MustParsePrefix("fd00::100/64")
	gateway4  = netip.MustParsePrefix("10.0.2.2/24")
	gateway6  = netip.MustParsePrefix("fd00::2/64")
)

// errNotHost is fakeGateway's refusal of a destination other than the
// gateway's addresses.
var errNotHost = errors.New("not the gateway's address")

// fakeGateway is the relay's owner in the tests: it admits flows from the
// guest's networks to the gateway's addresses, which it maps to the
// host's loopback, opens host sockets as the sandbox's default dialer
// does (or with dial, with Config.SocketBlocks), tracks the goroutines it
// starts, and caps flows at maxFlows.
type fakeGateway struct {
	maxFlows int64
	dial     func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) // nil: rawsys.ConnectTCP
	live     atomic.Int64
	refused  atomic.Uint64 // TakeFlow's refusals

	testnet.Group // the goroutines it starts (Go)
}

var _ Gateway = (*fakeGateway)(nil)

func (g *fakeGateway) Admit(src, dst netip.AddrPort) (netip.AddrPort, error) {
	s := src.Addr()
	if s == gateway4.Addr() || s == gateway6.Addr() || !guestNet4.Contains(s) && !guestNet6.Contains(s) {
		return netip.AddrPort{}, fmt.Errorf("from %v: %w", s, ErrSource)
	}
	switch dst.Addr() {
	case gateway4.Addr():
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port()), nil
	case gateway6.Addr():
		return netip.AddrPortFrom(netip.IPv6Loopback(), dst.Port()), nil
	}
	return netip.AddrPort{}, errNotHost
}

func (g *fakeGateway) Socket(ctx context.Context, addr netip.AddrPort) (int, bool, error) {
	if g.dial == nil {
		return rawsys.ConnectTCP(addr, netip.Addr{})
	}
	c, err := g.dial(ctx, addr)
	if err != nil {
		return -1, false, err
	}
	defer c.Close()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return -1, false, err
	}
	fd := -1
	if cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		return -1, false, cerr
	}
	if err != nil {
		return -1, false, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, false, err
	}
	return fd, true, nil
}

func (g *fakeGateway) TakeFlow() bool {
	if g.live.Add(1) > g.maxFlows {
		g.live.Add(-1)
		g.refused.Add(1)
		return false
	}
	return true
}

func (g *fakeGateway) DropFlow() { g.live.Add(-1) }

// close refuses new goroutines and waits for those started.
func (g *fakeGateway) close() { g.Group.Close() }

// world is a relay over a link, with its owner and a gVisor stack of the
// gateway's attached to it (which gets what the relay declines), and a
// guest stack on the link's other end when the link is a pipe.
type world struct {
	r     *Relay
	gw    *fakeGateway
	st    *stack.Stack // the gateway's
	guest *stack.Stack
	once  sync.Once
	stop  []func() // run by close, in order, after the relay's and the gateway stack's
}

// worldStats are the counters a sandbox gateway reports for the relay.
type worldStats struct {
	TCPFlows, Denied, Refused uint64
	Live                      int64
}

func (w *world) stats() worldStats {
	rs := w.r.Stats()
	return worldStats{TCPFlows: rs.Flows, Denied: rs.Denied, Refused: rs.Refused + w.gw.refused.Load(), Live: w.gw.live.Load()}
}

// close ends the world as a gateway's Close does: the relay, the stack,
// then the goroutines. It is idempotent.
func (w *world) close() {
	w.once.Do(func() {
		if w.guest != nil {
			w.guest.Close()
		}
		w.r.Close()
		w.st.Close()
		w.gw.close()
		for _, f := range w.stop {
			f()
		}
	})
}

// newGatewaySide makes the relay over link, with mod applied to its
// Config and owner first, and the gateway's stack over the relay; the
// test's cleanup closes them, then runs stop.
func newGatewaySide(t testing.TB, link gvstack.LinkEndpoint, mod func(*Config, *fakeGateway), stop func()) *world {
	t.Helper()
	gw := &fakeGateway{maxFlows: 8192}
	var cfg Config
	if mod != nil {
		mod(&cfg, gw)
	}
	r, err := New(link, gw, cfg)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	st, err := stack.New(stack.Config{Link: r, Promiscuous: true, Addrs: []netip.Prefix{gateway4, gateway6}, Logger: cfg.Logger})
	if err != nil {
		r.Close()
		stop()
		t.Fatal(err)
	}
	r.Start()
	w := &world{r: r, gw: gw, st: st, stop: []func(){stop}}
	t.Cleanup(w.close)
	return w
}

// newWorldLink is a relay with a guest stack on the other end of a pipe
// of the given MTU (0: the default), with wrap (if not nil) around the
// relay's end.
func newWorldLink(t testing.TB, mtu int, wrap func(gvstack.LinkEndpoint) gvstack.LinkEndpoint, mod func(*Config, *fakeGateway)) *world {
	t.Helper()
	p, err := tun.NewPipe(mtu)
	if err != nil {
		t.Fatal(err)
	}
	link := p.A()
	if wrap != nil {
		link = wrap(link)
	}
	w := newGatewaySide(t, link, mod, func() { p.Close() })
	guest, err := stack.New(stack.Config{Link: p.B(), Addrs: []netip.Prefix{guest4, guest6}})
	if err != nil {
		t.Fatal(err)
	}
	w.guest = guest
	return w
}

// hostListen listens on host loopback and returns the listener and the
// address the guest dials for it.
func hostListen(t testing.TB, network string) (net.Listener, string) {
	t.Helper()
	l, err := net.Listen(network, map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network])
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	t.Cleanup(func() { l.Close() })
	gw := "10.0.2.2"
	if network == "tcp6" {
		gw = "[fd00::2]"
	}
	return l, fmt.Sprintf("%s:%d", gw, l.Addr().(*net.TCPAddr).Port)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
