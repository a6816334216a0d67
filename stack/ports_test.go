package stack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ustacknet/ustack/portalloc"
)

// TestPortReleasedFromNotification: with the reaper's periodic sweep
// pushed out of reach, a closed connection's port still comes back, from
// gVisor's hang-up notification, whichever side closes first (ours after
// a short TIME_WAIT).
func TestPortReleasedFromNotification(t *testing.T) {
	saved := sweepInterval
	sweepInterval = time.Hour
	t.Cleanup(func() { sweepInterval = saved })
	for _, tc := range []struct {
		name        string
		serverFirst bool
	}{
		{"server closes first", true},
		{"client closes first, then TIME_WAIT", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newLoopback(t, "40000-40000", "", func(c *Config) { c.TimeWait = 10 * time.Millisecond })
			l, err := st.ListenTCPAddrPort(netip.MustParseAddrPort("127.0.0.1:7"), 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			serveTCP(t, l, func(c net.Conn) {
				defer c.Close()
				if !tc.serverFirst {
					io.Copy(io.Discard, c) // until the client's FIN
				}
			})
			for i := range 3 { // the one port, three times over
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, err := st.DialTCPAddrPort(ctx, netip.AddrPort{}, l.AddrPort())
				cancel()
				if err != nil {
					t.Fatalf("dial #%d: %v", i, err)
				}
				if tc.serverFirst {
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Read(make([]byte, 1)); err != io.EOF {
						t.Fatalf("read #%d: %v; want EOF", i, err)
					}
				}
				c.Close()
				waitInUse(t, st, portalloc.TCP, 0)
			}
		})
	}
}
