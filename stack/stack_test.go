package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"go.uber.org/goleak"
	"golang.org/x/net/nettest"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newLoopback returns a loopback-only stack with the given TCP and UDP
// ranges, closed at the end of the test.
func newLoopback(t *testing.T, tcpRange, udpRange string, mod ...func(*Config)) *Stack {
	t.Helper()
	cfg := Config{}
	if tcpRange != "" {
		cfg.Ports.TCP.Range = mustRange(t, tcpRange)
	}
	if udpRange != "" {
		cfg.Ports.UDP.Range = mustRange(t, udpRange)
	}
	for _, f := range mod {
		f(&cfg)
	}
	st, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func mustRange(t *testing.T, s string) portalloc.Range {
	r, err := portalloc.ParseRange(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// serveTCP accepts connections on l and hands each to fn in a goroutine
// until l closes. It returns a function that waits for them all.
func serveTCP(t *testing.T, l net.Listener, fn func(net.Conn)) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go fn(c)
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
}

func inUse(st *Stack, p portalloc.Protocol) int {
	return st.Allocator().Pool(p).InUse()
}

// waitInUse waits (bounded) for the pool's count of held ports to reach
// want, since TCP ports come back asynchronously.
func waitInUse(t *testing.T, st *Stack, p portalloc.Protocol, want int) {
	t.Helper()
	testnet.WaitFor(t, 5*time.Second, fmt.Sprintf("%d %v ports in use", want, p), func() error {
		if n := inUse(st, p); n != want {
			return fmt.Errorf("%d in use; snapshot %+v", n, st.Allocator().Pool(p).Snapshot())
		}
		return nil
	})
}

// waitTimeWait waits (bounded) until every one of eps, closed, has
// reached TIME_WAIT: gVisor moves an endpoint there when it processes the
// peer's FIN, which gives no event of its own.
func waitTimeWait(t *testing.T, eps []tcpip.Endpoint) {
	t.Helper()
	testnet.WaitFor(t, 5*time.Second, fmt.Sprintf("%d closed endpoints in TIME_WAIT", len(eps)), func() error {
		var states []string
		for _, ep := range eps {
			states = append(states, tcp.EndpointState(ep.State()).String())
		}
		for _, ep := range eps {
			if tcp.EndpointState(ep.State()) != tcp.StateTimeWait {
				return fmt.Errorf("endpoint states %v", states)
			}
		}
		return nil
	})
}

// waitReading waits (bounded) until a reader or acceptor is blocked on
// wq: Read and Accept register for readable events before they block.
func waitReading(t *testing.T, what string, wq *waiter.Queue) {
	t.Helper()
	testnet.WaitFor(t, 5*time.Second, what+" to block", func() error {
		if ev := wq.Events(); ev&waiter.ReadableEvents == 0 {
			return fmt.Errorf("waiters registered for %#x, none for reading", ev)
		}
		return nil
	})
}

func TestDialSequentialPortsWrap(t *testing.T) {
	st := newLoopback(t, "40000-40009", "")
	l, err := st.Listen("tcp4", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	// The server closes first, so the client's side never enters
	// TIME_WAIT and its port returns as soon as its close completes.
	serveTCP(t, l, func(c net.Conn) { c.Close() })
	var got []uint16
	for i := 0; i < 25; i++ {
		c, err := st.DialContext(context.Background(), "tcp", "127.0.0.1:80")
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		got = append(got, c.(*TCPConn).LocalAddrPort().Port())
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read: %v, want EOF", err)
		}
		c.Close()
		waitInUse(t, st, portalloc.TCP, 0) // port 80 lies outside the range
	}
	var want []uint16
	for i := 0; i < 25; i++ {
		want = append(want, uint16(40000+i%10))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("source ports (-want +got):\n%s", diff)
	}
}

func TestExhaustionAndRecovery(t *testing.T) {
	st := newLoopback(t, "41000-41007", "")
	l, err := st.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	serveTCP(t, l, func(c net.Conn) { io.Copy(io.Discard, c); c.Close() })
	var conns []net.Conn
	for i := 0; i < 8; i++ {
		c, err := st.Dial("tcp", "127.0.0.1:80")
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	start := time.Now()
	_, err = st.Dial("tcp", "127.0.0.1:80")
	if !errors.Is(err, syscall.EADDRNOTAVAIL) || !errors.Is(err, portalloc.ErrExhausted) {
		t.Fatalf("9th dial: %v; want EADDRNOTAVAIL and ErrExhausted", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Fatalf("9th dial error %T %v is not a dial *net.OpError", err, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("exhaustion took %v", d)
	}
	// Close the conn on 41003 from our side: the server then closes, so
	// ours passes through FIN_WAIT to TIME_WAIT... avoid that: abort it.
	victim := conns[3].(*TCPConn)
	victim.SetLinger(0)
	victim.Close()
	waitInUse(t, st, portalloc.TCP, 7)
	c, err := st.Dial("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatalf("dial after release: %v", err)
	}
	if got := c.(*TCPConn).LocalAddrPort().Port(); got != 41003 {
		t.Fatalf("dial after release got port %d, want 41003", got)
	}
	conns[3] = c
	for _, c := range conns {
		c.(*TCPConn).SetLinger(0)
		c.Close()
	}
	waitInUse(t, st, portalloc.TCP, 0)
}

func TestTimeWaitHoldsPortAndReuse(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "no-reuse", true: "reuse"}[reuse], func(t *testing.T) {
			st := newLoopback(t, "42000-42001", "", func(c *Config) { c.TimeWaitReuse = reuse })
			l, err := st.Listen("tcp", "127.0.0.1:80")
			if err != nil {
				t.Fatal(err)
			}
			serveTCP(t, l, func(c net.Conn) { io.Copy(c, c); c.Close() })
			// Close from our side first: both ports go to TIME_WAIT.
			var eps []tcpip.Endpoint
			for i := 0; i < 2; i++ {
				c, err := st.Dial("tcp", "127.0.0.1:80")
				if err != nil {
					t.Fatal(err)
				}
				eps = append(eps, c.(*TCPConn).ep)
				c.(*TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
			}
			waitTimeWait(t, eps)
			// Sweep now, as the reaper's ticker would: an endpoint in
			// TIME_WAIT must keep its port.
			if n := st.reap.sweep(); n != 0 {
				t.Fatalf("sweep released %d ports of conns in TIME_WAIT, want 0", n)
			}
			if n := inUse(st, portalloc.TCP); n != 2 {
				t.Fatalf("ports in use with both conns in TIME_WAIT = %d, want 2", n)
			}
			c, err := st.Dial("tcp", "127.0.0.1:80")
			if !reuse {
				if !errors.Is(err, syscall.EADDRNOTAVAIL) {
					t.Fatalf("dial with every port in TIME_WAIT: %v, want EADDRNOTAVAIL", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial with reuse: %v", err)
			}
			defer c.Close()
			if p := c.(*TCPConn).LocalAddrPort().Port(); p != 42000 && p != 42001 {
				t.Fatalf("reused port %d is outside the range", p)
			}
			msg := []byte("still works")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
				t.Fatalf("echo on reused port: %q, %v", got, err)
			}
		})
	}
}

func TestRefusedReleasesPort(t *testing.T) {
	st := newLoopback(t, "43000-43009", "")
	_, err := st.Dial("tcp", "127.0.0.1:9")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to closed port: %v, want ECONNREFUSED", err)
	}
	waitInUse(t, st, portalloc.TCP, 0)
}

func TestUDPPortsFromPool(t *testing.T) {
	st := newLoopback(t, "", "44000-44002")
	srv, err := st.ListenPacket("udp", "127.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:n], from)
		}
	}()
	var got []uint16
	for i := 0; i < 5; i++ {
		c, err := st.Dial("udp", "127.0.0.1:53")
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("echo: %q %v", buf[:n], err)
		}
		got = append(got, c.(*UDPConn).LocalAddrPort().Port())
		c.Close()
		if n := inUse(st, portalloc.UDP); n != 0 {
			t.Fatalf("UDP in use after close = %d, want 0", n)
		}
	}
	if diff := cmp.Diff([]uint16{44000, 44001, 44002, 44000, 44001}, got); diff != "" {
		t.Fatalf("UDP ports (-want +got):\n%s", diff)
	}
	pc, err := st.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	if p := pc.LocalAddr().(*net.UDPAddr).Port; p != 44002 {
		t.Errorf("ListenPacket :0 got port %d, want 44002", p)
	}
	pc.Close()
	if err := pc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

func TestExplicitBindInRangeIsSkipped(t *testing.T) {
	st := newLoopback(t, "45000-45004", "")
	l, err := st.Listen("tcp", "127.0.0.1:45001")
	if err != nil {
		t.Fatal(err)
	}
	serveTCP(t, l, func(c net.Conn) { c.Close() })
	l2, err := st.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	l3, err := st.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	got := []int{l2.Addr().(*net.TCPAddr).Port, l3.Addr().(*net.TCPAddr).Port}
	if diff := cmp.Diff([]int{45000, 45002}, got); diff != "" {
		t.Fatalf("listen :0 ports (-want +got):\n%s", diff)
	}
	if _, err := st.Listen("tcp", "127.0.0.1:45001"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second listen on 45001: %v, want EADDRINUSE", err)
	}
}

// TestGVisorPickerNeverUsed checks that every local port the stack used
// came from the pools: none lies in gVisor's fenced range, and the pools
// counted one allocation per socket.
func TestGVisorPickerNeverUsed(t *testing.T) {
	st := newLoopback(t, "46000-46099", "46000-46099")
	l, err := st.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveTCP(t, l, func(c net.Conn) { c.Close() })
	var ports []int
	ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	for i := 0; i < 10; i++ {
		c, err := st.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, c.LocalAddr().(*net.TCPAddr).Port)
		c.Close()
		u, err := st.Dial("udp", "127.0.0.1:7")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, u.LocalAddr().(*net.UDPAddr).Port)
		u.Close()
		p, err := st.ListenPacket("udp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, p.LocalAddr().(*net.UDPAddr).Port)
		p.Close()
	}
	for _, p := range ports {
		if p < 46000 || p > 46099 {
			t.Errorf("port %d did not come from the pool", p)
		}
	}
	if a := st.Allocator().Pool(portalloc.TCP).Stats().Allocations; a != 11 {
		t.Errorf("TCP allocations = %d, want 11", a)
	}
	if a := st.Allocator().Pool(portalloc.UDP).Stats().Allocations; a != 20 {
		t.Errorf("UDP allocations = %d, want 20", a)
	}
	if f := st.GVisor().Stats().TCP.FailedPortReservations.Value(); f != 0 {
		t.Errorf("gVisor FailedPortReservations = %d, want 0", f)
	}
}

func TestDeadlinesAndClose(t *testing.T) {
	st := newLoopback(t, "", "")
	l, err := st.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	serveTCP(t, l, func(c net.Conn) { io.Copy(io.Discard, c) })
	c, err := st.Dial("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past deadline: %v, want os.ErrDeadlineExceeded and Timeout()", err)
	}
	c.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
	waitReading(t, "Read", c.(*TCPConn).wq)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
}

