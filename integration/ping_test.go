//go:build linux

package integration

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

type pingFamily struct {
	network    string
	proto      int // IANA protocol number of ICMP in the family
	request    icmp.Type
	reply      icmp.Type
	rawNet     string // the kernel's raw socket network
	kernel     netip.Addr
	kernelAlt  netip.Prefix // a second kernel address
	rawAddress string
}

var pingFamilies = []pingFamily{
	{"ping4", 1, ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply, "ip4:icmp", kernel4.Addr(), netip.MustParsePrefix("198.18.0.5/24"), "0.0.0.0"},
	{"ping6", 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, "ip6:ipv6-icmp", kernel6.Addr(), netip.MustParsePrefix("fd00:18::5/64"), "::"},
}

func (f pingFamily) echo(t *testing.T, seq int, data []byte) []byte {
	t.Helper()
	b, err := (&icmp.Message{Type: f.request, Body: &icmp.Echo{ID: 1, Seq: seq, Data: data}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f pingFamily) parse(t *testing.T, b []byte) (icmp.Type, *icmp.Echo) {
	t.Helper()
	m, err := icmp.ParseMessage(f.proto, b)
	if err != nil {
		t.Fatalf("parsing ICMP message %x: %v", b, err)
	}
	e, _ := m.Body.(*icmp.Echo)
	return m.Type, e
}

// wireID reads the kernel's raw ICMP socket until it has seen an echo
// request with sequence number seq, and returns its identifier.
func (f pingFamily) wireID(t *testing.T, raw net.PacketConn, seq int) int {
	t.Helper()
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := raw.ReadFrom(buf)
		if err != nil {
			t.Fatalf("kernel raw socket: no echo request with seq %d: %v", seq, err)
		}
		typ, e := f.parse(t, buf[:n])
		if typ == f.request && e != nil && e.Seq == seq {
			return e.ID
		}
	}
}

// TestPingKernel pings the kernel over the TUN: the identifiers the kernel
// sees on the wire come from the ICMP pool in order, wrap and are reused
// after Close, and each reply comes back to its socket.
func TestPingKernel(t *testing.T) {
	for _, f := range pingFamilies {
		t.Run(f.network, func(t *testing.T) {
			var cfg stack.Config
			cfg.Ports.ICMP.Range = portalloc.Range{First: 41000, Last: 41002}
			e := newEnv(t, cfg, 0)
			waitLocalRoute(t, e, f.kernel)
			raw := e.kernelListenPacket(t, f.rawNet, f.rawAddress)
			var wire, ids []int
			var conns []*stack.PingConn
			seq := 100
			ping := func(c *stack.PingConn) {
				t.Helper()
				seq++
				data := bytes.Repeat([]byte{byte(seq)}, 56)
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(f.echo(t, seq, data)); err != nil {
					t.Fatal(err)
				}
				wire = append(wire, f.wireID(t, raw, seq))
				buf := make([]byte, 1500)
				n, err := c.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				typ, echo := f.parse(t, buf[:n])
				if typ != f.reply || echo.ID != int(c.ID()) || echo.Seq != seq || !bytes.Equal(echo.Data, data) {
					t.Fatalf("reply %v id %d seq %d (%d bytes data); want %v id %d seq %d (56 bytes)", typ, echo.ID, echo.Seq, len(echo.Data), f.reply, c.ID(), seq)
				}
			}
			dial := func() *stack.PingConn {
				t.Helper()
				c, err := e.st.DialContext(context.Background(), f.network, f.kernel.String())
				if err != nil {
					t.Fatal(err)
				}
				pc := c.(*stack.PingConn)
				ids = append(ids, int(pc.ID()))
				return pc
			}
			for range 3 {
				conns = append(conns, dial())
			}
			// Every socket has its reply, even with all three open.
			for i := len(conns) - 1; i >= 0; i-- {
				ping(conns[i])
			}
			conns[0].Close()
			c := dial() // wraps to 41000, just freed
			ping(c)
			c.Close()
			conns[1].Close()
			conns[2].Close()
			if diff := cmp.Diff([]int{41000, 41001, 41002, 41000}, ids); diff != "" {
				t.Errorf("identifiers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]int{41002, 41001, 41000, 41000}, wire); diff != "" {
				t.Errorf("identifiers on the wire (-want +got):\n%s", diff)
			}
			if n := e.st.Allocator().Pool(portalloc.ICMP).InUse(); n != 0 {
				t.Errorf("%d identifiers held after Close", n)
			}
		})
	}
}

// TestPingListenPacketKernel pings two kernel addresses from one
// unconnected socket, and checks that a second socket does not see the
// first one's replies.
func TestPingListenPacketKernel(t *testing.T) {
	for _, f := range pingFamilies {
		t.Run(f.network, func(t *testing.T) {
			e := newEnv(t, stack.Config{}, 0)
			link, err := e.ns.Handle().LinkByName(e.dev.Name())
			if err != nil {
				t.Fatal(err)
			}
			alt := &netlink.Addr{IPNet: &net.IPNet{IP: f.kernelAlt.Addr().AsSlice(), Mask: net.CIDRMask(f.kernelAlt.Bits(), f.kernelAlt.Addr().BitLen())}}
			if f.network == "ping6" {
				alt.Flags = unix.IFA_F_NODAD
			}
			if err := e.ns.Handle().AddrAdd(link, alt); err != nil {
				t.Fatal(err)
			}
			waitLocalRoute(t, e, f.kernel)
			waitLocalRoute(t, e, f.kernelAlt.Addr())
			pc, err := e.st.ListenPacket(f.network, "")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			other, err := e.st.ListenPacket(f.network, "")
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			pc.SetDeadline(time.Now().Add(5 * time.Second))
			got := map[string]int{}
			for i, dst := range []netip.Addr{f.kernel, f.kernelAlt.Addr()} {
				if _, err := pc.WriteTo(f.echo(t, i, []byte("x")), &stack.PingAddr{Addr: dst}); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 1500)
			for range 2 {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatalf("replies so far (sender: seq) %v: %v", got, err)
				}
				typ, echo := f.parse(t, buf[:n])
				if typ != f.reply || echo.ID != int(pc.(*stack.PingConn).ID()) {
					t.Errorf("reply %v id %d, want %v id %d", typ, echo.ID, f.reply, pc.(*stack.PingConn).ID())
				}
				got[from.String()] = echo.Seq
			}
			want := map[string]int{f.kernel.String(): 0, f.kernelAlt.Addr().String(): 1}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("replies by sender (-want +got):\n%s", diff)
			}
			// The other socket got none of them: its next read is its own
			// reply.
			other.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := other.WriteTo(f.echo(t, 9, nil), &stack.PingAddr{Addr: f.kernel}); err != nil {
				t.Fatal(err)
			}
			n, _, err := other.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			if _, echo := f.parse(t, buf[:n]); echo.Seq != 9 || echo.ID != int(other.(*stack.PingConn).ID()) {
				t.Errorf("other socket read seq %d id %d, want its own seq 9 id %d", echo.Seq, echo.ID, other.(*stack.PingConn).ID())
			}
		})
	}
}

// waitLocalRoute waits (bounded) until the kernel has the local route of
// its address a. Linux installs it from a work queue after the address is
// added, even without duplicate address detection; until then it drops
// packets to a as not its own.
func waitLocalRoute(t *testing.T, e *env, a netip.Addr) {
	t.Helper()
	filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	family := netlink.FAMILY_V4
	if a.Is6() {
		family = netlink.FAMILY_V6
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rs, err := e.ns.Handle().RouteListFiltered(family, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kernel has no local route for %s after 5s", a)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
