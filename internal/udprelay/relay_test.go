//go:build linux

package udprelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/testnet"
)

// hostEcho starts a UDP echo server on the host's loopback and returns
// its address as the guest reaches it (10.0.2.2) and as the host does.
func hostEcho(t *testing.T) (guestAddr string, host netip.AddrPort) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeUDPEcho(t, pc)
	host = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	return fmt.Sprintf("10.0.2.2:%d", host.Port()), host
}

// hostSilent opens a UDP socket on the host's loopback that never
// answers, closed with the test.
func hostSilent(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// waitLive waits until the relay and its owner hold want flows.
func waitLive(t *testing.T, w *world, want int) {
	t.Helper()
	testnet.WaitFor(t, 10*time.Second, fmt.Sprintf("%d live flows", want), func() error {
		if s := w.stats(); s.Live != int64(want) || w.r.Flows() != want {
			return fmt.Errorf("relay holds %d flows, stats %+v", w.r.Flows(), s)
		}
		return nil
	})
}

// echo sends msg on c and checks that it comes back.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	if k, err := c.Read(b); err != nil || string(b[:k]) != msg {
		t.Fatalf("echo %q, %v; want %q", b[:k], err, msg)
	}
}

// A UDP flow costs the relay no goroutine: 300 flows, each echoed both
// ways, while the goroutine count stays put.
func TestUDPFlowsNoGoroutinePerFlow(t *testing.T) {
	const n = 300
	addr, _ := hostEcho(t)
	w := newWorld(t, netip.AddrPort{}, nil)
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := w.guest.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
		if _, err := fmt.Fprintf(c, "flow %d", i); err != nil {
			t.Fatal(err)
		}
	}
	b := make([]byte, 64)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, err := c.Read(b)
		if want := fmt.Sprintf("flow %d", i); err != nil || string(b[:k]) != want {
			t.Fatalf("flow %d: echo %q, %v; want %q", i, b[:k], err, want)
		}
	}
	if s := w.stats(); s.Live != n || s.UDPFlows != n {
		t.Errorf("stats %+v: want %d live UDP flows", s, n)
	}
	if grew := runtime.NumGoroutine() - before; grew > 10 {
		t.Errorf("%d goroutines more with %d UDP flows open; want no goroutine per flow", grew, n)
	}
}

