//go:build linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

func rangeCfg(tcp, udp string) stack.Config {
	var cfg stack.Config
	if tcp != "" {
		r, _ := portalloc.ParseRange(tcp)
		cfg.Ports.TCP.Range = r
	}
	if udp != "" {
		r, _ := portalloc.ParseRange(udp)
		cfg.Ports.UDP.Range = r
	}
	return cfg
}

// echoOnceServer serves on a kernel listener: for each connection it
// reports the peer's port, echoes what it reads until the client's first
// byte, and closes first, so the stack's side skips TIME_WAIT (the kernel
// takes it). It runs until l closes.
func echoOnceServer(t *testing.T, l net.Listener) <-chan uint16 {
	ports := make(chan uint16, 100000)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ports <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Port()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err == nil {
					c.Write(b)
				}
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return ports
}

// cycle dials, exchanges one byte, waits for the server's close and
// closes, then waits until the port is back in the pool.
func cycle(t testing.TB, st *stack.Stack, dst netip.AddrPort) (uint16, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := st.DialTCPAddrPort(ctx, netip.AddrPort{}, dst)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	port := c.LocalAddrPort().Port()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{1}); err != nil {
		return port, err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return port, err
	}
	if _, err := c.Read(b); err != io.EOF {
		return port, errors.New("server did not close: " + errString(err))
	}
	return port, nil
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func waitFree(t testing.TB, st *stack.Stack, proto portalloc.Protocol, port uint16) {
	t.Helper()
	testnet.WaitFor(t, 5*time.Second, fmt.Sprintf("%v port %d released after close", proto, port), func() error {
		if st.Allocator().Pool(proto).Held(port) {
			return errors.New("still held")
		}
		return nil
	})
}

// 1. TCP on the wire: the kernel sees exactly sequential, wrapping ports.
// TIME_WAIT is kept off the stack's side by having the kernel close first.
func TestTCPSequentialOnTheWire(t *testing.T) {
	forEachDriver(t, testTCPSequentialOnTheWire)
}

