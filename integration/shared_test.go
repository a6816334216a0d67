//go:build linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
)

// waitPool waits (bounded) until cond holds for proto's pool snapshot.
func waitPool(t *testing.T, st *stack.Stack, proto portalloc.Protocol, what string, cond func(portalloc.Snapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := st.Ports()[proto]
		if cond(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s; pool: %d in use, %d connections, %d destinations", what, s.InUse, s.Connections, s.Destinations)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSharedSourcePort dials two kernel listeners from a one-port range,
// over IPv4 and IPv6: both connections get the same source port (the
// kernel sees both from the stack's address and port 40000), carry their
// own data both ways at once, and a third dial to one of them fails
// naming it. gVisor's demultiplexer keeps the two 4-tuples apart; a
// listener on the shared port is refused.
func TestSharedSourcePort(t *testing.T) {
	for _, fam := range []struct {
		name, network string
		kernel, local netip.Addr
	}{
		{"ipv4", "tcp4", kernel4.Addr(), stack4.Addr()},
		{"ipv6", "tcp6", kernel6.Addr(), stack6.Addr()},
	} {
		t.Run(fam.name, func(t *testing.T) { testSharedSourcePort(t, fam.network, fam.kernel, fam.local) })
	}
}

func testSharedSourcePort(t *testing.T, network string, kernel, local netip.Addr) {
	e := newEnv(t, rangeCfg("40000-40000", ""), 0)
	dsts := []netip.AddrPort{netip.AddrPortFrom(kernel, 7), netip.AddrPortFrom(kernel, 9)}
	shared := netip.AddrPortFrom(local, 40000)
	type accepted struct {
		dst  netip.AddrPort
		peer netip.AddrPort
	}
	msgFor := func(i int) string { return strings.Repeat(fmt.Sprintf("conn %d to %v;", i, dsts[i]), 4000) }
	peers := make(chan accepted, 2)
	for i, dst := range dsts {
		l := e.kernelListen(t, network, dst.String())
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			peers <- accepted{dst, c.RemoteAddr().(*net.TCPAddr).AddrPort()}
			// Echo in upper case, and close first once the client's
			// message is back, so that the stack's side skips TIME_WAIT.
			c.SetDeadline(time.Now().Add(10 * time.Second))
			b := make([]byte, 64<<10)
			for left := len(msgFor(i)); left > 0; {
				n, err := c.Read(b)
				if n > 0 {
					c.Write([]byte(strings.ToUpper(string(b[:n]))))
					left -= n
				}
				if err != nil {
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conns []*stack.TCPConn
	for _, dst := range dsts {
		c, err := e.st.DialTCPAddrPort(ctx, netip.AddrPort{}, dst)
		if err != nil {
			t.Fatalf("dial %v: %v", dst, err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		if got := c.LocalAddrPort(); got != shared {
			t.Fatalf("dial %v: local address %v; want %v", dst, got, shared)
		}
	}
	for range dsts {
		a := <-peers
		if a.peer != shared {
			t.Errorf("kernel listener %v saw a connection from %v; want %v", a.dst, a.peer, shared)
		}
	}
	// Both at once, each with its own bytes: a segment delivered to the
	// wrong endpoint would show up as the other connection's data.
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := msgFor(i)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			go c.Write([]byte(msg))
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				errs[i] = err
				return
			}
			if string(got) != strings.ToUpper(msg) {
				errs[i] = fmt.Errorf("connection %d got another's bytes", i)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("connection %d to %v: %v", i, dsts[i], err)
		}
	}
	s := e.st.Ports()[portalloc.TCP]
	if !s.PerDestination || s.InUse != 1 || s.Connections != 2 || s.Destinations != 2 {
		t.Errorf("pool: per-destination %v, %d in use, %d connections, %d destinations; want true, 1, 2, 2", s.PerDestination, s.InUse, s.Connections, s.Destinations)
	}
	// The one port is taken toward :7: a second dial there fails, naming it.
	_, err := e.st.DialTCPAddrPort(ctx, netip.AddrPort{}, dsts[0])
	if !errors.Is(err, syscall.EADDRNOTAVAIL) || !errors.Is(err, portalloc.ErrExhausted) || !strings.Contains(err.Error(), "toward "+dsts[0].String()) {
		t.Errorf("third dial = %v; want EADDRNOTAVAIL naming %v", err, dsts[0])
	}
	// A listener cannot take a port connections hold.
	if l, err := e.st.ListenTCPAddrPort(shared, 0); !errors.Is(err, syscall.EADDRINUSE) {
		if l != nil {
			l.Close()
		}
		t.Errorf("listen on the shared port = %v; want EADDRINUSE", err)
	}
	// The kernel has closed first, so no TIME_WAIT here: the port comes
	// back once both connections are gone.
	for _, c := range conns {
		var b [1]byte
		if _, err := c.Read(b[:]); err != io.EOF {
			t.Fatalf("after CloseWrite: %v; want EOF", err)
		}
		c.Close()
	}
	waitPool(t, e.st, portalloc.TCP, "port 40000 released toward both", func(s portalloc.Snapshot) bool {
		return s.InUse == 0 && s.Connections == 0 && s.Destinations == 0
	})
}

// TestSharedUDPSourcePort: with Ports.UDP.Sharing PerDestination, two
// connected UDP sockets to two kernel sockets share the one port of the
// range, and each gets its own replies.
func TestSharedUDPSourcePort(t *testing.T) {
	cfg := rangeCfg("", "40000-40000")
	cfg.Ports.UDP.Sharing = portalloc.PerDestination
	e := newEnv(t, cfg, 0)
	var conns []*stack.UDPConn
	for i, addr := range []string{"198.18.0.1:7", "198.18.0.1:9"} {
		pc := e.kernelListenPacket(t, "udp4", addr)
		go func() {
			b := make([]byte, 1500)
			for {
				n, from, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				pc.WriteTo([]byte(fmt.Sprintf("%s from %v to %d", b[:n], from, i)), from)
			}
		}()
		c, err := e.st.DialUDPAddrPort(netip.AddrPort{}, netip.MustParseAddrPort(addr))
		if err != nil {
			t.Fatalf("dial udp %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
		if p := c.LocalAddrPort().Port(); p != 40000 {
			t.Fatalf("udp dial %s: local port %d; want 40000", addr, p)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1500)
		n, err := c.Read(b)
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		if want := fmt.Sprintf("ping from 198.18.0.2:40000 to %d", i); string(b[:n]) != want {
			t.Errorf("socket %d got %q; want %q", i, b[:n], want)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	if s := e.st.Ports()[portalloc.UDP]; s.InUse != 0 || s.Connections != 0 {
		t.Errorf("after close: %d UDP ports in use, %d connections; want 0, 0", s.InUse, s.Connections)
	}
}

// TestHoldManyThroughFewPorts holds 10,000 connections to 100 kernel
// listeners through 128 ports: 100 connections per destination, so each
// port is shared by about 78 of them. The kernel leaves them established
// in its listen backlogs, so the test holds no descriptor per connection.
// Then every connection is reset and every port must come back.
func TestHoldManyThroughFewPorts(t *testing.T) {
	const (
		dests   = 100
		perDest = 100
		workers = 8
	)
	e := newEnv(t, rangeCfg("40000-40127", ""), 0)
	// Each listener's accept queue holds its 100 connections: the
	// namespace's net.core.somaxconn (4096 by default) caps the backlog
	// package net asks for.
	var raddrs []netip.AddrPort
	for i := range dests {
		addr := netip.AddrPortFrom(kernel4.Addr(), uint16(10000+i))
		e.kernelListen(t, "tcp4", addr.String())
		raddrs = append(raddrs, addr)
	}
	conns := make([]*stack.TCPConn, dests*perDest)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for i := w; i < len(conns); i += workers {
				c, err := e.st.DialTCPAddrPort(ctx, netip.AddrPort{}, raddrs[i%dests])
				if err != nil {
					errs <- fmt.Errorf("connection %d to %v: %w", i, raddrs[i%dests], err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.SetLinger(0)
				c.Close()
			}
		}
	}()
	for err := range errs {
		t.Fatal(err)
	}
	ports := map[uint16]int{}
	tuples := map[[2]netip.AddrPort]bool{}
	for _, c := range conns {
		ports[c.LocalAddrPort().Port()]++
		k := [2]netip.AddrPort{c.LocalAddrPort(), c.RemoteAddrPort()}
		if tuples[k] {
			t.Fatalf("two connections with the 4-tuple %v", k)
		}
		tuples[k] = true
	}
	s := e.st.Ports()[portalloc.TCP]
	t.Logf("%d connections through %d ports: %d in use, %d destinations", s.Connections, len(ports), s.InUse, s.Destinations)
	if len(ports) != 128 || s.InUse != 128 || s.Connections != dests*perDest || s.Destinations != dests {
		t.Errorf("pool: %d ports used, %d in use, %d connections, %d destinations; want 128, 128, %d, %d",
			len(ports), s.InUse, s.Connections, s.Destinations, dests*perDest, dests)
	}
	for _, c := range conns {
		c.SetLinger(0) // a reset: no TIME_WAIT, the port comes back at once
		c.Close()
	}
	waitPool(t, e.st, portalloc.TCP, "every port released", func(s portalloc.Snapshot) bool {
		return s.InUse == 0 && s.Connections == 0 && s.Destinations == 0
	})
	if s := e.st.Ports()[portalloc.TCP]; s.Stats.Allocations != s.Stats.Releases {
		t.Errorf("allocations %d, releases %d", s.Stats.Allocations, s.Stats.Releases)
	}
}