// An idle flow ends after IdleTimeout; traffic from the guest keeps it
// open; the next datagram after it ended opens a new one (a new host
// socket, so a new source port at the host).
func TestUDPFlowIdleTimeout(t *testing.T) {
	const timeout = time.Second
	pc := hostSilent(t)
	w := newWorld(t, netip.AddrPort{}, func(c *Config, _ *fakeGateway) { c.IdleTimeout = timeout })
	c, err := w.guest.Dial("udp", fmt.Sprintf("10.0.2.2:%d", pc.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// from returns the host-side source of the next datagram.
	from := func() netip.AddrPort {
		t.Helper()
		b := make([]byte, 64)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, a, err := pc.ReadFrom(b)
		if err != nil {
			t.Fatalf("host read: %v", err)
		}
		return a.(*net.UDPAddr).AddrPort()
	}
	var first netip.AddrPort
	start := time.Now()
	for i := 0; time.Since(start) < 5*timeout/2; i++ {
		c.Write([]byte("keep"))
		a := from()
		if i == 0 {
			first = a
		} else if a != first {
			t.Fatalf("datagram %d came from %v, want the flow's %v: the flow ended while the guest sent", i, a, first)
		}
		time.Sleep(timeout / 3)
	}
	waitLive(t, w, 0)
	c.Write([]byte("again"))
	if a := from(); a == first {
		t.Errorf("after the timeout the datagram came from the old flow's %v", a)
	}
	if got := w.stats().UDPFlows; got != 2 {
		t.Errorf("UDP flows %d, want 2", got)
	}
}

// A DNS flow ends with its answer, counted apart; a flow whose host peer
// is gone (ICMP port unreachable on the host) ends too.
func TestFlowEnds(t *testing.T) {
	_, dns := hostEcho(t)
	w := newWorld(t, dns, nil)
	c, err := w.guest.Dial("udp", "10.0.2.3:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo(t, c, "query")
	waitLive(t, w, 0)
	if s := w.stats(); s.DNSQueries != 1 || s.UDPFlows != 0 {
		t.Errorf("stats %+v: want 1 DNS query and no other flow", s)
	}

	probe, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	closed := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()
	c2, err := w.guest.Dial("udp", fmt.Sprintf("10.0.2.2:%d", closed))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("anyone?"))
	testnet.WaitFor(t, 10*time.Second, "the flow to the closed port opened", func() error {
		if s := w.stats(); s.UDPFlows != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	waitLive(t, w, 0)
}

// A DNS flow that gets no answer ends after DNSTimeout, while another
// flow, idle as long, stays for its IdleTimeout.
func TestDNSTimeout(t *testing.T) {
	dns, other := hostSilent(t), hostSilent(t)
	w := newWorld(t, dns.LocalAddr().(*net.UDPAddr).AddrPort(), func(c *Config, _ *fakeGateway) {
		c.DNSTimeout = 100 * time.Millisecond
		c.IdleTimeout = time.Hour
	})
	c, err := w.guest.Dial("udp", fmt.Sprintf("10.0.2.2:%d", other.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("stay"))
	q, err := w.guest.Dial("udp", "10.0.2.3:53")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.Write([]byte("query"))
	testnet.WaitFor(t, 10*time.Second, "both flows opened", func() error {
		if s := w.stats(); s.UDPFlows != 1 || s.DNSQueries != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	waitLive(t, w, 1)
}

// With Config.SocketBlocks the host socket is made on a goroutine; a
// failure to make it refuses the flow and frees its slot.
func TestSocketBlocks(t *testing.T) {
	addr, _ := hostEcho(t)
	t.Run("dial", func(t *testing.T) {
		var dials atomic.Int32
		w := newWorld(t, netip.AddrPort{}, func(c *Config, g *fakeGateway) {
			c.SocketBlocks = true
			g.dial = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
				dials.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, "udp", addr.String())
			}
		})
		c, err := w.guest.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echo(t, c, "ping")
		if n := dials.Load(); n != 1 {
			t.Errorf("Gateway.Socket dialed %d times, want 1", n)
		}
	})
	t.Run("failure", func(t *testing.T) {
		w := newWorld(t, netip.AddrPort{}, func(c *Config, g *fakeGateway) {
			c.SocketBlocks = true
			g.dial = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
				return nil, errors.New("no socket for this test")
			}
		})
		c, err := w.guest.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("ping"))
		testnet.WaitFor(t, 10*time.Second, "the flow refused", func() error {
			if s := w.stats(); s.Refused != 1 || s.UDPFlows != 0 {
				return fmt.Errorf("stats %+v", s)
			}
			return nil
		})
		waitLive(t, w, 0)
	})
}

// Closing the relay while the guest opens flows ends every flow and
// frees its slot; goleak (TestMain) checks that no goroutine is left.
func TestCloseUnderLoad(t *testing.T) {
	addr, _ := hostEcho(t)
	w := newWorld(t, netip.AddrPort{}, nil)
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
			c, err := w.guest.Dial("udp", addr)
			if err != nil {
				return
			}
			c.Write([]byte("x"))
			c.Close()
		}
	}()
	testnet.WaitFor(t, 10*time.Second, "100 flows opened", func() error {
		if s := w.stats(); s.UDPFlows < 100 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	w.r.Close()
	w.r.Close() // idempotent
	close(stop)
	<-done
	// A packet the link was delivering as Close returned may still take
	// a slot, briefly: the flow is refused (the relay is closed).
	waitLive(t, w, 0)
}

// New refuses a Config field out of bounds, naming it and what is
// allowed.
func TestNewConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"IdleTimeout", Config{IdleTimeout: time.Microsecond}, "IdleTimeout 1µs: want 0 (the default) or at least 1ms"},
		{"DNSTimeout", Config{DNSTimeout: -time.Second}, "DNSTimeout -1s: want 0 (the default) or at least 1ms"},
		{"DialTimeout", Config{DialTimeout: -time.Second}, "DialTimeout -1s: want 0 (the default) or more"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(&fakeGateway{}, tc.cfg)
			if err == nil {
				r.Close()
				t.Fatal("New accepted the Config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
	if _, err := New(nil, Config{}); err == nil || !strings.Contains(err.Error(), "Gateway is nil") {
		t.Errorf("New with no Gateway: error %v, want one saying the Gateway is nil", err)
	}
}
