package stack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/portalloc"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// echoRequest marshals an echo request for network ("ping4" or "ping6").
func echoRequest(t testing.TB, network string, seq int, data []byte) []byte {
	t.Helper()
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if network == "ping6" {
		typ = ipv6.ICMPTypeEchoRequest
	}
	b, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: 0xbeef, Seq: seq, Data: data}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseReply parses an echo reply of network.
func parseReply(t testing.TB, network string, b []byte) *icmp.Echo {
	t.Helper()
	proto, want := 1, icmp.Type(ipv4.ICMPTypeEchoReply)
	if network == "ping6" {
		proto, want = 58, ipv6.ICMPTypeEchoReply
	}
	m, err := icmp.ParseMessage(proto, b)
	if err != nil {
		t.Fatalf("parsing reply %x: %v", b, err)
	}
	if m.Type != want {
		t.Fatalf("reply type %v, want %v", m.Type, want)
	}
	return m.Body.(*icmp.Echo)
}

func newPingLoopback(t *testing.T, r string) *Stack {
	return newLoopback(t, "", "", func(c *Config) { c.Ports.ICMP.Range = mustRange(t, r) })
}

// TestPingIdentifiersFromPool checks that echo identifiers come from the
// ICMP pool sequentially, wrap, are reused after Close, and that the
// replies carry them (loopback: gVisor answers the echo itself).
func TestPingIdentifiersFromPool(t *testing.T) {
	for _, network := range []string{"ping4", "ping6"} {
		t.Run(network, func(t *testing.T) {
			st := newPingLoopback(t, "40000-40002")
			host := "127.0.0.1"
			if network == "ping6" {
				host = "::1"
			}
			var ids []uint16
			var conns []net.Conn
			for i := range 4 {
				c, err := st.DialContext(context.Background(), network, host)
				if i == 3 {
					// The range is full.
					if !errors.Is(err, portalloc.ErrExhausted) || !errors.Is(err, syscall.EADDRNOTAVAIL) {
						t.Fatalf("fourth dial = %v, want exhaustion", err)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				pc := c.(*PingConn)
				ids = append(ids, pc.ID())
				c.SetDeadline(time.Now().Add(5 * time.Second))
				data := []byte("hello " + network)
				if _, err := c.Write(echoRequest(t, network, 7+i, data)); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 1500)
				n, err := c.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				e := parseReply(t, network, buf[:n])
				if e.ID != int(pc.ID()) || e.Seq != 7+i || !bytes.Equal(e.Data, data) {
					t.Errorf("reply id %d seq %d data %q; want id %d seq %d data %q", e.ID, e.Seq, e.Data, pc.ID(), 7+i, data)
				}
				if la := c.LocalAddr().(*PingAddr); la.ID != pc.ID() || la.Network() != network {
					t.Errorf("LocalAddr = %+v (%s)", la, la.Network())
				}
			}
			// Close the middle one: the cursor wraps to 40000, which is
			// busy, then takes the freed 40001.
			conns[1].Close()
			c, err := st.DialContext(context.Background(), network, host)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, c.(*PingConn).ID())
			c.Close()
			conns[0].Close()
			conns[2].Close()
			if diff := cmp.Diff([]uint16{40000, 40001, 40002, 40001}, ids); diff != "" {
				t.Errorf("identifiers (-want +got):\n%s", diff)
			}
			if n := inUse(st, portalloc.ICMP); n != 0 {
				t.Errorf("%d identifiers still held after Close", n)
			}
			s := st.Allocator().Pool(portalloc.ICMP).Snapshot()
			if s.Stats.Wraps != 1 {
				t.Errorf("wraps = %d, want 1", s.Stats.Wraps)
			}
		})
	}
}