func testTCPSequentialOnTheWire(t *testing.T, drv tun.Driver) {
	e := newEnvDriver(t, rangeCfg("40000-40009", ""), 0, drv)
	seen := echoOnceServer(t, e.kernelListen(t, "tcp4", "198.18.0.1:7"))
	dst := netip.MustParseAddrPort("198.18.0.1:7")
	var want, got, kernelSaw []uint16
	for i := 0; i < 25; i++ {
		want = append(want, uint16(40000+i%10))
		port, err := cycle(t, e.st, dst)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		got = append(got, port)
		kernelSaw = append(kernelSaw, <-seen)
		waitFree(t, e.st, portalloc.TCP, port)
	}
	if diff := cmp.Diff(want, kernelSaw); diff != "" {
		t.Fatalf("source ports seen by the kernel (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got, kernelSaw); diff != "" {
		t.Fatalf("stack and kernel disagree on ports (-stack +kernel):\n%s", diff)
	}
}

// udpRecorder is a kernel UDP echo server that reports each sender port.
func udpRecorder(t *testing.T, pc net.PacketConn) <-chan uint16 {
	ports := make(chan uint16, 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			ports <- from.(*net.UDPAddr).AddrPort().Port()
			pc.WriteTo(b[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return ports
}

func udpCycle(st *stack.Stack, dst netip.AddrPort) (uint16, error) {
	c, err := st.DialUDPAddrPort(netip.AddrPort{}, dst)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return 0, err
	}
	b := make([]byte, 8)
	if _, err := c.Read(b); err != nil {
		return 0, err
	}
	return c.LocalAddrPort().Port(), nil
}

// 2. UDP the same way, then TCP and UDP interleaved with independent
// counters.
func TestUDPSequentialAndIndependentOfTCP(t *testing.T) {
	e := newEnv(t, rangeCfg("40000-40009", "40000-40009"), 0)
	useen := udpRecorder(t, e.kernelListenPacket(t, "udp4", "198.18.0.1:7"))
	tseen := echoOnceServer(t, e.kernelListen(t, "tcp4", "198.18.0.1:7"))
	dst := netip.MustParseAddrPort("198.18.0.1:7")
	var want, got []uint16
	for i := 0; i < 25; i++ {
		want = append(want, uint16(40000+i%10))
		if _, err := udpCycle(e.st, dst); err != nil {
			t.Fatalf("udp cycle %d: %v", i, err)
		}
		got = append(got, <-useen)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("UDP source ports seen by the kernel (-want +got):\n%s", diff)
	}
	// UDP's cursor is now at 40005; TCP's at 40000. Interleave.
	var wantMix, gotMix []string
	for i := 0; i < 12; i++ {
		wantMix = append(wantMix, "tcp "+itoa(40000+i%10), "udp "+itoa(40000+(5+i)%10))
		port, err := cycle(t, e.st, dst)
		if err != nil {
			t.Fatalf("tcp cycle %d: %v", i, err)
		}
		gotMix = append(gotMix, "tcp "+itoa(int(<-tseen)))
		waitFree(t, e.st, portalloc.TCP, port)
		if _, err := udpCycle(e.st, dst); err != nil {
			t.Fatalf("udp cycle %d: %v", i, err)
		}
		gotMix = append(gotMix, "udp "+itoa(int(<-useen)))
	}
	if diff := cmp.Diff(wantMix, gotMix); diff != "" {
		t.Fatalf("interleaved ports seen by the kernel (-want +got):\n%s", diff)
	}
}

func itoa(n int) string { return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(n)).String()[8:] }

// 3. Skips: with exclusive ports, a port held by a live connection and a
// port explicitly bound inside the range are both skipped. (With the
// default per-destination ports, TestSharedSourcePort shows the first
// shared.)
func TestSkipsHeldAndBoundPorts(t *testing.T) {
	cfg := rangeCfg("40000-40009", "")
	cfg.Ports.TCP.Sharing = portalloc.Exclusive
	e := newEnv(t, cfg, 0)
	seen := echoOnceServer(t, e.kernelListen(t, "tcp4", "198.18.0.1:7"))
	hold := e.kernelListen(t, "tcp4", "198.18.0.1:9")
	go func() {
		for {
			c, err := hold.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	live, err := e.st.Dial("tcp", "198.18.0.1:9") // takes 40000
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if p := live.LocalAddr().(*net.TCPAddr).Port; p != 40000 {
		t.Fatalf("first dial got %d, want 40000", p)
	}
	bound, err := e.st.Listen("tcp", ":40002")
	if err != nil {
		t.Fatal(err)
	}
	defer bound.Close()
	dst := netip.MustParseAddrPort("198.18.0.1:7")
	var got []uint16
	for i := 0; i < 10; i++ {
		port, err := cycle(t, e.st, dst)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		got = append(got, <-seen)
		waitFree(t, e.st, portalloc.TCP, port)
	}
	want := []uint16{40001, 40003, 40004, 40005, 40006, 40007, 40008, 40009, 40001, 40003}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("ports seen by the kernel (-want +got):\n%s", diff)
	}
}

// 4. Exhaustion: 8 ports, 8 live connections; the 9th dial fails fast
// with EADDRNOTAVAIL; after one closes, the next dial gets exactly it.
func TestExhaustionOnTheWire(t *testing.T) {
	forEachDriver(t, testExhaustionOnTheWire)
}

func testExhaustionOnTheWire(t *testing.T, drv tun.Driver) {
	e := newEnvDriver(t, rangeCfg("40000-40007", ""), 0, drv)
	l := e.kernelListen(t, "tcp4", "198.18.0.1:9")
	var kconns sync.Map // port -> kernel-side conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			kconns.Store(c.RemoteAddr().(*net.TCPAddr).AddrPort().Port(), c)
		}
	}()
	t.Cleanup(func() {
		kconns.Range(func(_, v any) bool { v.(net.Conn).Close(); return true })
	})
	var conns []net.Conn
	for i := 0; i < 8; i++ {
		c, err := e.st.Dial("tcp", "198.18.0.1:9")
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	_, err := e.st.Dial("tcp", "198.18.0.1:9")
	took := time.Since(start)
	if !errors.Is(err, syscall.EADDRNOTAVAIL) || !errors.Is(err, portalloc.ErrExhausted) {
		t.Fatalf("9th dial: %v; want EADDRNOTAVAIL and portalloc.ErrExhausted", err)
	}
	if took > 100*time.Millisecond {
		t.Errorf("9th dial took %v to fail; want it at once", took)
	}
	// The kernel closes 40005 first; our side follows; no TIME_WAIT here.
	victim := conns[5]
	var kc any
	testnet.WaitFor(t, 5*time.Second, "the kernel to accept the connection from 40005", func() error {
		if kc, _ = kconns.Load(uint16(40005)); kc == nil {
			return errors.New("not accepted yet")
		}
		return nil
	})
	kc.(net.Conn).Close()
	victim.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := victim.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after kernel close: %v, want EOF", err)
	}
	victim.Close()
	waitFree(t, e.st, portalloc.TCP, 40005)
	c, err := e.st.Dial("tcp", "198.18.0.1:9")
	if err != nil {
		t.Fatalf("dial after release: %v", err)
	}
	conns[5] = c
	if p := c.LocalAddr().(*net.TCPAddr).Port; p != 40005 {
		t.Fatalf("dial after release got %d, want exactly 40005", p)
	}
}
