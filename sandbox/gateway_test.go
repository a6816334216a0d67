//go:build linux

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// world is a Gateway with a guest stack on the other end of a pipe.
type world struct {
	gw    *Gateway
	guest *stack.Stack
}

func newWorld(t testing.TB, mod func(*Config)) *world {
	t.Helper()
	return newWorldLink(t, 0, nil, mod)
}

// hostHTTP starts an HTTP server on host loopback, closed with the test.
func hostHTTP(t *testing.T, body string) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).AddrPort()
}

func (w *world) get(url string) (string, error) {
	tr := &http.Transport{DialContext: w.guest.DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestHostLoopbackPolicy(t *testing.T) {
	hp := hostHTTP(t, "hello from the host")
	url := fmt.Sprintf("http://10.0.2.2:%d/", hp.Port())
	t.Run("closed by default", func(t *testing.T) {
		w := newWorld(t, nil)
		start := time.Now()
		_, err := w.guest.Dial("tcp", fmt.Sprintf("10.0.2.2:%d", hp.Port()))
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial host loopback: %v, want ECONNREFUSED", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("refusal took %v", d)
		}
		if s := w.gw.Stats(); s.Denied != 1 {
			t.Errorf("Denied = %d, want 1", s.Denied)
		}
	})
	t.Run("allowed", func(t *testing.T) {
		w := newWorld(t, func(c *Config) { c.Policy.AllowHostLoopback = true })
		body, err := w.get(url)
		if err != nil || body != "hello from the host" {
			t.Fatalf("GET %s: %q %v", url, body, err)
		}
	})
	t.Run("denied by --deny", func(t *testing.T) {
		w := newWorld(t, func(c *Config) {
			c.Policy.AllowHostLoopback = true
			c.Policy.Deny = []netip.Prefix{netip.MustParsePrefix("10.0.2.2/32")}
		})
		if _, err := w.get(url); err == nil {
			t.Fatal("GET through a denied prefix worked")
		}
	})
	t.Run("allow list", func(t *testing.T) {
		w := newWorld(t, func(c *Config) {
			c.Policy.AllowHostLoopback = true
			c.Policy.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.2.2/32")}
		})
		if body, err := w.get(url); err != nil || body != "hello from the host" {
			t.Fatalf("GET inside the allow list: %q %v", body, err)
		}
		// Outside the allow list: refused before any dial.
		_, err := w.guest.Dial("tcp", "198.18.0.1:80")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial outside the allow list: %v, want ECONNREFUSED", err)
		}
		if s := w.gw.Stats(); s.Denied != 1 {
			t.Errorf("Denied = %d, want 1", s.Denied)
		}
	})
	t.Run("crafted loopback destination", func(t *testing.T) {
		w := newWorld(t, func(c *Config) { c.Policy.AllowHostLoopback = true })
		// The guest stack routes 127.0.0.1 out of its link only if told
		// to; a direct dial to the host's loopback is never carried.
		a, ok := w.gw.target(netip.MustParseAddrPort("127.0.0.1:80"), "tcp")
		if ok == "" {
			t.Fatalf("127.0.0.1 mapped to %s; it must never be dialled", a)
		}
	})
}

func TestUDPAndDNS(t *testing.T) {
	// A host loopback UDP echo server.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeUDPEcho(t, pc)
	// A host loopback DNS server.
	dns, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ddone := make(chan struct{})
	go func() { defer close(ddone); answerDNS(dns) }()
	defer func() { dns.Close(); <-ddone }()

	w := newWorld(t, func(c *Config) {
		c.Policy.AllowHostLoopback = true
		c.DNSUpstream = []netip.AddrPort{dns.LocalAddr().(*net.UDPAddr).AddrPort()}
	})
	echo := fmt.Sprintf("10.0.2.2:%d", pc.LocalAddr().(*net.UDPAddr).Port)
	c, err := w.guest.Dial("udp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, msg := range []string{"one", "two"} {
		c.Write([]byte(msg))
		b := make([]byte, 16)
		n, err := c.Read(b)
		if err != nil || string(b[:n]) != msg {
			t.Fatalf("udp echo: %q %v", b[:n], err)
		}
	}
	addrs, err := w.guest.LookupHost(context.Background(), "svc.test")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"198.18.7.7"}, addrs); diff != "" {
		t.Fatalf("lookup through 10.0.2.3 (-want +got):\n%s", diff)
	}
	if s := w.gw.Stats(); s.DNSQueries < 1 || s.UDPFlows != 1 {
		t.Errorf("stats %+v: want DNS queries and one UDP flow", s)
	}
}

