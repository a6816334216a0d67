//go:build linux

package sandbox

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/testnet"
)

// hostEcho starts a UDP echo server on the host's loopback and returns
// its address as the guest reaches it (10.0.2.2) and as the host does.
func hostEcho(t *testing.T) (guestAddr string, pc net.PacketConn) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeUDPEcho(t, pc)
	return fmt.Sprintf("10.0.2.2:%d", pc.LocalAddr().(*net.UDPAddr).Port), pc
}

// waitLive waits until the Gateway holds want flows.
func waitLive(t *testing.T, gw *Gateway, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for gw.Stats().Live != want {
		if time.Now().After(deadline) {
			t.Fatalf("live flows %d, want %d (stats %+v)", gw.Stats().Live, want, gw.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Config.UDPTimeout reaches the UDP relay (package udprelay, whose
// tests check the timeout itself): an idle flow ends after it.
func TestUDPFlowIdleTimeoutConfig(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	w := newWorld(t, loopback(func(c *Config) { c.UDPTimeout = time.Second }))
	c, err := w.guest.Dial("udp", fmt.Sprintf("10.0.2.2:%d", pc.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("idle"))
	deadline := time.Now().Add(10 * time.Second)
	for w.gw.Stats().UDPFlows != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want the flow opened", w.gw.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitLive(t, w.gw, 0)
}

// A DNS flow ends with its answer; a flow whose host peer is gone (ICMP
// port unreachable on the host) ends too.
func TestUDPFlowEnds(t *testing.T) {
	dns, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ddone := make(chan struct{})
	go func() { defer close(ddone); answerDNS(dns) }()
	defer func() { dns.Close(); <-ddone }()
	w := newWorld(t, loopback(func(c *Config) {
		c.DNSUpstream = []netip.AddrPort{dns.LocalAddr().(*net.UDPAddr).AddrPort()}
	}))
	if _, err := w.guest.LookupHost(context.Background(), "svc.test"); err != nil {
		t.Fatal(err)
	}
	waitLive(t, w.gw, 0)

	probe, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	closed := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()
	c, err := w.guest.Dial("udp", fmt.Sprintf("10.0.2.2:%d", closed))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("anyone?"))
	deadline := time.Now().Add(10 * time.Second)
	for w.gw.Stats().UDPFlows != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want the flow to the closed port opened", w.gw.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitLive(t, w.gw, 0)
}

// With Config.Dial set, the flow's host socket is a duplicate of the
// descriptor of the connection Dial returns; a connection without one is
// refused, and its slot freed.
func TestUDPFlowCustomDial(t *testing.T) {
	echo, _ := hostEcho(t)
	t.Run("syscall.Conn", func(t *testing.T) {
		dials := 0
		w := newWorld(t, loopback(func(c *Config) {
			c.Dial = func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
				dials++
				var d net.Dialer
				return d.DialContext(ctx, network, addr.String())
			}
		}))
		c, err := w.guest.Dial("udp", echo)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("ping"))
		b := make([]byte, 16)
		if k, err := c.Read(b); err != nil || string(b[:k]) != "ping" {
			t.Fatalf("echo through Config.Dial: %q %v", b[:k], err)
		}
		if dials != 1 {
			t.Errorf("Config.Dial called %d times, want 1", dials)
		}
	})
	t.Run("no descriptor", func(t *testing.T) {
		w := newWorld(t, loopback(func(c *Config) {
			c.Dial = func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
				a, b := net.Pipe()
				b.Close()
				return a, nil
			}
		}))
		c, err := w.guest.Dial("udp", echo)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("ping"))
		deadline := time.Now().Add(10 * time.Second)
		for w.gw.Stats().Refused != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("stats %+v: want the flow refused", w.gw.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
		waitLive(t, w.gw, 0)
	})
}

// BenchmarkGatewayUDPNewFlow opens one guest UDP flow per op (a new guest
// socket sends a datagram to a host echo server and reads the echo), and
// keeps every flow open until the end: ns/op is the cost of a new flow,
// guest stack included, and heap-B/flow what an open flow holds in the
// process (guest side included). Run with -benchtime=2000x or so: flows
// stay open, and the gateway's MaxFlows is 8192.
func BenchmarkGatewayUDPNewFlow(b *testing.B) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	testnet.ServeUDPEcho(b, pc)
	echo := fmt.Sprintf("10.0.2.2:%d", pc.LocalAddr().(*net.UDPAddr).Port)
	w := newWorld(b, loopback(nil))
	conns := make([]net.Conn, 0, b.N)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 16)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		c, err := w.guest.Dial("udp", echo)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("new")); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse))/float64(b.N), "heap-B/flow")
}

// Closing the Gateway while the guest opens flows ends every flow and
// frees its slot; goleak (TestMain) checks that no goroutine is left.
func TestUDPFlowsCloseUnderLoad(t *testing.T) {
	echo, _ := hostEcho(t)
	w := newWorld(t, loopback(nil))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := w.guest.Dial("udp", echo)
			if err != nil {
				return
			}
			c.Write([]byte("x"))
			c.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for w.gw.Stats().UDPFlows < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want 100 flows opened", w.gw.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.gw.Close()
	close(stop)
	<-done
	// A packet the link was delivering as Close returned may still take
	// a slot, briefly: the flow is refused (the UDP relay is closed).
	waitLive(t, w.gw, 0)
}
