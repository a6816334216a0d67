//go:build linux

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The TCP relay's own tests are in package tcprelay, over a fake Gateway.
// These are of the Gateway and the relay together: Config.Dial's sockets,
// Close with live flows, where the relay is used, admission, and the
// relay against gVisor's forwarder.

// newWorldLink is a Gateway with a guest stack on the other end of a pipe
// of the given MTU (0: the default), with wrap (if not nil) around the
// gateway's end.
func newWorldLink(t testing.TB, mtu int, wrap func(gvstack.LinkEndpoint) gvstack.LinkEndpoint, mod func(*Config)) *world {
	t.Helper()
	p, err := tun.NewPipe(mtu)
	if err != nil {
		t.Fatal(err)
	}
	link := p.A()
	if wrap != nil {
		link = wrap(link)
	}
	cfg := Config{Link: link, DNSUpstream: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}}
	if mod != nil {
		mod(&cfg)
	}
	gw, err := NewGateway(cfg)
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	a := gw.Addrs()
	guest, err := stack.New(stack.Config{Link: p.B(), Addrs: []netip.Prefix{a.Guest, a.Guest6},
		DNS: []netip.AddrPort{netip.AddrPortFrom(a.DNS.Addr(), 53)}})
	if err != nil {
		gw.Close()
		p.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { guest.Close(); gw.Close(); p.Close() })
	return &world{gw: gw, guest: guest}
}

// loopback opens the host's loopback to the guest, then applies mod.
func loopback(mod func(*Config)) func(*Config) {
	return func(c *Config) {
		c.Policy.AllowHostLoopback = true
		if mod != nil {
			mod(c)
		}
	}
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

// TestRelayDialConn: with a Config.Dial of the caller's, the relay takes
// the socket the dial returns and carries data over it; a connection with
// no socket under it is refused with a reset and counted, and closed.
func TestRelayDialConn(t *testing.T) {
	l, dst := hostListen(t, "tcp4")
	testnet.Serve(t, l, func(c net.Conn) { io.Copy(c, c) })
	piped := make(chan net.Conn, 1)
	w := newWorldLink(t, 0, nil, loopback(func(c *Config) {
		c.Dial = func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
			if addr.Port() == 9 {
				a, b := net.Pipe()
				piped <- b
				return a, nil
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr.String())
		}
	}))
	c, err := w.guest.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("through a dialled socket")
	c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %q, %v", got, err)
	}
	c.Close()
	waitFor(t, "the flow to end", func() bool { return w.gw.relay.Flows() == 0 })

	before := w.gw.Stats().Refused
	if _, err := w.guest.Dial("tcp", "10.0.2.2:9"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial through a pipe: %v, want ECONNREFUSED", err)
	}
	b := <-piped
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := b.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the pipe's other end read %v, want EOF (closed by the relay)", err)
	}
	// The reset goes out just before the flow is dropped.
	waitFor(t, "the flow to end", func() bool { return w.gw.relay.Flows() == 0 && w.gw.Stats().Live == 0 })
	if s := w.gw.Stats(); s.Refused != before+1 || s.Live != 0 {
		t.Errorf("stats %+v: want one more refused, none live", s)
	}
}

// TestRelayCloseWithFlows: closing the gateway with flows in every state
// (dialling, moving data, stalled) ends them all without a hang or a
// leaked goroutine (TestMain checks).
func TestRelayCloseWithFlows(t *testing.T) {
	l, dst := hostListen(t, "tcp4")
	testnet.Serve(t, l, func(c net.Conn) {
		go io.Copy(io.Discard, c)
		c.Write(make([]byte, 64<<20))
	})
	p, err := tun.NewPipe(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	hang := make(chan struct{})
	defer close(hang)
	gw, err := NewGateway(Config{Link: p.A(), Policy: Policy{AllowHostLoopback: true},
		Dial: func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
			if addr.Port() == 9 {
				select {
				case <-hang:
				case <-ctx.Done():
				}
				return nil, errors.New("never")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr.String())
		}})
	if err != nil {
		t.Fatal(err)
	}
	a := gw.Addrs()
	guest, err := stack.New(stack.Config{Link: p.B(), Addrs: []netip.Prefix{a.Guest}})
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()
	for range 3 {
		c, err := guest.Dial("tcp", dst)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if c, err := guest.DialContext(ctx, "tcp", "10.0.2.2:9"); err == nil {
			c.Close()
		}
	}()
	waitFor(t, "flows in every state", func() bool { return gw.relay.Flows() == 4 })
	done := make(chan struct{})
	go func() { gw.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Gateway.Close hung with live relay flows")
	}
	if n := gw.relay.Flows(); n != 0 {
		t.Errorf("relay holds %d flows after Close", n)
	}
}

// TestRelayUsable: the Gateway puts the TCP relay on a TUN-like link, and
// NoTCPRelay keeps it out (tcprelay's TestRelayUsable checks which links
// the relay can serve).
func TestRelayUsable(t *testing.T) {
	if w := newWorldLink(t, 0, nil, nil); w.gw.relay == nil {
		t.Error("the gateway has no relay on a TUN-like link")
	}
	w := newWorldLink(t, 0, nil, func(c *Config) { c.NoTCPRelay = true })
	if w.gw.relay != nil {
		t.Error("NoTCPRelay left the relay on")
	}
}

// BenchmarkGatewayConn: one guest connection through the gateway to a
// host loopback server per op (connect, 1-byte echo, the host closes,
// the guest closes), through the relay and through gVisor's forwarder
// (NoTCPRelay) in the same run. The guest is a gVisor stack on a pipe, so
// its share of each op is the same in both.
func BenchmarkGatewayConn(b *testing.B) {
	for _, tc := range []struct {
		name    string
		noRelay bool
	}{{"relay", false}, {"gvisor", true}} {
		b.Run(tc.name, func(b *testing.B) {
			l, dst := hostListen(b, "tcp4")
			testnet.Serve(b, l, func(c net.Conn) {
				buf := make([]byte, 1)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(buf)
				}
			})
			w := newWorldLink(b, 0, nil, loopback(func(c *Config) { c.NoTCPRelay = tc.noRelay }))
			buf := make([]byte, 1)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := w.guest.Dial("tcp", dst)
				if err != nil {
					b.Fatal(err)
				}
				c.Write(buf)
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
