package tun

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestPipeTCPEcho runs a TCP echo between two gVisor stacks joined by a
// Pipe, over IPv4 and IPv6, at the smallest and largest MTUs too.
func TestPipeTCPEcho(t *testing.T) {
	tests := []struct {
		name   string
		mtu    int
		a, b   netip.Prefix
		nBytes int
	}{
		{"ipv4", 0, netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("198.18.0.2/24"), 1 << 20},
		{"ipv6", 0, netip.MustParsePrefix("fd00::1/64"), netip.MustParsePrefix("fd00::2/64"), 1 << 20},
		{"ipv4 mtu 576", 576, netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("198.18.0.2/24"), 256 << 10},
		{"ipv6 mtu 1280", 1280, netip.MustParsePrefix("fd00::1/64"), netip.MustParsePrefix("fd00::2/64"), 256 << 10},
		{"ipv6 mtu 65535", MaxMTU, netip.MustParsePrefix("fd00::1/64"), netip.MustParsePrefix("fd00::2/64"), 4 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPipe(tt.mtu)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			sa := newStack(t, p.A(), tt.a)
			sb := newStack(t, p.B(), tt.b)

			server := netip.AddrPortFrom(tt.b.Addr(), 7)
			stop := echo(t, listenTCP(t, sb, server))
			c := dialTCP(t, sa, server)
			exchange(t, c, tt.nBytes)
			c.Close()
			stop()
			sa.Destroy()
			sb.Destroy()
		})
	}
}

func TestPipeUDP(t *testing.T) {
	p, err := NewPipe(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, b := netip.MustParseAddrPort("198.18.0.1:5000"), netip.MustParseAddrPort("198.18.0.2:5001")
	sa := newStack(t, p.A(), netip.PrefixFrom(a.Addr(), 24))
	sb := newStack(t, p.B(), netip.PrefixFrom(b.Addr(), 24))
	la, ra := fullAddr(a), fullAddr(b)
	ca, err := gonet.DialUDP(sa, &la, &ra, protoOf(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := gonet.DialUDP(sb, &ra, nil, protoOf(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if _, err := ca.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	cb.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, from, err := cb.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "ping" || from.String() != a.String() {
		t.Errorf("got %q from %v, want %q from %v", got, from, "ping", a)
	}
}

func TestPipeMTU(t *testing.T) {
	for _, tt := range []struct {
		mtu     int
		want    uint32
		wantErr string
	}{
		{0, DefaultMTU, ""},
		{MinMTU, MinMTU, ""},
		{9000, 9000, ""},
		{MaxMTU, MaxMTU, ""},
		{MinMTU - 1, 0, "tun: invalid pipe MTU 67: want 0 (for 1500) or 68..65535"},
		{MaxMTU + 1, 0, "tun: invalid pipe MTU 65536: want 0 (for 1500) or 68..65535"},
		{-1, 0, "tun: invalid pipe MTU -1: want 0 (for 1500) or 68..65535"},
	} {
		p, err := NewPipe(tt.mtu)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("NewPipe(%d) error = %v, want %q", tt.mtu, err, tt.wantErr)
			}
			if p != nil {
				p.Close()
			}
			continue
		}
		if err != nil {
			t.Fatalf("NewPipe(%d): %v", tt.mtu, err)
		}
		if a, b := p.A().MTU(), p.B().MTU(); a != tt.want || b != tt.want {
			t.Errorf("NewPipe(%d) MTUs = %d, %d, want %d", tt.mtu, a, b, tt.want)
		}
		p.Close()
	}
}

// TestPipeClose checks that Close is idempotent, that writes fail after it,
// and that a stack destroyed before or after the pipe leaves nothing behind
// (TestMain checks goroutines and references).
func TestPipeClose(t *testing.T) {
	t.Run("stacks first", func(t *testing.T) {
		p, err := NewPipe(0)
		if err != nil {
			t.Fatal(err)
		}
		sa := newStack(t, p.A(), netip.MustParsePrefix("198.18.0.1/24"))
		sb := newStack(t, p.B(), netip.MustParsePrefix("198.18.0.2/24"))
		sa.Destroy() // closes A's queue: its forwarding goroutine ends
		sb.Destroy()
		p.Close()
		p.Close()
	})
	t.Run("pipe first", func(t *testing.T) {
		p, err := NewPipe(0)
		if err != nil {
			t.Fatal(err)
		}
		sa := newStack(t, p.A(), netip.MustParsePrefix("198.18.0.1/24"))
		newStack(t, p.B(), netip.MustParsePrefix("198.18.0.2/24"))
		p.Close()
		p.Close()
		// The stack still has its NIC, but nothing goes out any more.
		var pkts gvstack.PacketBufferList
		defer pkts.Reset()
		pkts.PushBack(gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{}))
		if n, err := p.A().WritePackets(pkts); n != 0 || err == nil {
			t.Errorf("WritePackets after Close = %d, %v; want 0, %v", n, err, &tcpip.ErrClosedForSend{})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		server := netip.MustParseAddrPort("198.18.0.2:7")
		if c, err := gonet.DialContextTCP(ctx, sa, fullAddr(server), protoOf(server.Addr())); err == nil {
			c.Close()
			t.Errorf("dial over a closed pipe succeeded")
		}
	})
}

// TestPipeDropsNonIP writes a packet whose version nibble is neither 4 nor
// 6, then a UDP datagram: the first must be dropped (and released, which
// TestMain checks), the second delivered.
func TestPipeDropsNonIP(t *testing.T) {
	p, err := NewPipe(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, b := netip.MustParseAddrPort("198.18.0.1:5000"), netip.MustParseAddrPort("198.18.0.2:5001")
	sa := newStack(t, p.A(), netip.PrefixFrom(a.Addr(), 24))
	sb := newStack(t, p.B(), netip.PrefixFrom(b.Addr(), 24))

	var pkts gvstack.PacketBufferList
	pkts.PushBack(gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		Payload: buffer.MakeWithData([]byte{0x50, 1, 2, 3, 4, 5, 6, 7}),
	}))
	n, werr := p.A().WritePackets(pkts)
	pkts.Reset()
	if n != 1 || werr != nil {
		t.Fatalf("WritePackets = %d, %v", n, werr)
	}

	la, ra := fullAddr(a), fullAddr(b)
	cb, err := gonet.DialUDP(sb, &ra, nil, protoOf(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	ca, err := gonet.DialUDP(sa, &la, &ra, protoOf(a.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	if _, err := ca.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	cb.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	if _, _, err := cb.ReadFrom(buf); err != nil {
		t.Fatal(err)
	}
	// The pipe is FIFO, so the bad packet was handled before the datagram.
	if got := sb.Stats().IP.PacketsReceived.Value(); got != 1 {
		t.Errorf("stack B received %d IP packets, want exactly 1 (the datagram)", got)
	}
}
