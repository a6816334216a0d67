package packetio_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/packetio"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
)

var (
	addrA4 = netip.MustParsePrefix("198.18.20.1/24")
	addrB4 = netip.MustParsePrefix("198.18.20.2/24")
	addrA6 = netip.MustParsePrefix("fd00:20::1/64")
	addrB6 = netip.MustParsePrefix("fd00:20::2/64")
)

// pump copies packets from one link's packet side into another's, as a
// transport would, until either link closes.
func pump(wg *sync.WaitGroup, from, to *packetio.Link) {
	defer wg.Done()
	const batch = 64
	bufs := make([][]byte, batch)
	pkts := make([][]byte, batch)
	sizes := make([]int, batch)
	for i := range bufs {
		bufs[i] = make([]byte, from.MTU())
	}
	for {
		n, err := from.ReadPackets(bufs, sizes, 0)
		if err != nil {
			return
		}
		for i := range n {
			pkts[i] = bufs[i][:sizes[i]]
		}
		if _, err := to.WritePackets(pkts[:n], 0); err != nil {
			return
		}
	}
}

// pair is two ustack stacks whose packetio links are wired together by two
// pumps, so that no byte crosses anything but this package.
type pair struct {
	a, b *stack.Stack
	la   *packetio.Link
	wg   sync.WaitGroup
}

func newPair(t testing.TB, cfgA stack.Config, mtu int) *pair {
	t.Helper()
	la, err := packetio.New(packetio.Config{MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := packetio.New(packetio.Config{MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{la: la}
	cfgA.Link, cfgA.Addrs = la.LinkEndpoint(), []netip.Prefix{addrA4, addrA6}
	if p.a, err = stack.New(cfgA); err != nil {
		t.Fatal(err)
	}
	if p.b, err = stack.New(stack.Config{Link: lb.LinkEndpoint(), Addrs: []netip.Prefix{addrB4, addrB6}}); err != nil {
		t.Fatal(err)
	}
	p.wg.Add(2)
	go pump(&p.wg, la, lb)
	go pump(&p.wg, lb, la)
	t.Cleanup(p.close)
	return p
}

// close closes both stacks, which close their links, which stops the
// pumps.
func (p *pair) close() {
	p.a.Close()
	p.b.Close()
	p.wg.Wait()
}

// echo serves l: every connection gets back what it sends.
func echo(t testing.TB, l net.Listener) {
	testnet.Serve(t, l, func(c net.Conn) { io.Copy(c, c) })
}

// TCP and UDP through two stacks over packetio links, over IPv4 and IPv6:
// data arrives intact, the dialer's ports are sequential from its range,
// and closing both stacks leaves no goroutine or packet behind (TestMain).
func TestStacksOverLinks(t *testing.T) {
	var cfg stack.Config
	cfg.Ports.TCP.Range = portalloc.Range{First: 40000, Last: 40009}
	p := newPair(t, cfg, 1500)
	l, err := p.b.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, l)
	const size = 4 << 20
	var ports []uint16
	for _, dst := range []string{"198.18.20.2:7", "[fd00:20::2]:7"} {
		t.Run(dst, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := p.a.DialContext(ctx, "tcp", dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ports = append(ports, c.(*stack.TCPConn).LocalAddrPort().Port())
			c.SetDeadline(time.Now().Add(time.Minute))
			data := make([]byte, size)
			rand.NewChaCha8([32]byte{1}).Read(data)
			go func() {
				c.Write(data)
				c.(*stack.TCPConn).CloseWrite()
			}()
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil || n != size {
				t.Fatalf("echo: %d bytes, %v; want %d", n, err, size)
			}
			if [32]byte(h.Sum(nil)) != sha256.Sum256(data) {
				t.Fatal("echoed data differs")
			}
		})
	}
	if diff := cmp.Diff([]uint16{40000, 40001}, ports); diff != "" {
		t.Errorf("source ports (-want +got):\n%s", diff)
	}

	pc, err := p.b.ListenPacket("udp", ":9")
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeUDPEcho(t, pc)
	for _, dst := range []string{"198.18.20.2:9", "[fd00:20::2]:9"} {
		c, err := p.a.Dial("udp", dst)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("ping " + dst))
		b := make([]byte, 100)
		n, err := c.Read(b)
		c.Close()
		if err != nil || string(b[:n]) != "ping "+dst {
			t.Fatalf("UDP echo via %s: %q, %v", dst, b[:n], err)
		}
	}
}

// Closing a stack closes its link: the packet side's blocked read returns
// ErrClosed at once.
func TestStackCloseClosesLink(t *testing.T) {
	l, err := packetio.New(packetio.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.New(stack.Config{Link: l.LinkEndpoint(), Addrs: []netip.Prefix{addrA4}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.ReadPackets([][]byte{make([]byte, 1500)}, []int{0}, 0)
		done <- err
	}()
	testnet.WaitFor(t, 5*time.Second, "ReadPackets to block", testnet.Blocked(1, "github.com/ustacknet/ustack/packetio.(*Link).read"))
	st.Close()
	select {
	case err := <-done:
		if !errors.Is(err, packetio.ErrClosed) {
			t.Fatalf("read after stack Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still blocked 5s after the stack closed")
	}
}

// Closing the link under a live stack removes it from the stack: dials
// fail at once instead of timing out, and the stack still closes cleanly.
func TestLinkCloseUnderStack(t *testing.T) {
	l, err := packetio.New(packetio.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.New(stack.Config{Link: l.LinkEndpoint(), Addrs: []netip.Prefix{addrA4}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := st.DialContext(ctx, "tcp", "198.18.20.2:80"); err == nil {
		t.Fatal("dial over a closed link succeeded")
	} else if time.Since(start) > time.Second {
		t.Fatalf("dial over a closed link took %v (%v); want a prompt error", time.Since(start), err)
	}
}

// BenchmarkTCPOverLinks measures a bulk TCP transfer between two ustack
// stacks over two links and two pumps, IPv4, MTU 1500. Its allocs/op are
// the stacks', per 64 KiB written.
func BenchmarkTCPOverLinks(b *testing.B) {
	p := newPair(b, stack.Config{}, 1500)
	l, err := p.b.Listen("tcp", ":9")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		done <- n
	}()
	c, err := p.a.DialContext(context.Background(), "tcp", "198.18.20.2:9")
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if n := <-done; n != int64(b.N*len(chunk)) {
		b.Fatalf("received %d bytes, want %d", n, b.N*len(chunk))
	}
	b.StopTimer()
}