func TestStackCloseUnblocksAndReleases(t *testing.T) {
	st, err := New(Config{Ports: portalloc.Config{TCP: portalloc.PoolConfig{Range: portalloc.Range{First: 47000, Last: 47099}}}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := st.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	serveTCP(t, l, func(c net.Conn) { io.Copy(io.Discard, c) })
	var conns []net.Conn
	for i := 0; i < 20; i++ {
		c, err := st.Dial("tcp", "127.0.0.1:80")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// A listener nobody dials, so that its Accept blocks (on l it would
	// race serveTCP's loop for the 20 connections).
	idle, err := st.Listen("tcp", "127.0.0.1:81")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, len(conns)+1)
	for _, c := range conns {
		go func() { _, err := c.Read(make([]byte, 1)); errs <- err }()
	}
	go func() { _, err := idle.Accept(); errs <- err }()
	for i, c := range conns {
		waitReading(t, fmt.Sprintf("Read on conn %d", i), c.(*TCPConn).wq)
	}
	waitReading(t, "Accept", idle.(*TCPListener).wq)
	st.Close()
	st.Close() // idempotent
	for range len(conns) + 1 {
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("blocked call after Stack.Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Stack.Close left a call blocked")
		}
	}
	if n := inUse(st, portalloc.TCP); n != 0 {
		t.Fatalf("TCP ports in use after Close = %d, want 0", n)
	}
	if _, err := st.Dial("tcp", "127.0.0.1:80"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial after Close: %v, want net.ErrClosed", err)
	}
}

func TestNetTestConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		st, err := New(Config{})
		if err != nil {
			return nil, nil, nil, err
		}
		l, err := st.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			st.Close()
			return nil, nil, nil, err
		}
		acc := make(chan net.Conn, 1)
		go func() {
			c, _ := l.Accept()
			acc <- c
		}()
		c1, err = st.Dial("tcp", l.Addr().String())
		if err != nil {
			st.Close()
			return nil, nil, nil, err
		}
		c2 = <-acc
		l.Close()
		return c1, c2, func() { c1.Close(); c2.Close(); st.Close() }, nil
	})
}