// answerDNS answers A queries for svc.test with 198.18.7.7 and AAAA
// with nothing.
func answerDNS(pc net.PacketConn) {
	b := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(b)
		if err != nil {
			return
		}
		var m dnsmessage.Message
		if m.Unpack(b[:n]) != nil || len(m.Questions) != 1 {
			continue
		}
		m.Header.Response = true
		q := m.Questions[0]
		if q.Type == dnsmessage.TypeA && q.Name.String() == "svc.test." {
			m.Answers = []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
				Body:   &dnsmessage.AResource{A: [4]byte{198, 18, 7, 7}},
			}}
		}
		out, _ := m.Pack()
		pc.WriteTo(out, from)
	}
}

func TestForwardSequentialPorts(t *testing.T) {
	w := newWorld(t, func(c *Config) {
		c.Ports.TCP.Range = portalloc.Range{First: 45000, Last: 45004}
	})
	// The guest serves on 8080: it replies with the peer's port and closes.
	l, err := w.guest.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	sdone := make(chan struct{})
	go func() {
		defer close(sdone)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%d", c.RemoteAddr().(*net.TCPAddr).Port)
			c.Close()
		}
	}()
	defer func() { l.Close(); <-sdone }()
	if _, err := ParseForward("127.0.0.1:0:8080"); err == nil {
		t.Fatalf("ParseForward accepted host port 0")
	}
	probe, _ := net.Listen("tcp4", "127.0.0.1:0")
	hostPort := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	f, err := ParseForward(fmt.Sprintf("127.0.0.1:%d:8080", hostPort))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.gw.AddForward(f); err != nil {
		t.Fatal(err)
	}
	if err := w.gw.AddForward(f); !errors.Is(err, ErrForwardExists) {
		t.Fatalf("second AddForward: %v", err)
	}
	var got []string
	for i := 0; i < 12; i++ {
		c, err := net.Dial("tcp4", f.Host.String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(b))
		// Wait until the port is back before the next connection, so the
		// order is exact.
		port := portOf(string(b))
		testnet.WaitFor(t, 5*time.Second, fmt.Sprintf("port %d back in the pool", port), func() error {
			if w.gw.Stack().Allocator().Pool(portalloc.TCP).Held(port) {
				return errors.New("still held")
			}
			return nil
		})
	}
	want := []string{"45000", "45001", "45002", "45003", "45004", "45000", "45001", "45002", "45003", "45004", "45000", "45001"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("guest-seen peer ports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Forward{f}, w.gw.Forwards(), cmp.Comparer(func(a, b Forward) bool { return a == b })); diff != "" {
		t.Errorf("Forwards (-want +got):\n%s", diff)
	}
	if err := w.gw.RemoveForward(f); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp4", f.Host.String(), time.Second); err == nil {
		t.Fatal("host port still open after RemoveForward")
	}
	if err := w.gw.RemoveForward(f); !errors.Is(err, ErrNoForward) {
		t.Fatalf("second RemoveForward: %v", err)
	}
	// A host port in use is a clear error.
	busy, _ := net.Listen("tcp4", "127.0.0.1:0")
	defer busy.Close()
	f2 := Forward{Proto: "tcp", Host: busy.Addr().(*net.TCPAddr).AddrPort(), GuestPort: 80}
	if err := w.gw.AddForward(f2); !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("AddForward on a busy port: %v", err)
	}
}

func portOf(s string) uint16 {
	var p uint16
	fmt.Sscan(s, &p)
	return p
}

func TestMaxFlows(t *testing.T) {
	hp := hostHTTP(t, "x")
	w := newWorld(t, func(c *Config) { c.Policy.AllowHostLoopback = true; c.MaxFlows = 3 })
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := w.guest.Dial("tcp", fmt.Sprintf("10.0.2.2:%d", hp.Port()))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for i := 0; i < 20; i++ {
		if c, err := w.guest.Dial("tcp", fmt.Sprintf("10.0.2.2:%d", hp.Port())); err == nil {
			c.Close()
			t.Fatalf("flow %d past MaxFlows was accepted", 4+i)
		}
	}
	if s := w.gw.Stats(); s.Refused != 20 || s.Live != 3 {
		t.Errorf("stats %+v: want 20 refused, 3 live", s)
	}
	for _, c := range conns {
		c.Close()
	}
}

