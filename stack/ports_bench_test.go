package stack

import (
	"context"
	"io"
	"net/netip"
	"testing"
)

// BenchmarkPortLifecycle measures a socket's whole port lifecycle on a
// loopback stack, per socket: take a port from the pool and bind it,
// close, and give the port back. For TCP the peer (a listener of the same
// stack) closes first, so that the port comes back after the FIN
// exchange, from the reaper, without TIME_WAIT.
func BenchmarkPortLifecycle(b *testing.B) {
	newStack := func(b *testing.B) *Stack {
		st, err := New(Config{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	b.Run("tcp-dial-close", func(b *testing.B) {
		st := newStack(b)
		l, err := st.ListenTCPAddrPort(netip.MustParseAddrPort("127.0.0.1:7"), 0)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := l.AcceptTCP()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		b.Cleanup(func() { l.Close(); <-done })
		ctx := context.Background()
		buf := make([]byte, 1)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			c, err := st.DialTCPAddrPort(ctx, netip.AddrPort{}, l.AddrPort())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Read(buf); err != io.EOF {
				b.Fatalf("read: %v; want EOF", err)
			}
			c.Close()
		}
	})
	udpAddr, pingAddr := netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddr("127.0.0.1")
	for _, bc := range []struct {
		name string
		open func(st *Stack) (io.Closer, error)
	}{
		{"udp-listen-close", func(st *Stack) (io.Closer, error) {
			return st.ListenUDPAddrPort(udpAddr)
		}},
		{"ping-listen-close", func(st *Stack) (io.Closer, error) {
			return st.ListenPingAddr("ping4", pingAddr)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st := newStack(b)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := bc.open(st)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