func TestBadInput(t *testing.T) {
	st := newLoopback(t, "", "")
	ctx := context.Background()
	tests := []struct {
		name, network, addr string
		want                string
	}{
		{"unknown network", "ip", "127.0.0.1:1", "unknown network ip"},
		{"missing port", "tcp", "127.0.0.1", "missing port"},
		{"bad port", "tcp", "127.0.0.1:99999", "invalid port"},
		{"port zero", "tcp", "127.0.0.1:0", "port 0"},
		{"wrong family", "tcp6", "127.0.0.1:80", "not an IPv6 address"},
		{"name without DNS", "tcp", "example.test:80", "no DNS server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.DialContext(ctx, tc.network, tc.addr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DialContext(%q, %q) = %v, want error containing %q", tc.network, tc.addr, err, tc.want)
			}
		})
	}
	if _, err := st.Listen("udp", ":0"); err == nil {
		t.Error("Listen udp: no error")
	}
	if _, err := st.ListenPacket("tcp", ":0"); err == nil {
		t.Error("ListenPacket tcp: no error")
	}
	if _, err := st.Listen("tcp", "192.0.2.1:80"); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("listen on a foreign address: %v, want EADDRNOTAVAIL", err)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"mtu", Config{MTU: 20}, "Config.MTU 20"},
		{"v6 mtu", Config{MTU: 1000, Addrs: []netip.Prefix{netip.MustParsePrefix("fd00::1/64")}}, "IPv6 needs at least 1280"},
		{"timewait", Config{TimeWait: time.Hour}, "Config.TimeWait"},
		{"route host bits", Config{Routes: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}}, "did you mean 198.18.0.0/24"},
		{"unspecified addr", Config{Addrs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, "Config.Addrs[0]"},
		{"ports", Config{Ports: portalloc.Config{UDP: portalloc.PoolConfig{Range: portalloc.Range{First: 9, Last: 3}}}}, "Config.UDP"},
		{"dns", Config{DNS: []netip.AddrPort{{}}}, "Config.DNS[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := New(tc.cfg)
			if err == nil {
				st.Close()
				t.Fatalf("New accepted a bad config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestDialWaitsForClosingPort: with the range full, a dial waits for a
// port whose connection is closing instead of failing, and gives up after
// closingWait (or its context) if the close never finishes.
func TestDialWaitsForClosingPort(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hold    time.Duration // how long the server keeps its side open after our FIN
		timeout time.Duration // the second dial's context timeout; 0: none
		wantErr bool
	}{
		{name: "peer closes soon", hold: 100 * time.Millisecond},
		{name: "peer never closes", hold: time.Hour, wantErr: true},
		{name: "peer never closes, dial deadline", hold: time.Hour, timeout: 40 * time.Millisecond, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newLoopback(t, "43000-43000", "", func(c *Config) { c.TimeWaitReuse = true })
			l, err := st.Listen("tcp", "127.0.0.1:80")
			if err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			defer close(release)
			serveTCP(t, l, func(c net.Conn) {
				defer c.Close()
				io.Copy(io.Discard, c) // until our FIN
				select {
				case <-time.After(tc.hold):
				case <-release:
				}
			})
			c, err := st.Dial("tcp", "127.0.0.1:80")
			if err != nil {
				t.Fatal(err)
			}
			c.Close() // FIN_WAIT until the server closes: the only port is closing

			// start is taken before the context's deadline is set, so
			// that a delay between the two cannot make the dial seem to
			// give up early.
			start := time.Now()
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			c2, err := st.DialContext(ctx, "tcp", "127.0.0.1:80")
			took := time.Since(start)
			// The pool counts only a dial that finally fails, not the
			// waits before it.
			wantExhausted := uint64(0)
			if tc.wantErr {
				wantExhausted = 1
			}
			if got := st.Allocator().Pool(portalloc.TCP).Stats().Exhausted; got != wantExhausted {
				t.Errorf("Stats.Exhausted = %d, want %d", got, wantExhausted)
			}
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("dial while the only port was closing: %v (after %v)", err, took)
				}
				defer c2.Close()
				if p := c2.(*TCPConn).LocalAddrPort().Port(); p != 43000 {
					t.Fatalf("got port %d, want 43000", p)
				}
				if took < 50*time.Millisecond {
					t.Errorf("dial succeeded after %v, before the server had closed (%v)", took, tc.hold)
				}
				return
			}
			if !errors.Is(err, syscall.EADDRNOTAVAIL) {
				t.Fatalf("dial: %v, want EADDRNOTAVAIL", err)
			}
			want := closingWait
			if tc.timeout > 0 {
				want = tc.timeout
			}
			if took < want*9/10 || took > want+2*time.Second {
				t.Errorf("dial failed after %v, want about %v", took, want)
			}
		})
	}
}

