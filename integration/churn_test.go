//go:build linux

package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/privtest"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
)

// Bytes the client sends to say which side closes first.
const (
	clientClosesFirst = 'c'
	serverClosesFirst = 's'
)

// serveEcho accepts on l until it is closed: each connection echoes one
// byte, then either closes at once (serverClosesFirst) or waits for the
// client's FIN and closes after it.
func serveEcho(l net.Listener) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err != nil {
					return
				}
				if _, err := c.Write(b[:]); err != nil {
					return
				}
				if b[0] == clientClosesFirst {
					io.Copy(io.Discard, c) // until the client's FIN
				}
			}()
		}
	}()
	return wg.Wait
}

// echoCycle dials raddr, echoes one byte and closes, with the side that
// first as the byte says.
func echoCycle(ctx context.Context, st *stack.Stack, raddr netip.AddrPort, who byte) error {
	c, err := st.DialTCPAddrPort(ctx, netip.AddrPort{}, raddr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{who}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[0] != who {
		return fmt.Errorf("echo %q, want %q", b[0], who)
	}
	if who == serverClosesFirst {
		if n, err := c.Read(b[:]); err != io.EOF {
			return fmt.Errorf("after the echo: read %d, %v; want EOF", n, err)
		}
	}
	return nil
}

// TestChurnSmallRange runs connect/echo/close cycles from 4 workers
// through a 64-port range, the two sides closing first in turn, and wants
// no failure: a port comes back to the pool as soon as gVisor is done with
// it, and a dial that finds the range full first takes back ports of
// finished connections (and, with TimeWaitReuse, of connections in
// TIME_WAIT, as Linux's tcp_tw_reuse does) before it gives up.
//
// The suite runs 5,000 cycles (about 80 times round the range), to stay
// within its time budget under the race detector; the full acceptance
// run is 20,000:
//
//	USTACK_CHURN_CYCLES=20000 go test -run TestChurnSmallRange ./integration
func TestChurnSmallRange(t *testing.T) {
	privtest.Require(t)
	const workers = 4
	cycles := int64(5000)
	if v := os.Getenv("USTACK_CHURN_CYCLES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			t.Fatalf("USTACK_CHURN_CYCLES=%q: want a positive number of cycles", v)
		}
		cycles = n
	}
	cfg := stack.Config{TimeWaitReuse: true}
	cfg.Ports.TCP.Range = portalloc.Range{First: 40000, Last: 40063}
	e := newEnv(t, cfg, 0)
	l := e.kernelListen(t, "tcp4", netip.AddrPortFrom(kernel4.Addr(), 7).String())
	wait := serveEcho(l)
	defer wait()
	defer l.Close()
	raddr := netip.AddrPortFrom(kernel4.Addr(), 7)

	var (
		next, failed atomic.Int64
		mu           sync.Mutex
		firstErrs    []string
		wg           sync.WaitGroup
	)
	ctx := context.Background()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= cycles {
					return
				}
				who := byte(clientClosesFirst)
				if i%2 == 1 {
					who = serverClosesFirst
				}
				if err := echoCycle(ctx, e.st, raddr, who); err != nil {
					failed.Add(1)
					mu.Lock()
					if len(firstErrs) < 5 {
						firstErrs = append(firstErrs, fmt.Sprintf("cycle %d (%c closes first): %v", i, who, err))
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d cycles failed; first: %q", n, cycles, firstErrs)
	}
	s := e.st.Ports()[portalloc.TCP]
	t.Logf("after %d cycles: %d ports in use, stats %+v", cycles, s.InUse, s.Stats)
	if s.Stats.Exhausted != 0 {
		t.Errorf("Stats.Exhausted = %d; want 0", s.Stats.Exhausted)
	}
}
