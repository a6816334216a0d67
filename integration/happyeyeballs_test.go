//go:build linux

package integration

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

// serveDualDNS answers dual.test with kernel4 (A) and kernel6 (AAAA) on
// pc, in the kernel's namespace, until the test ends.
func serveDualDNS(t *testing.T, pc net.PacketConn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:n]) != nil || len(m.Questions) != 1 {
				continue
			}
			q := m.Questions[0]
			m.Header.Response = true
			h := dnsmessage.ResourceHeader{Name: q.Name, Type: q.Type, Class: dnsmessage.ClassINET, TTL: 300}
			switch {
			case q.Name.String() != "dual.test.":
				m.Header.RCode = dnsmessage.RCodeNameError
			case q.Type == dnsmessage.TypeA:
				m.Answers = []dnsmessage.Resource{{Header: h, Body: &dnsmessage.AResource{A: kernel4.Addr().As4()}}}
			case q.Type == dnsmessage.TypeAAAA:
				m.Answers = []dnsmessage.Resource{{Header: h, Body: &dnsmessage.AAAAResource{AAAA: kernel6.Addr().As16()}}}
			}
			if out, err := m.Pack(); err == nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
}

// TestHappyEyeballs dials a name with an A and an AAAA record while the
// kernel's answers to one family go into a blackhole (a route that
// silently drops): the connection over the other family completes within
// the fallback delay plus 100 ms, and the losing attempt's port goes back
// to the pool.
func TestHappyEyeballs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		drop     netip.Addr // the stack's address the kernel cannot reach
		dns      netip.Addr // where the stack asks (not the dropped family)
		wantFrom netip.Addr // the family that must win
	}{
		// RFC 6724 puts IPv4 before a ULA IPv6 address, so the IPv4 attempt
		// goes first: a dead IPv6 never holds it up.
		{"IPv6 drops, IPv4 first", stack6.Addr(), kernel4.Addr(), stack4.Addr()},
		// The first family is the dead one: the fallback must win.
		{"IPv4 drops, IPv6 falls back", stack4.Addr(), kernel6.Addr(), stack6.Addr()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg stack.Config
			cfg.DNS = []netip.AddrPort{netip.AddrPortFrom(tc.dns, 53)}
			cfg.Ports.TCP.Range = portalloc.Range{First: 42000, Last: 42009}
			e := newEnv(t, cfg, 0)
			waitLocalRoute(t, e, kernel4.Addr())
			waitLocalRoute(t, e, kernel6.Addr())
			serveDualDNS(t, e.kernelListenPacket(t, "udp", net.JoinHostPort(tc.dns.String(), "53")))
			l := e.kernelListen(t, "tcp", "[::]:0")
			port := l.Addr().(*net.TCPAddr).Port
			accepted := make(chan net.Conn, 4)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						close(accepted)
						return
					}
					accepted <- c
				}
			}()
			t.Cleanup(func() {
				l.Close()
				for c := range accepted {
					c.Close()
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// Warm the cache, so that the timing below is the dial's.
			addrs, err := e.st.LookupNetIP(ctx, "dual.test")
			if err != nil || len(addrs) != 2 || !addrs[0].Is4() {
				t.Fatalf("LookupNetIP(dual.test) = %v, %v; want the IPv4 address first, then the IPv6 one", addrs, err)
			}
			bits := 128
			if tc.drop.Is4() {
				bits = 32
			}
			dst := &net.IPNet{IP: tc.drop.AsSlice(), Mask: net.CIDRMask(bits, bits)}
			if err := e.ns.Handle().RouteAdd(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			c, err := e.st.DialContext(ctx, "tcp", net.JoinHostPort("dual.test", itoa(port)))
			el := time.Since(start)
			if err != nil {
				t.Fatalf("dial after %v: %v", el, err)
			}
			defer c.Close()
			if from := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); from != tc.wantFrom {
				t.Errorf("connected from %s, want %s", from, tc.wantFrom)
			}
			if limit := stack.DefaultHappyEyeballsDelay + 100*time.Millisecond; el > limit {
				t.Errorf("dial took %v, more than the fallback delay plus 100 ms (%v)", el, limit)
			}
			// The losing attempt is abandoned: only the winner holds a port.
			pool := e.st.Allocator().Pool(portalloc.TCP)
			deadline := time.Now().Add(5 * time.Second)
			for pool.InUse() != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("%d TCP ports held 5 s after the dial, want 1 (the winner's)", pool.InUse())
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// TestResolverKernelDNS resolves through Stack.Resolver, a package net
// resolver whose queries go through the stack and the TUN device to a DNS
// server in the kernel's namespace, with a search domain.
func TestResolverKernelDNS(t *testing.T) {
	var cfg stack.Config
	cfg.DNS = []netip.AddrPort{netip.AddrPortFrom(kernel4.Addr(), 53)}
	cfg.DNSSearch = []string{"test"}
	e := newEnv(t, cfg, 0)
	serveDualDNS(t, e.kernelListenPacket(t, "udp4", net.JoinHostPort(kernel4.Addr().String(), "53")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := e.st.Resolver().LookupNetIP(ctx, "ip", "dual")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	if len(s) != 2 || !(s[0] == "198.18.0.1" && s[1] == "fd00:18::1" || s[1] == "198.18.0.1" && s[0] == "fd00:18::1") {
		t.Errorf("Resolver().LookupNetIP(dual) = %v, want 198.18.0.1 and fd00:18::1", s)
	}
	if _, err := e.st.Resolver().LookupHost(ctx, "nowhere"); err == nil {
		t.Errorf("LookupHost(nowhere) succeeded")
	}
}
