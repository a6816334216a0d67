//go:build linux

package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

const bulkBytes = 100 << 20

// waterBulkBytes is what TestInboundBulkIntegrity moves each way over the
// water driver in the default suite. Without offloads the 100 MB take
// minutes under the race detector on 2 cores, beyond the suite's budget;
// USTACK_WATER_BULK=full moves the whole bulkBytes.
func waterBulkBytes() int64 {
	if os.Getenv("USTACK_WATER_BULK") == "full" {
		return bulkBytes
	}
	return 8 << 20
}

// prng is a deterministic byte stream: both ends can compute its hash.
type prng struct{ r *rand.ChaCha8 }

func newPRNG(seed byte) *prng { return &prng{rand.NewChaCha8([32]byte{seed})} }

func (p *prng) Read(b []byte) (int, error) { return p.r.Read(b) }

func expectedHash(seed byte, n int64) [32]byte {
	h := sha256.New()
	io.CopyN(h, newPRNG(seed), n)
	return [32]byte(h.Sum(nil))
}

// halfCloser is a stream whose writing side can be closed alone.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// bulkExchange sends n bytes of stream sendSeed on c and then closes its
// writing side, while it reads c to EOF; it checks that what arrived is
// exactly n bytes of stream recvSeed.
func bulkExchange(c halfCloser, sendSeed, recvSeed byte, n int64) error {
	var werr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, werr = io.CopyN(c, newPRNG(sendSeed), n)
		c.CloseWrite()
	}()
	h := sha256.New()
	got, rerr := io.Copy(h, c)
	<-done
	switch {
	case rerr != nil:
		return fmt.Errorf("read: %w", rerr)
	case werr != nil:
		return fmt.Errorf("write: %w", werr)
	case got != n || [32]byte(h.Sum(nil)) != expectedHash(recvSeed, n):
		return fmt.Errorf("received %d bytes with the wrong hash", got)
	}
	return nil
}

// 5. Inbound and integrity: kernel clients connect to a ustack listener
// over the TUN and move 100 MB each way, checked by SHA-256, over IPv4
// and IPv6.
func TestInboundBulkIntegrity(t *testing.T) {
	forEachDriver(t, testInboundBulkIntegrity)
}

func testInboundBulkIntegrity(t *testing.T, drv tun.Driver) {
	e := newEnvDriver(t, stack.Config{}, 0, drv)
	var n int64 = bulkBytes
	if drv == tun.DriverWater {
		n = waterBulkBytes()
	}
	l, err := e.st.Listen("tcp", ":5001")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The stack's side: hash what arrives, send the other stream, and
	// report the hash of what it received.
	serverErr := make(chan error, 2)
	go func() {
		for i := 0; i < 2; i++ {
			c, err := l.Accept()
			if err != nil {
				serverErr <- err
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Minute))
				if err := bulkExchange(c.(*stack.TCPConn), 2, 1, n); err != nil {
					serverErr <- fmt.Errorf("stack side: %w", err)
					return
				}
				serverErr <- nil
			}()
		}
	}()
	for _, dst := range []string{"198.18.0.2:5001", "[fd00:18::2]:5001"} {
		t.Run(dst, func(t *testing.T) {
			c, err := e.ns.Dial("tcp", dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			start := time.Now()
			if err := bulkExchange(c.(*net.TCPConn), 1, 2, n); err != nil {
				t.Fatalf("kernel side: %v", err)
			}
			if err := <-serverErr; err != nil {
				t.Fatal(err)
			}
			t.Logf("%d MB each way in %v", n>>20, time.Since(start).Round(time.Millisecond))
		})
	}
}

// echoByte is the churn test's server: it echoes one byte and closes.
// It is a named function so that the test can tell when its goroutines
// have ended (testnet.Gone).
func echoByte(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err == nil {
		c.Write(b)
	}
}

// waitNoTCPPort waits (bounded) until the stack holds no TCP port.
func waitNoTCPPort(t *testing.T, st *stack.Stack) {
	t.Helper()
	testnet.WaitFor(t, 10*time.Second, "no TCP port in use", func() error {
		if n := st.Allocator().Pool(portalloc.TCP).InUse(); n != 0 {
			return fmt.Errorf("%d in use", n)
		}
		return nil
	})
}

// 6. Churn: 20,000 connect/echo/close cycles through a 64-port range:
// zero failures, zero ports in use at the end, no goroutine growth.
func TestChurn(t *testing.T) {
	e := newEnv(t, rangeCfg("41000-41063", ""), 0)
	l := e.kernelListen(t, "tcp4", "198.18.0.1:7")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go echoByte(c)
		}
	}()
	const cycles, workers = 20000, 4
	dst := netip.MustParseAddrPort("198.18.0.1:7")
	// One warm-up cycle so that goroutines started once (timers, the
	// reaper) are in the baseline.
	if _, err := cycle(t, e.st, dst); err != nil {
		t.Fatal(err)
	}
	// The baseline is taken once the warm-up connection has ended on both
	// sides: its port is back and its server goroutine has ended.
	waitNoTCPPort(t, e.st)
	testnet.WaitFor(t, 10*time.Second, "the warm-up's server goroutine to end", testnet.Gone("github.com/ustacknet/ustack/integration.echoByte"))
	base := runtime.NumGoroutine()
	var mu sync.Mutex
	var failures []error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < cycles/workers; i++ {
				if _, err := cycle(t, e.st, dst); err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(failures) > 0 {
		t.Fatalf("%d of %d cycles failed; first: %v", len(failures), cycles, failures[0])
	}
	waitNoTCPPort(t, e.st)
	testnet.WaitFor(t, 10*time.Second, fmt.Sprintf("goroutines back to the baseline of %d", base), func() error {
		if n := runtime.NumGoroutine(); n > base {
			return fmt.Errorf("%d goroutines", n)
		}
		return nil
	})
	s := e.st.Allocator().Pool(portalloc.TCP).Stats()
	if s.Allocations != cycles+1 || s.Releases != cycles+1 || s.Exhausted != 0 {
		t.Errorf("pool stats %+v; want %d allocations and releases, no exhaustion", s, cycles+1)
	}
	t.Logf("%d cycles in %v (%.0f/s), %d wraps, %d vetoes", cycles, elapsed, cycles/elapsed.Seconds(), s.Wraps, s.Vetoes)
}

