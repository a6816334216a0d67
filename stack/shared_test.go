package stack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/portalloc"
)

// TestDialSharesPortAcrossDestinations: by default a dial's port is held
// per destination, so a one-port range serves one connection to each of
// two listeners; with Exclusive sharing the second dial fails.
func TestDialSharesPortAcrossDestinations(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sharing    portalloc.Sharing
		wantSecond error // nil: the second dial succeeds on the same port
	}{
		{"default", portalloc.SharingDefault, nil},
		{"per-destination", portalloc.PerDestination, nil},
		{"exclusive", portalloc.Exclusive, syscall.EADDRNOTAVAIL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newLoopback(t, "40000-40000", "", func(c *Config) { c.Ports.TCP.Sharing = tc.sharing })
			var dsts []netip.AddrPort
			for _, a := range []string{"127.0.0.1:7", "127.0.0.1:9"} {
				l, err := st.ListenTCPAddrPort(netip.MustParseAddrPort(a), 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				serveTCP(t, l, func(c net.Conn) {
					defer c.Close()
					io.Copy(c, c)
				})
				dsts = append(dsts, l.AddrPort())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			first, err := st.DialTCPAddrPort(ctx, netip.AddrPort{}, dsts[0])
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			second, err := st.DialTCPAddrPort(ctx, netip.AddrPort{}, dsts[1])
			if tc.wantSecond != nil {
				if !errors.Is(err, tc.wantSecond) {
					t.Fatalf("second dial = %v; want %v", err, tc.wantSecond)
				}
				return
			}
			if err != nil {
				t.Fatalf("second dial: %v", err)
			}
			defer second.Close()
			if a, b := first.LocalAddrPort(), second.LocalAddrPort(); a != b || a.Port() != 40000 {
				t.Fatalf("local addresses %v and %v; want both 127.0.0.1:40000", a, b)
			}
			for i, c := range []*TCPConn{first, second} {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				msg := []byte{byte('a' + i)}
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, 1)
				if _, err := io.ReadFull(c, got); err != nil || got[0] != msg[0] {
					t.Fatalf("connection %d echoed %q, %v; want %q", i, got, err, msg)
				}
			}
			s := st.Ports()[portalloc.TCP]
			if s.InUse != 1 || s.Connections != 2 || s.Destinations != 2 {
				t.Errorf("pool: %d in use, %d connections, %d destinations; want 1, 2, 2", s.InUse, s.Connections, s.Destinations)
			}
		})
	}
}