// TestPingPerDestinationPool checks echo sockets on a per-destination
// ICMP pool: each dial holds its identifier toward its destination, and
// Close gives it back toward that destination, leaving none held.
func TestPingPerDestinationPool(t *testing.T) {
	st := newLoopback(t, "", "", func(c *Config) {
		c.Ports.ICMP.Range = mustRange(t, "40000-40001")
		c.Ports.ICMP.Sharing = portalloc.PerDestination
	})
	var ids []uint16
	var conns []net.Conn
	for i, host := range []string{"127.0.0.1", "127.0.0.2"} {
		c, err := st.DialContext(context.Background(), "ping4", host)
		if err != nil {
			t.Fatalf("dial %s: %v", host, err)
		}
		conns = append(conns, c)
		ids = append(ids, c.(*PingConn).ID())
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(echoRequest(t, "ping4", i, []byte("x"))); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if e := parseReply(t, "ping4", buf[:n]); e.ID != int(ids[i]) || e.Seq != i {
			t.Errorf("reply from %s: id %d seq %d, want id %d seq %d", host, e.ID, e.Seq, ids[i], i)
		}
	}
	if diff := cmp.Diff([]uint16{40000, 40001}, ids); diff != "" {
		t.Errorf("identifiers (-want +got):\n%s", diff)
	}
	for _, c := range conns {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if n := inUse(st, portalloc.ICMP); n != 0 {
		t.Errorf("%d identifiers still held after Close; snapshot %+v", n, st.Allocator().Pool(portalloc.ICMP).Snapshot())
	}
}

// TestPingListenPacket checks an unconnected echo socket with an explicit
// identifier, and that a second socket cannot take it.
func TestPingListenPacket(t *testing.T) {
	st := newPingLoopback(t, "40000-40009")
	pc, err := st.ListenPacket("ping4", "127.0.0.1:40005")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if id := pc.(*PingConn).ID(); id != 40005 {
		t.Errorf("ID = %d, want 40005", id)
	}
	if _, err := st.ListenPacket("ping4", "127.0.0.1:40005"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second socket on identifier 40005 = %v, want EADDRINUSE", err)
	}
	pc.SetDeadline(time.Now().Add(5 * time.Second))
	for i, dst := range []string{"127.0.0.1", "127.0.0.2"} {
		if _, err := pc.WriteTo(echoRequest(t, "ping4", i, nil), &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if from.String() != dst || from.Network() != "ping4" {
			t.Errorf("reply from %s (%s), want %s", from, from.Network(), dst)
		}
		if e := parseReply(t, "ping4", buf[:n]); e.ID != 40005 || e.Seq != i {
			t.Errorf("reply id %d seq %d, want 40005, %d", e.ID, e.Seq, i)
		}
	}
	// A read with nothing to read ends at the deadline.
	pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := pc.ReadFrom(make([]byte, 10)); !errors.Is(err, timeoutErr) {
		t.Errorf("read past the deadline = %v", err)
	}
	pc.Close()
	if _, _, err := pc.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after Close = %v", err)
	}
	if n := inUse(st, portalloc.ICMP); n != 0 {
		t.Errorf("%d identifiers held after Close", n)
	}
}

func TestPingBadInput(t *testing.T) {
	st := newPingLoopback(t, "40000-40009")
	ctx := context.Background()
	for _, tc := range []struct {
		name, network, addr, want string
		listen                    bool // ListenPacket rather than DialContext
	}{
		{name: "unknown network", network: "icmp", addr: "127.0.0.1", want: "unknown network icmp; want tcp, tcp4, tcp6, udp, udp4, udp6, ping, ping4 or ping6"},
		{name: "multicast v4", network: "ping4", addr: "224.0.0.1", want: "ping to a multicast address is not supported; want a unicast address"},
		{name: "multicast v6", network: "ping6", addr: "ff02::1", want: "ping to a multicast address is not supported; want a unicast address"},
		{name: "broadcast", network: "ping4", addr: "255.255.255.255", want: "ping to the broadcast address is not supported"},
		{name: "unspecified", network: "ping4", addr: "0.0.0.0", want: "no destination address"},
		{name: "port given", network: "ping4", addr: "127.0.0.1:80", want: "a ping address is a host without a port"},
		{name: "wrong family", network: "ping6", addr: "127.0.0.1", want: "not an IPv6 address"},
		{name: "name without DNS", network: "ping4", addr: "example.test", want: "no DNS server configured"},
		{name: "listen ping without family", network: "ping", want: "ListenPacket wants ping4 or ping6", listen: true},
		{name: "listen unknown network", network: "raw", want: "unknown network raw; want udp, udp4, udp6, ping4 or ping6", listen: true},
		{name: "listen bad identifier", network: "ping4", addr: "127.0.0.1:70000", want: "invalid echo identifier (want 0-65535)", listen: true},
		{name: "listen name", network: "ping4", addr: "localhost", want: "want a literal IP address", listen: true},
		{name: "listen multicast local", network: "ping4", addr: "224.0.0.1", want: "local address is multicast", listen: true},
		{name: "listen foreign local", network: "ping4", addr: "192.0.2.1", want: "cannot assign requested address", listen: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c io.Closer
			var err error
			if tc.listen {
				c, err = st.ListenPacket(tc.network, tc.addr)
			} else {
				c, err = st.DialContext(ctx, tc.network, tc.addr)
			}
			if err == nil {
				c.Close()
				t.Fatalf("succeeded; want an error saying %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
	c, err := st.DialContext(ctx, "ping4", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		name string
		msg  []byte
		want string
	}{
		{"short", []byte{8, 0, 0}, "message of 3 bytes is too short: want an ICMPv4 echo request (type 8, code 0) of at least 8 bytes"},
		{"echo reply", []byte{0, 0, 0, 0, 0, 0, 0, 0}, "ICMP type 0 code 0: want an ICMPv4 echo request (type 8, code 0)"},
		{"v6 echo on v4", echoRequest(t, "ping6", 1, nil), "ICMP type 128 code 0"},
	} {
		t.Run("write "+tc.name, func(t *testing.T) {
			_, err := c.Write(tc.msg)
			if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Write = %v; want EINVAL saying %q", err, tc.want)
			}
		})
	}
	pc, err := st.ListenPacket("ping4", "")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.WriteTo(echoRequest(t, "ping4", 1, nil), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err == nil || !strings.Contains(err.Error(), "want a *stack.PingAddr or a *net.IPAddr") {
		t.Errorf("WriteTo a UDP address = %v", err)
	}
	if _, err := pc.WriteTo(echoRequest(t, "ping4", 1, nil), &PingAddr{Addr: netip.MustParseAddr("224.0.0.1")}); err == nil || !strings.Contains(err.Error(), "multicast") {
		t.Errorf("WriteTo multicast = %v", err)
	}
	if _, err := pc.(*PingConn).Write(echoRequest(t, "ping4", 1, nil)); !errors.Is(err, syscall.EDESTADDRREQ) {
		t.Errorf("Write on an unconnected socket = %v, want EDESTADDRREQ", err)
	}
}

// TestPingStackClose checks that closing the stack unblocks a reader and
// releases its identifier.
func TestPingStackClose(t *testing.T) {
	st, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := st.ListenPacket("ping6", "")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := pc.ReadFrom(make([]byte, 10))
		done <- err
	}()
	st.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("read blocked over Close = %v", err)
	}
	if n := inUse(st, portalloc.ICMP); n != 0 {
		t.Errorf("%d identifiers held after Close", n)
	}
	if _, err := st.ListenPacket("ping4", ""); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listen after Close = %v", err)
	}
}