// 7. Concurrency: 500 concurrent connections from 32 goroutines; the
// kernel never sees one source port twice among live connections.
func TestConcurrentConnectionsUniquePorts(t *testing.T) {
	e := newEnv(t, stack.Config{}, 0)
	l := e.kernelListen(t, "tcp4", "198.18.0.1:9")
	const total, workers = 500, 32
	var (
		mu    sync.Mutex
		live  = map[uint16]bool{}
		dups  []uint16
		kconn []net.Conn
	)
	accepted := make(chan struct{}, total)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p := c.RemoteAddr().(*net.TCPAddr).AddrPort().Port()
			mu.Lock()
			if live[p] {
				dups = append(dups, p)
			}
			live[p] = true
			kconn = append(kconn, c)
			mu.Unlock()
			accepted <- struct{}{}
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range kconn {
			c.Close()
		}
		mu.Unlock()
	}()
	conns := make(chan net.Conn, total)
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += workers {
				c, err := e.st.DialContext(context.Background(), "tcp4", "198.18.0.1:9")
				if err != nil {
					errs <- err
					continue
				}
				conns <- c
			}
		}()
	}
	wg.Wait()
	close(conns)
	close(errs)
	for err := range errs {
		t.Errorf("dial: %v", err)
	}
	for range total {
		select {
		case <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatal("kernel did not accept every connection")
		}
	}
	n := 0
	for c := range conns {
		n++
		c.(*stack.TCPConn).SetLinger(0)
		c.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if n != total || len(live) != total || len(dups) != 0 {
		t.Fatalf("%d conns, kernel saw %d distinct live ports, duplicates %v; want %d, %d, none", n, len(live), dups, total, total)
	}
}

// 8. Close under load: closing the stack with live connections makes
// every blocked call return net.ErrClosed promptly, with no leak (goleak
// checks at the end of the package).
func TestCloseUnderLoad(t *testing.T) {
	e := newEnv(t, stack.Config{}, 0)
	sink := e.kernelListen(t, "tcp4", "198.18.0.1:9")
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	ln, err := e.st.Listen("tcp", ":8000")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := e.st.ListenPacket("udp", ":8000")
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 100)
	calls := 0
	var writing atomic.Int32 // writers that have had a write go through
	for i := 0; i < 20; i++ {
		c, err := e.st.Dial("tcp", "198.18.0.1:9")
		if err != nil {
			t.Fatal(err)
		}
		calls += 2
		go func() { _, err := c.Read(make([]byte, 10)); results <- err }()
		go func() {
			buf := bytes.Repeat([]byte{'x'}, 1<<16)
			for first := true; ; first = false {
				if _, err := c.Write(buf); err != nil {
					results <- err
					return
				}
				if first {
					writing.Add(1)
				}
			}
		}()
	}
	calls += 2
	go func() { _, err := ln.Accept(); results <- err }()
	go func() { _, _, err := pc.ReadFrom(make([]byte, 100)); results <- err }()
	// Close once every read and the accept are blocked and data flows on
	// every connection.
	for _, b := range []struct {
		n  int
		fn string
	}{
		{20, "github.com/ustacknet/ustack/stack.(*TCPConn).Read"},
		{1, "github.com/ustacknet/ustack/stack.(*UDPConn).ReadFrom"},
		{1, "github.com/ustacknet/ustack/stack.(*TCPListener).AcceptTCP"},
	} {
		testnet.WaitFor(t, 10*time.Second, fmt.Sprintf("%d calls blocked in %s", b.n, b.fn), testnet.Blocked(b.n, b.fn))
	}
	testnet.WaitFor(t, 10*time.Second, "a write through on every connection", func() error {
		if n := writing.Load(); n != 20 {
			return fmt.Errorf("%d of 20 writers have had a write go through", n)
		}
		return nil
	})
	start := time.Now()
	e.st.Close()
	for i := 0; i < calls; i++ {
		select {
		case err := <-results:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("call returned %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d calls still blocked 5s after Close", calls-i, calls)
		}
	}
	t.Logf("all %d blocked calls returned within %v", calls, time.Since(start))
	for _, p := range e.st.Ports() {
		if p.InUse != 0 {
			t.Errorf("%v ports in use after Close: %d", p.Protocol, p.InUse)
		}
	}
	if _, err := e.st.Dial("tcp", "198.18.0.1:9"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("dial after Close: %v, want net.ErrClosed", err)
	}
}
