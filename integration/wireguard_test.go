//go:build linux

package integration

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
)

// The WireGuard tests run a real WireGuard tunnel: side A is a
// wireguard-go device whose TUN is a ustack stack (wgtun), side B a
// wireguard-go device on a real TUN whose kernel side, in a private
// namespace, serves HTTP, TCP echo and UDP echo. Each test is run over
// IPv4 and IPv6 inside the tunnel; see wg_env_test.go.

// wgFamilies are the tunnel's address families: the kernel's address as
// a dial target.
var wgFamilies = []struct {
	name   string
	kernel netip.Addr
	stack  netip.Addr
}{
	{"IPv4", wgKernel4.Addr(), wgStack4.Addr()},
	{"IPv6", wgKernel6.Addr(), wgStack6.Addr()},
}

// HTTP through the tunnel: net/http with the stack's DialContext fetches
// a page from the kernel's server, which sees the stack's tunnel address.
func TestWireGuardHTTP(t *testing.T) {
	e := newWGEnv(t, stack.Config{})
	l := e.kernelListen(t, "tcp", ":80")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from %s", r.RemoteAddr, r.Host)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	tr := &http.Transport{DialContext: e.a.Stack().DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for _, f := range wgFamilies {
		t.Run(f.name, func(t *testing.T) {
			host := netip.AddrPortFrom(f.kernel, 80).String()
			resp, err := client.Get("http://" + host + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			var remote netip.AddrPort
			if rest, ok := strings.CutPrefix(string(body), "hello "); ok {
				remote, _ = netip.ParseAddrPort(strings.TrimSuffix(rest, " from "+host))
			}
			if resp.StatusCode != 200 || remote.Addr() != f.stack {
				t.Fatalf("GET %s: %s %q; want 200 from the stack's tunnel address %s", host, resp.Status, body, f.stack)
			}
			t.Logf("GET %s: %q", host, body)
		})
	}
}

// 100 MB through the kernel's TCP echo server, hashed on return, over
// IPv4 and IPv6 inside the tunnel.
func TestWireGuardTCPEcho100MB(t *testing.T) {
	e := newWGEnv(t, stack.Config{})
	testnet.Serve(t, e.kernelListen(t, "tcp", ":7"), func(c net.Conn) {
		p := testnet.Progress(c) // fails on a stall, not on a slow machine
		io.Copy(p, p)
	})
	want := expectedHash(7, bulkBytes)
	for _, f := range wgFamilies {
		t.Run(f.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := e.a.Stack().DialTCPAddrPort(ctx, netip.AddrPort{}, netip.AddrPortFrom(f.kernel, 7))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p := testnet.Progress(c) // fails on a stall, not on a slow machine
			start := time.Now()
			werr := make(chan error, 1)
			go func() {
				_, err := io.CopyN(p, newPRNG(7), bulkBytes)
				c.CloseWrite()
				werr <- err
			}()
			h := sha256.New()
			n, rerr := io.Copy(h, p)
			if err := <-werr; err != nil || rerr != nil {
				t.Fatalf("write %v, read %v", err, rerr)
			}
			if n != bulkBytes || [32]byte(h.Sum(nil)) != want {
				t.Fatalf("echo returned %d bytes with hash %x; want %d bytes with %x", n, h.Sum(nil), bulkBytes, want)
			}
			d := time.Since(start)
			t.Logf("%d MB echoed in %v (%.0f Mbit/s each way)", bulkBytes>>20, d.Round(time.Millisecond), float64(bulkBytes)*8/d.Seconds()/1e6)
		})
	}
}

// UDP through the kernel's echo server: datagrams up to the tunnel's
// payload size come back intact, from sequential source ports.
func TestWireGuardUDPEcho(t *testing.T) {
	e := newWGEnv(t, rangeCfg("", "40000-40009"))
	seen := udpRecorder(t, e.kernelListenPacket(t, "udp", ":7"))
	var want, got []uint16
	for i, f := range wgFamilies {
		t.Run(f.name, func(t *testing.T) {
			// The largest datagram that fits the tunnel's MTU unfragmented.
			max := wgMTU - 20 - 8
			if f.kernel.Is6() {
				max = wgMTU - 40 - 8
			}
			dst := netip.AddrPortFrom(f.kernel, 7)
			c, err := e.a.Stack().DialUDPAddrPort(netip.AddrPort{}, dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 2048)
			for _, size := range []int{1, 100, max} {
				msg := make([]byte, size)
				newPRNG(byte(size)).Read(msg)
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				n, err := c.Read(buf)
				if err != nil || string(buf[:n]) != string(msg) {
					t.Fatalf("%d-byte datagram: got %d bytes back, %v", size, n, err)
				}
				if p := <-seen; p != c.LocalAddrPort().Port() {
					t.Fatalf("kernel saw source port %d, stack used %d", p, c.LocalAddrPort().Port())
				}
			}
			want = append(want, uint16(40000+2*i))
			got = append(got, c.LocalAddrPort().Port())
			c.Close()
			// A second socket gets the next port.
			port, err := udpCycle(e.a.Stack(), dst)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, uint16(40000+2*i+1))
			got = append(got, <-seen)
			if port != got[len(got)-1] {
				t.Fatalf("stack used port %d, kernel saw %d", port, got[len(got)-1])
			}
		})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UDP source ports seen by the kernel (-want +got):\n%s", diff)
	}
	if n := e.a.Stack().Allocator().Pool(portalloc.UDP).InUse(); n != 0 {
		t.Errorf("UDP ports in use after closing every socket: %d, want 0", n)
	}
}

