package stack

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/tun"
)

// lockedBuffer is a bytes.Buffer for a logger written from several
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex // guards b; a leaf
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// interceptPair is a client stack and a promiscuous stack joined by an
// in-memory link; the client routes everything to the other.
func interceptPair(t *testing.T) (client, gw *Stack, logs *lockedBuffer) {
	t.Helper()
	return newInterceptPair(t, []string{"198.18.0.1/24"}, []string{"198.18.0.2/24"})
}

// newInterceptPair is interceptPair with the given addresses for the
// promiscuous stack and the client.
func newInterceptPair(t *testing.T, gwAddrs, clientAddrs []string) (client, gw *Stack, logs *lockedBuffer) {
	t.Helper()
	prefixes := func(ss []string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	p, err := tun.NewPipe(0)
	if err != nil {
		t.Fatal(err)
	}
	logs = &lockedBuffer{}
	gw, err = New(Config{Link: p.B(), Addrs: prefixes(gwAddrs), Promiscuous: true,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	client, err = New(Config{Link: p.A(), Addrs: prefixes(clientAddrs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); gw.Close(); p.Close() })
	return client, gw, logs
}

func TestHandleTCP(t *testing.T) {
	client, gw, logs := interceptPair(t)
	type seen struct{ src, dst netip.AddrPort }
	seenc := make(chan seen, 10)
	if err := gw.HandleTCP(func(r *TCPRequest) {
		seenc <- seen{r.Src, r.Dst}
		switch r.Dst.Port() {
		case 80: // accept and echo
			c, err := r.Accept()
			if err != nil {
				t.Errorf("Accept: %v", err)
				return
			}
			defer c.Close()
			if _, err := r.Accept(); !errors.Is(err, ErrRequestDone) {
				t.Errorf("second Accept = %v, want ErrRequestDone", err)
			}
			if got := c.LocalAddrPort(); got != r.Dst {
				t.Errorf("accepted conn's local address %s, want the original destination %s", got, r.Dst)
			}
			io.Copy(c, c)
		case 81:
			r.Refuse()
		case 82:
			panic("handler bug")
		case 83:
			// No decision.
		}
	}); err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("203.0.113.7:80")
	c, err := client.DialTCPAddrPort(t.Context(), netip.AddrPort{}, dst)
	if err != nil {
		t.Fatalf("dial an intercepted destination: %v", err)
	}
	s := <-seenc
	if s.dst != dst || s.src != c.LocalAddrPort() {
		t.Errorf("request %v -> %v, want %v -> %v", s.src, s.dst, c.LocalAddrPort(), dst)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("through")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 7)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "through" {
		t.Fatalf("echo = %q, %v", b, err)
	}
	c.Close()
	for _, port := range []uint16{81, 82, 83} {
		_, err := client.DialTCPAddrPort(t.Context(), netip.AddrPort{}, netip.AddrPortFrom(dst.Addr(), port))
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial port %d = %v, want ECONNREFUSED", port, err)
		}
		<-seenc
	}
	if !strings.Contains(logs.String(), "HandleTCP handler panicked; flow refused") || !strings.Contains(logs.String(), "handler bug") {
		t.Errorf("the panic was not logged:\n%s", logs.String())
	}
	// nil stops the interception: the stack refuses by itself.
	gw.HandleTCP(nil)
	if _, err := client.DialTCPAddrPort(t.Context(), netip.AddrPort{}, dst); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial without interception = %v, want ECONNREFUSED", err)
	}
	if n := len(seenc); n != 0 {
		t.Errorf("%d requests reached a removed handler", n)
	}
}

func TestHandleUDP(t *testing.T) {
	client, gw, logs := interceptPair(t)
	release := make(chan struct{})
	if err := gw.HandleUDP(func(r *UDPRequest) {
		if r.Dst.Port() == 54 {
			panic("udp handler bug")
		}
		if r.Dst.Port() != 53 {
			r.Refuse()
			return
		}
		<-release // decide only once three datagrams have come
		c, err := r.Accept()
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		for range 3 {
			n, err := c.Read(buf)
			if err != nil {
				t.Errorf("read: %v", err)
				return
			}
			c.Write(append([]byte("re:"), buf[:n]...))
		}
	}); err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("203.0.113.9:53")
	u, err := client.DialUDPAddrPort(netip.AddrPort{}, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, m := range []string{"one", "two", "three"} {
		if _, err := u.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	// The datagrams are in the gateway's queue once the link has carried
	// them; wait for that before the handler decides.
	deadline := time.Now().Add(5 * time.Second)
	for {
		gw.pending.mu.Lock()
		n := 0
		for _, q := range gw.pending.flows {
			n += len(q)
		}
		gw.pending.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d datagrams queued, want 2 behind the first", n)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	u.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	for _, want := range []string{"re:one", "re:two", "re:three"} {
		n, from, err := u.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) != want || from != dst {
			t.Errorf("got %q from %s, want %q from the original destination %s", buf[:n], from, want, dst)
		}
	}
	// A panicking handler is contained; the flow is dropped.
	u2, err := client.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(dst.Addr(), 54))
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	u2.Write([]byte("x"))
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "udp handler bug") {
		if time.Now().After(deadline) {
			t.Fatalf("the panic was not logged:\n%s", logs.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestHandleNeedsPromiscuous(t *testing.T) {
	st := newLoopback(t, "", "")
	if err := st.HandleTCP(func(*TCPRequest) {}); !errors.Is(err, ErrNotPromiscuous) || !strings.Contains(err.Error(), "Config.Promiscuous") {
		t.Errorf("HandleTCP = %v", err)
	}
	if err := st.HandleUDP(func(*UDPRequest) {}); !errors.Is(err, ErrNotPromiscuous) {
		t.Errorf("HandleUDP = %v", err)
	}
}

var _ net.Conn = (*UDPConn)(nil)
