//go:build linux

package udprelay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/ustacknet/ustack/internal/rawsys"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests' network, as the sandbox lays it out: the guest is
// 10.0.2.100, the gateway's address 10.0.2.2 stands for the host's
// loopback, and 10.0.2.3 port 53 for the DNS upstream.
var (
	guest4   = netip.MustParsePrefix("10.0.2.100/24")
	gateway4 = netip.MustParsePrefix("10.0.2.2/24")
	dns4     = netip.MustParsePrefix("10.0.2.3/24")
)

// fakeGateway is the relay's owner in the tests: it opens host sockets as
// the sandbox's default dialer does (or with dial, with
// Config.SocketBlocks), tracks the goroutines it starts, and caps flows
// at maxFlows.
type fakeGateway struct {
	maxFlows int64
	dial     func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) // nil: rawsys.ConnectUDP
	live     atomic.Int64
	refused  atomic.Uint64 // takeFlow's refusals

	testnet.Group // the goroutines it starts (Go)
}

var _ Gateway = (*fakeGateway)(nil)

func (g *fakeGateway) Socket(ctx context.Context, addr netip.AddrPort) (int, error) {
	if g.dial == nil {
		return rawsys.ConnectUDP(addr, netip.Addr{})
	}
	c, err := g.dial(ctx, addr)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a syscall.Conn")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (g *fakeGateway) takeFlow() bool {
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

// world is a relay with its owner, the gateway's gVisor stack whose UDP
// forwarder hands the relay the guest's flows, and a guest stack on the
// other end of a pipe.
type world struct {
	r     *Relay
	gw    *fakeGateway
	st    *stack.Stack // the gateway's
	guest *stack.Stack
	once  sync.Once
	pipe  *tun.Pipe
}

// newWorld makes a world whose flows to 10.0.2.2 go to the host's
// loopback and to 10.0.2.3:53 to dns (a DNS flow), with mod applied to
// the relay's Config and owner first. The test's cleanup closes it.
func newWorld(t testing.TB, dns netip.AddrPort, mod func(*Config, *fakeGateway)) *world {
	t.Helper()
	gw := &fakeGateway{maxFlows: 8192}
	var cfg Config
	if mod != nil {
		mod(&cfg, gw)
	}
	r, err := New(gw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tun.NewPipe(0)
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	w := &world{r: r, gw: gw, pipe: p}
	w.st, err = stack.New(stack.Config{Link: p.A(), Promiscuous: true, Addrs: []netip.Prefix{gateway4, dns4}})
	if err != nil {
		r.Close()
		p.Close()
		t.Fatal(err)
	}
	w.guest, err = stack.New(stack.Config{Link: p.B(), Addrs: []netip.Prefix{guest4}})
	if err != nil {
		r.Close()
		w.st.Close()
		p.Close()
		t.Fatal(err)
	}
	r.Start()
	s := w.st.GVisor()
	uf := udp.NewForwarder(s, func(req *udp.ForwarderRequest) bool {
		id := req.ID()
		dst := netip.AddrPortFrom(netip.AddrFrom4(id.LocalAddress.As4()), id.LocalPort)
		var to netip.AddrPort
		isDNS := false
		switch {
		case dst.Addr() == gateway4.Addr():
			to = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port())
		case dst == netip.AddrPortFrom(dns4.Addr(), 53):
			to, isDNS = dns, true
		default:
			return false
		}
		if !gw.takeFlow() {
			return false
		}
		wq := new(waiter.Queue)
		ep, terr := req.CreateEndpoint(wq)
		if terr != nil {
			gw.DropFlow()
			return true
		}
		r.Add(ep, wq, to, isDNS)
		return true
	})
	s.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	t.Cleanup(w.close)
	return w
}

// worldStats are the counters a sandbox gateway reports for the relay.
type worldStats struct {
	UDPFlows, DNSQueries, Refused uint64
	Live                          int64
}

func (w *world) stats() worldStats {
	rs := w.r.Stats()
	return worldStats{UDPFlows: rs.Flows, DNSQueries: rs.DNS, Refused: rs.Refused + w.gw.refused.Load(), Live: w.gw.live.Load()}
}

// close ends the world as a gateway's Close does: the relay, the stacks,
// then the goroutines. It is idempotent.
func (w *world) close() {
	w.once.Do(func() {
		w.guest.Close()
		w.r.Close()
		w.st.Close()
		w.gw.close()
		w.pipe.Close()
	})
}
