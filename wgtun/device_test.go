package wgtun_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/wgtun"
	"github.com/ustacknet/ustack/wgtun/wgtest"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	addrA4 = netip.MustParsePrefix("198.18.30.2/24")
	addrB4 = netip.MustParsePrefix("198.18.30.1/24")
	addrA6 = netip.MustParsePrefix("fd00:30::2/64")
	addrB6 = netip.MustParsePrefix("fd00:30::1/64")
)

func TestConfigValidate(t *testing.T) {
	addrs := []netip.Prefix{addrA4}
	for _, tc := range []struct {
		name string
		cfg  wgtun.Config
		want string // substring of New's error; "" for valid
	}{
		{"minimal", wgtun.Config{Stack: stack.Config{Addrs: addrs}}, ""},
		{"full", wgtun.Config{Stack: stack.Config{Addrs: addrs}, MTU: 1280, BatchSize: 1, QueueLen: 10, Name: "wg0", VerifyChecksums: true}, ""},
		{"no addrs", wgtun.Config{}, "Config.Stack.Addrs: want at least one tunnel address"},
		{"link", wgtun.Config{Stack: stack.Config{Addrs: addrs, Link: channel.New(1, 1500, "")}}, "Config.Stack.Link must be nil"},
		{"stack mtu", wgtun.Config{Stack: stack.Config{Addrs: addrs, MTU: 1280}}, "Config.Stack.MTU 1280: must be 0; set Config.MTU"},
		{"mtu low", wgtun.Config{Stack: stack.Config{Addrs: addrs}, MTU: 10}, "Config.MTU 10: want 0 (for 1420) or 68-65503"},
		{"mtu high", wgtun.Config{Stack: stack.Config{Addrs: addrs}, MTU: 65504}, "Config.MTU 65504"},
		{"mtu v6", wgtun.Config{Stack: stack.Config{Addrs: []netip.Prefix{addrA6}}, MTU: 1000}, "IPv6 needs at least 1280"},
		{"batch", wgtun.Config{Stack: stack.Config{Addrs: addrs}, BatchSize: 2000}, "Config.BatchSize 2000: want 0 (for 128) or 1-1024"},
		{"queue", wgtun.Config{Stack: stack.Config{Addrs: addrs}, QueueLen: -1}, "Config.QueueLen -1"},
		{"bad stack field", wgtun.Config{Stack: stack.Config{Addrs: addrs, TimeWait: time.Hour}}, "Config.TimeWait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := wgtun.New(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				d.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// The tun.Device contract: EventUp first, the configured MTU, name and
// batch size, no file; Close ends a blocked Read with os.ErrClosed,
// closes Events, and is idempotent.
func TestDeviceContract(t *testing.T) {
	d, err := wgtun.New(wgtun.Config{Stack: stack.Config{Addrs: []netip.Prefix{addrA4}}, MTU: 1400, BatchSize: 7, Name: "wg-test"})
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-d.Events(); ev != tun.EventUp {
		t.Errorf("first event %v, want EventUp", ev)
	}
	mtu, _ := d.MTU()
	name, _ := d.Name()
	if mtu != 1400 || name != "wg-test" || d.BatchSize() != 7 || d.File() != nil {
		t.Errorf("MTU %d, name %q, batch %d, file %v; want 1400, wg-test, 7, nil", mtu, name, d.BatchSize(), d.File())
	}
	readErr := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 1500)}
		_, err := d.Read(bufs, []int{0}, 0)
		readErr <- err
	}()
	testnet.WaitFor(t, 5*time.Second, "Read to block", testnet.Blocked(1, "github.com/ustacknet/ustack/wgtun.(*Device).Read"))
	d.Close()
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked 5s after Close")
	}
	if _, ok := <-d.Events(); ok {
		t.Error("Events not closed by Close")
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := d.Write([][]byte{{0x45}}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
	if _, err := d.Stack().Dial("tcp", "198.18.30.1:1"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("dial after Close: %v, want net.ErrClosed", err)
	}
}

// tunnel is two wgtun devices peered through wireguard-go over loopback
// UDP: A dials, B serves.
type tunnel struct {
	a, b *wgtun.Device
	wg   *wgtest.Tunnel
}

func newTunnel(t *testing.T, cfgA stack.Config) *tunnel {
	t.Helper()
	cfgA.Addrs = []netip.Prefix{addrA4, addrA6}
	a, err := wgtun.New(wgtun.Config{Stack: cfgA})
	if err != nil {
		t.Fatal(err)
	}
	b, err := wgtun.New(wgtun.Config{Stack: stack.Config{Addrs: []netip.Prefix{addrB4, addrB6}}})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	wg, err := wgtest.New(wgtest.Side{TUN: a, Addrs: cfgA.Addrs}, wgtest.Side{TUN: b, Addrs: []netip.Prefix{addrB4, addrB6}}, nil)
	if err != nil {
		a.Close()
		b.Close()
		t.Fatal(err)
	}
	t.Cleanup(wg.Close)
	return &tunnel{a: a, b: b, wg: wg}
}

func echo(c net.Conn)    { io.Copy(c, c) }
func discard(c net.Conn) { io.Copy(io.Discard, c) }

// Two ustack stacks talk TCP and UDP through a real wireguard-go tunnel,
// over IPv4 and IPv6, with sequential source ports from A's range.
func TestTunnelBetweenStacks(t *testing.T) {
	var cfg stack.Config
	cfg.Ports.TCP.Range = portalloc.Range{First: 40000, Last: 40009}
	tn := newTunnel(t, cfg)
	l, err := tn.b.Stack().Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, l, echo)
	const size = 4 << 20
	var ports []uint16
	for _, dst := range []string{"198.18.30.1:7", "[fd00:30::1]:7"} {
		t.Run(dst, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := tn.a.Stack().DialContext(ctx, "tcp", dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ports = append(ports, c.(*stack.TCPConn).LocalAddrPort().Port())
			c.SetDeadline(time.Now().Add(time.Minute))
			data := make([]byte, size)
			rand.NewChaCha8([32]byte{2}).Read(data)
			go func() {
				c.Write(data)
				c.(*stack.TCPConn).CloseWrite()
			}()
			h := sha256.New()
			if n, err := io.Copy(h, c); err != nil || n != size {
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
	pc, err := tn.b.Stack().ListenPacket("udp", ":9")
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeUDPEcho(t, pc)
	for _, dst := range []string{"198.18.30.1:9", "[fd00:30::1]:9"} {
		c, err := tn.a.Stack().Dial("udp", dst)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("hello " + dst))
		b := make([]byte, 100)
		n, err := c.Read(b)
		c.Close()
		if err != nil || string(b[:n]) != "hello "+dst {
			t.Fatalf("UDP echo via %s: %q, %v", dst, b[:n], err)
		}
	}
	if s := tn.a.LinkStats(); s.OutPackets == 0 || s.InPackets == 0 {
		t.Errorf("link stats %+v: no traffic counted", s)
	}
}

// Closing A's wireguard-go device while connections are blocked ends them
// with net.ErrClosed at once and releases their ports.
func TestDeviceCloseUnderLoad(t *testing.T) {
	tn := newTunnel(t, stack.Config{})
	l, err := tn.b.Stack().Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, l, discard)
	results := make(chan error, 20)
	var written [5]atomic.Int64 // buffers each writer has written
	for i := range 5 {
		c, err := tn.a.Stack().Dial("tcp", "198.18.30.1:7")
		if err != nil {
			t.Fatal(err)
		}
		go readBlocked(c, results)
		go func() {
			buf := make([]byte, 64<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					results <- err
					return
				}
				written[i].Add(1)
			}
		}()
	}
	// Close once every reader is blocked and data flows on every conn.
	testnet.WaitFor(t, 10*time.Second, "the 5 reads to block", testnet.Blocked(5, "github.com/ustacknet/ustack/wgtun_test.readBlocked"))
	testnet.WaitFor(t, 10*time.Second, "a 64 KiB write through on each conn", func() error {
		for i := range written {
			if written[i].Load() == 0 {
				return fmt.Errorf("conn %d has written nothing yet", i)
			}
		}
		return nil
	})
	start := time.Now()
	tn.wg.A.Close()
	for i := range 10 {
		select {
		case err := <-results:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("call %d: %v, want net.ErrClosed", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d calls still blocked 5s after closing the device", 10-i)
		}
	}
	t.Logf("all blocked calls returned within %v", time.Since(start))
	for _, p := range tn.a.Stack().Ports() {
		if p.InUse != 0 {
			t.Errorf("%v: %d ports in use after Close", p.Protocol, p.InUse)
		}
	}
}

// readBlocked reads c once, which blocks since its peer sends nothing, and
// sends the error to results. It is a named function so that the test can
// find its goroutines blocked (testnet.Blocked).
func readBlocked(c net.Conn, results chan<- error) {
	_, err := c.Read(make([]byte, 10))
	results <- err
}