// Through the tunnel the kernel sees exactly sequential source ports from
// the stack's range (40000-40009), wrapping: 15 connections over IPv4,
// then 15 over IPv6, where the sequence carries on. The kernel closes
// first, so no port lingers in TIME_WAIT on the stack's side, and closing
// releases every port.
func TestWireGuardSequentialPorts(t *testing.T) {
	e := newWGEnv(t, rangeCfg("40000-40009", ""))
	seen := echoOnceServer(t, e.kernelListen(t, "tcp", ":7"))
	next := 0
	for _, f := range wgFamilies {
		t.Run(f.name, func(t *testing.T) {
			dst := netip.AddrPortFrom(f.kernel, 7)
			var want, kernelSaw []uint16
			for i := 0; i < 15; i++ {
				want = append(want, uint16(40000+next%10))
				next++
				port, err := cycle(t, e.a.Stack(), dst)
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				select {
				case p := <-seen:
					kernelSaw = append(kernelSaw, p)
					if p != port {
						t.Fatalf("connection %d: stack used port %d, kernel saw %d", i, port, p)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("connection %d: kernel never accepted", i)
				}
				waitFree(t, e.a.Stack(), portalloc.TCP, port)
			}
			if diff := cmp.Diff(want, kernelSaw); diff != "" {
				t.Fatalf("source ports seen by the kernel (-want +got):\n%s", diff)
			}
			if n := e.a.Stack().Allocator().Pool(portalloc.TCP).InUse(); n != 0 {
				t.Fatalf("TCP ports in use after closing: %d, want 0", n)
			}
		})
	}
}

// Tearing the tunnel down (closing side A's wireguard-go device) while
// TCP connections over IPv4 and IPv6 are blocked in Read and Write, a
// UDP socket in Read and a listener in Accept: every call returns
// net.ErrClosed within 5 s, every port is released, and the package's
// goleak check finds nothing left running.
func TestWireGuardTeardownUnderLoad(t *testing.T) {
	e := newWGEnv(t, stack.Config{})
	testnet.Serve(t, e.kernelListen(t, "tcp", ":9"), func(c net.Conn) { io.Copy(io.Discard, c) })
	st := e.a.Stack()
	results := make(chan error, 100)
	var wg sync.WaitGroup
	calls := 0
	run := func(f func() error) {
		calls++
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- f()
		}()
	}
	var writing atomic.Int32 // writers that have had a write go through
	for _, f := range wgFamilies {
		for range 4 {
			c, err := st.DialTCPAddrPort(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(f.kernel, 9))
			if err != nil {
				t.Fatalf("%s dial: %v", f.name, err)
			}
			run(func() error { _, err := c.Read(make([]byte, 10)); return err })
			run(func() error {
				buf := make([]byte, 64<<10)
				for first := true; ; first = false {
					if _, err := c.Write(buf); err != nil {
						return err
					}
					if first {
						writing.Add(1)
					}
				}
			})
		}
	}
	writers := int32(calls / 2)
	uc, err := st.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(wgKernel6.Addr(), 9))
	if err != nil {
		t.Fatal(err)
	}
	run(func() error { _, err := uc.Read(make([]byte, 10)); return err })
	ln, err := st.Listen("tcp", ":8000")
	if err != nil {
		t.Fatal(err)
	}
	run(func() error { _, err := ln.Accept(); return err })
	// Tear down once every read and the accept are blocked and data flows
	// through the tunnel on every connection.
	for _, b := range []struct {
		n  int
		fn string
	}{
		{int(writers), "github.com/ustacknet/ustack/stack.(*TCPConn).Read"},
		{1, "github.com/ustacknet/ustack/stack.(*UDPConn).Read"},
		{1, "github.com/ustacknet/ustack/stack.(*TCPListener).AcceptTCP"},
	} {
		testnet.WaitFor(t, 10*time.Second, fmt.Sprintf("%d calls blocked in %s", b.n, b.fn), testnet.Blocked(b.n, b.fn))
	}
	testnet.WaitFor(t, 10*time.Second, "a write through on every connection", func() error {
		if n := writing.Load(); n != writers {
			return fmt.Errorf("%d of %d writers have had a write go through", n, writers)
		}
		return nil
	})
	if s := e.a.LinkStats(); s.OutPackets == 0 {
		t.Fatalf("no traffic through the tunnel before teardown: %+v", s)
	}
	start := time.Now()
	e.tunnel.A.Close()
	for i := 0; i < calls; i++ {
		select {
		case err := <-results:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("blocked call returned %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d blocked calls still blocked 5s after the tunnel went down", calls-i, calls)
		}
	}
	wg.Wait()
	t.Logf("all %d blocked calls returned within %v", calls, time.Since(start).Round(time.Microsecond))
	for _, p := range st.Ports() {
		if p.InUse != 0 {
			t.Errorf("%v ports in use after teardown: %d, want 0", p.Protocol, p.InUse)
		}
	}
	if _, err := st.Dial("tcp", "198.18.10.1:9"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("dial after teardown: %v, want net.ErrClosed", err)
	}
}