// TestListenV6OnlyLikeNet: as in package net, "tcp6"/"udp6" on the
// unspecified address are IPv6-only and "tcp"/"udp" on it take both
// families.
func TestListenV6OnlyLikeNet(t *testing.T) {
	st := newLoopback(t, "", "")
	for _, tc := range []struct {
		network, addr string
		v4            bool // an IPv4 client gets through
	}{
		{"tcp6", "[::]:81", false},
		{"tcp", "[::]:82", true},
		{"tcp", ":83", true},
		{"udp6", "[::]:84", false},
		{"udp", "[::]:85", true},
	} {
		port := tc.addr[strings.LastIndex(tc.addr, ":")+1:]
		if strings.HasPrefix(tc.network, "tcp") {
			l, err := st.Listen(tc.network, tc.addr)
			if err != nil {
				t.Fatalf("Listen(%q, %q): %v", tc.network, tc.addr, err)
			}
			serveTCP(t, l, func(c net.Conn) { c.Close() })
			c6, err := st.Dial("tcp6", "[::1]:"+port)
			if err != nil {
				t.Errorf("%s %s: IPv6 dial: %v", tc.network, tc.addr, err)
			} else {
				c6.Close()
			}
			c4, err := st.Dial("tcp4", "127.0.0.1:"+port)
			switch {
			case tc.v4 && err != nil:
				t.Errorf("%s %s: IPv4 dial: %v, want it accepted", tc.network, tc.addr, err)
			case !tc.v4 && !errors.Is(err, syscall.ECONNREFUSED):
				t.Errorf("%s %s: IPv4 dial: %v, want ECONNREFUSED", tc.network, tc.addr, err)
			}
			if err == nil {
				c4.Close()
			}
			continue
		}
		pc, err := st.ListenPacket(tc.network, tc.addr)
		if err != nil {
			t.Fatalf("ListenPacket(%q, %q): %v", tc.network, tc.addr, err)
		}
		defer pc.Close()
		send := func(network, to string, msg string) {
			c, err := st.Dial(network, to)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
		}
		// IPv4 first: a socket that must not get it reads the IPv6 one
		// next instead.
		send("udp4", "127.0.0.1:"+port, "four")
		send("udp6", "[::1]:"+port, "six")
		buf := make([]byte, 16)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%s %s: read: %v", tc.network, tc.addr, err)
		}
		want, wantFrom := "six", "::1"
		if tc.v4 {
			want, wantFrom = "four", "127.0.0.1" // unmapped, as package net reports it
		}
		if got := string(buf[:n]); got != want || from.(*net.UDPAddr).IP.String() != wantFrom {
			t.Errorf("%s %s: first datagram %q from %v, want %q from %s", tc.network, tc.addr, got, from, want, wantFrom)
		}
	}
}