// TestGuestPortReuse: the guest reuses its source ports quickly (here a
// 16-port range) while the gateway closes first toward it (the host
// server closes first). Every connection must still work.
func TestGuestPortReuse(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				b := make([]byte, 1)
				io.ReadFull(c, b)
				c.Write(b)
				c.Close()
			}()
		}
	}()
	defer func() { l.Close(); <-done }()
	p, err := tun.NewPipe(DefaultMTU)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := NewGateway(Config{Link: p.A(), Policy: Policy{AllowHostLoopback: true}, DNSUpstream: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}})
	if err != nil {
		t.Fatal(err)
	}
	a := gw.Addrs()
	guest, err := stack.New(stack.Config{Link: p.B(), Addrs: []netip.Prefix{a.Guest},
		Ports: portalloc.Config{TCP: portalloc.PoolConfig{Range: portalloc.Range{First: 40000, Last: 40015}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { guest.Close(); gw.Close(); p.Close() }()
	dst := fmt.Sprintf("10.0.2.2:%d", l.Addr().(*net.TCPAddr).Port)
	for i := 0; i < 200; i++ {
		c, err := guest.Dial("tcp", dst)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte{1})
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("connection %d: echo: %v", i, err)
		}
		io.Copy(io.Discard, c)
		c.Close()
	}
}

// TestHalfCloseAndReset: a guest's half-close reaches the host as EOF
// while the host can still answer, and a host reset reaches the guest as
// a reset; a UDP flow to a denied address is refused.
func TestHalfCloseAndReset(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w := newWorld(t, func(c *Config) {
		c.Policy.AllowHostLoopback = true
		c.Policy.Deny = []netip.Prefix{netip.MustParsePrefix("198.18.66.0/24")}
	})
	dst := fmt.Sprintf("10.0.2.2:%d", l.Addr().(*net.TCPAddr).Port)

	// Half-close: the host reads to EOF, then sends its answer.
	hostDone := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			hostDone <- err
			return
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		if err != nil {
			hostDone <- err
			return
		}
		_, err = c.Write([]byte("got " + string(b)))
		hostDone <- err
	}()
	c, err := w.guest.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("question"))
	c.(*stack.TCPConn).CloseWrite()
	ans, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(ans) != "got question" {
		t.Fatalf("after half-close: %q %v", ans, err)
	}
	if err := <-hostDone; err != nil {
		t.Fatal(err)
	}

	// Reset: the host aborts; the guest sees ECONNRESET.
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Read(make([]byte, 1))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	c, err = w.guest.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("x"))
	_, err = io.ReadAll(c)
	c.Close()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after a host reset the guest read %v, want ECONNRESET", err)
	}

	// UDP to a denied prefix: ICMP port unreachable, seen as ECONNREFUSED.
	u, err := w.guest.Dial("udp", "198.18.66.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(5 * time.Second))
	u.Write([]byte("x"))
	if _, err := u.Read(make([]byte, 8)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("UDP to a denied prefix: %v, want ECONNREFUSED", err)
	}
}

// TestUDPForwardIdleTimeout: a UDP flow through a -p forward stays open
// while either side sends (here only the host does), and closes after
// UDPTimeout of silence both ways; the next datagram opens a new flow.
func TestUDPForwardIdleTimeout(t *testing.T) {
	const timeout = time.Second
	w := newWorld(t, func(c *Config) { c.UDPTimeout = timeout })
	pc, err := w.guest.ListenPacket("udp", ":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	probe, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	hostPort := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()
	f, err := ParseForward(fmt.Sprintf("127.0.0.1:%d:5353/udp", hostPort))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.gw.AddForward(f); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp4", f.Host.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// recv returns the gateway-side source port of the next datagram the
	// guest gets.
	recv := func() uint16 {
		t.Helper()
		b := make([]byte, 64)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, from, err := pc.ReadFrom(b)
		if err != nil {
			t.Fatalf("guest read: %v", err)
		}
		return uint16(from.(*net.UDPAddr).Port)
	}
	// Host-only traffic for two and a half timeouts: one flow throughout.
	var first uint16
	for i := 0; i < 6; i++ {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		port := recv()
		if i == 0 {
			first = port
		} else if port != first {
			t.Fatalf("datagram %d came from port %d, want the flow's %d: host traffic did not keep it alive", i, port, first)
		}
		// The contract under test: a datagram every half timeout keeps
		// the flow open, so the test must let that time pass.
		time.Sleep(timeout / 2)
	}
	// Silence both ways: the flow closes.
	testnet.WaitFor(t, 5*time.Second, "the flow to close after the last datagram", func() error {
		if st := w.gw.Stats(); st.Live != 0 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if port := recv(); port == first {
		t.Errorf("after the timeout the datagram came from the old flow's port %d", port)
	}
	if got := w.gw.Stats().Inbound; got != 2 {
		t.Errorf("inbound flows %d, want 2", got)
	}
}
