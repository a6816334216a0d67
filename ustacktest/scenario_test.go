//go:build linux

package ustacktest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/ustacktest"
)

// byeServer listens in the bed's kernel at addr; on each connection it
// reads one line, answers "bye\n" and closes first.
func byeServer(t *testing.T, bed *ustacktest.Bed, addr string) netip.AddrPort {
	t.Helper()
	l, err := bed.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, l, func(c net.Conn) {
		b := make([]byte, 64)
		if _, err := c.Read(b); err != nil {
			return
		}
		io.WriteString(c, "bye\n")
	})
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// hello sends a line and reads the reply.
func hello(c net.Conn) error {
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return err
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "bye\n" {
		return errors.New("unexpected reply " + string(b))
	}
	return nil
}

func ports(rs []ustacktest.Result) []uint16 {
	var out []uint16
	for _, r := range rs {
		out = append(out, r.Port)
	}
	return out
}

func checkAllOK(t *testing.T, rs []ustacktest.Result) {
	t.Helper()
	for _, r := range rs {
		if r.Err != nil {
			t.Errorf("connection %d (port %d): %v", r.Index, r.Port, r.Err)
		}
	}
}

func TestChurn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  ustacktest.Options
		close ustacktest.Closer
		// inOrder: the ports go round the range in order. When the
		// stack keeps TIME_WAIT, a full range reuses whichever TIME_WAIT
		// port the stack reclaims, which is not always the next one.
		inOrder bool
	}{
		// The server's kernel keeps each connection in TIME_WAIT, and
		// the next connection through the same port takes it over.
		{"server closes", ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40003}}, ustacktest.ServerCloses, true},
		// The stack keeps TIME_WAIT; with reuse on, a full range takes
		// a port that is in TIME_WAIT.
		{"client closes, TIME_WAIT reuse", ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40003}, TimeWaitReuse: true}, ustacktest.ClientCloses, false},
	} {
		for _, addr := range []string{"198.18.0.1:7", "[fd00:18::1]:7"} {
			t.Run(tc.name+"/"+addr, func(t *testing.T) {
				bed := ustacktest.New(t, tc.opts)
				server := byeServer(t, bed, addr)
				rs, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{N: 12, Close: tc.close, Exchange: hello})
				if err != nil {
					t.Fatal(err)
				}
				checkAllOK(t, rs)
				got := ports(rs)
				if tc.inOrder {
					if diff := cmp.Diff(seqPorts(40000, 40003, 12), got); diff != "" {
						t.Errorf("churn ports (-want +got):\n%s", diff)
					}
				} else {
					used := map[uint16]bool{}
					for _, p := range got {
						used[p] = true
						if p < 40000 || p > 40003 {
							t.Errorf("port %d is outside the range 40000-40003", p)
						}
					}
					if len(used) != 4 {
						t.Errorf("churn used ports %v; want all four of 40000-40003", got)
					}
				}
				if diff := cmp.Diff(got, bed.SeenPorts(server)); diff != "" {
					t.Errorf("ports the server saw (-dialled +seen):\n%s", diff)
				}
				for i, r := range rs {
					if r.Index != i || r.Start.IsZero() || r.Connect <= 0 || r.Duration < r.Connect {
						t.Errorf("result %d: index %d, start %v, connect %v, duration %v", i, r.Index, r.Start, r.Connect, r.Duration)
					}
				}
			})
		}
	}
}

func TestChurnParallel(t *testing.T) {
	bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40007}})
	server := byeServer(t, bed, "198.18.0.1:7")
	rs, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{N: 40, Parallel: 4, Close: ustacktest.ServerCloses, Exchange: hello})
	if err != nil {
		t.Fatal(err)
	}
	checkAllOK(t, rs)
	count := map[uint16]int{}
	for _, p := range bed.SeenPorts(server) {
		count[p]++
	}
	if len(count) != 8 || len(bed.SeenPorts(server)) != 40 {
		t.Errorf("server saw %d connections on ports %v; want 40 over the 8 ports 40000-40007", len(bed.SeenPorts(server)), count)
	}
}

func TestChurnServerNeverCloses(t *testing.T) {
	bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40003}})
	l, err := bed.Listen("tcp", "198.18.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, l, func(c net.Conn) { io.Copy(io.Discard, c) })
	server := l.Addr().(*net.TCPAddr).AddrPort()
	rs, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{N: 1, Close: ustacktest.ServerCloses, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := rs[0].Err; !errors.Is(err, syscall.ETIMEDOUT) && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Errorf("churn against a server that never closes: %v, want a timeout", err)
	}
	if !strings.Contains(rs[0].Err.Error(), "waiting for the server to close") {
		t.Errorf("error %q does not say what it waited for", rs[0].Err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestHold(t *testing.T) {
	bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40003}})
	l, err := bed.Listen("tcp", "198.18.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, l)
	server := l.Addr().(*net.TCPAddr).AddrPort()
	// Five connections through four ports: the fifth finds the range full.
	h, err := bed.Hold(context.Background(), server, ustacktest.HoldOptions{N: 5})
	if err != nil {
		t.Fatal(err)
	}
	checkAllOK(t, h.Results[:4])
	if diff := cmp.Diff([]uint16{40000, 40001, 40002, 40003, 0}, ports(h.Results)); diff != "" {
		t.Errorf("held ports (-want +got):\n%s", diff)
	}
	if err := h.Results[4].Err; !errors.Is(err, syscall.EADDRNOTAVAIL) || !errors.Is(err, portalloc.ErrExhausted) {
		t.Errorf("fifth connection: %v, want EADDRNOTAVAIL (range exhausted)", err)
	}
	for i, c := range h.Conns[:4] {
		if c == nil {
			t.Fatalf("Conns[%d] is nil", i)
		}
		if _, err := io.WriteString(c, "x"); err != nil {
			t.Errorf("held connection %d: %v", i, err)
		}
	}
	if h.Conns[4] != nil {
		t.Errorf("Conns[4] = %v, want nil for the failed dial", h.Conns[4])
	}
	h.Close()
	h.Close()
}

func TestReuseTimeWait(t *testing.T) {
	for _, addr := range []string{"198.18.0.1:7", "[fd00:18::1]:7"} {
		t.Run(addr, func(t *testing.T) {
			bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40003}})
			server := byeServer(t, bed, addr)
			rr, err := bed.ReuseTimeWait(context.Background(), server, ustacktest.ReuseOptions{Port: 40002, Exchange: hello})
			if err != nil {
				t.Fatal(err)
			}
			if rr.First.Err != nil || rr.Second.Err != nil {
				t.Fatalf("first: %v; second: %v", rr.First.Err, rr.Second.Err)
			}
			if !rr.TimeWait {
				t.Errorf("the server's kernel did not show the first connection in TIME_WAIT")
			}
			if diff := cmp.Diff([]uint16{40002, 40002}, bed.SeenPorts(server)); diff != "" {
				t.Errorf("ports the server saw (-want +got):\n%s", diff)
			}
			t.Logf("second connect took %v", rr.Second.Connect)
		})
	}
}

// TestReuseFirstFails: a server that resets the first connection leaves
// no TIME_WAIT, and the second connection is not attempted.
func TestReuseFirstFails(t *testing.T) {
	bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40003}})
	l, err := bed.Listen("tcp", "198.18.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, l, func(c net.Conn) {
		c.(*net.TCPConn).SetLinger(0) // close sends RST
	})
	server := l.Addr().(*net.TCPAddr).AddrPort()
	rr, err := bed.ReuseTimeWait(context.Background(), server, ustacktest.ReuseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(rr.First.Err, syscall.ECONNRESET) || rr.First.Port != 40000 {
		t.Errorf("first connection: port %d, %v; want port 40000 and ECONNRESET", rr.First.Port, rr.First.Err)
	}
	if !errors.Is(rr.Second.Err, ustacktest.ErrNotAttempted) || rr.TimeWait {
		t.Errorf("second connection: %v, TIME_WAIT %v; want ErrNotAttempted and no TIME_WAIT", rr.Second.Err, rr.TimeWait)
	}
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts ustacktest.Options
		want string
	}{
		{"range reversed", ustacktest.Options{Range: portalloc.Range{First: 40010, Last: 40000}}, "Options.Range 40010-40000"},
		{"range from 0", ustacktest.Options{Range: portalloc.Range{First: 0, Last: 10}}, "Options.Range 0-10"},
		{"policy unknown", ustacktest.Options{Policy: portalloc.Policy(7)}, "Options.Policy 7 is unknown"},
		{"time wait", ustacktest.Options{TimeWait: time.Microsecond}, "Options.TimeWait 1µs"},
		{"mtu", ustacktest.Options{MTU: 1000}, "Options.MTU 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
			if _, err := ustacktest.Open(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open() = %v, want an error containing %q", err, tc.want)
			}
			// New fails the test with the same message, privileged or
			// not.
			ft := &fakeTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				ustacktest.New(ft, tc.opts)
			}()
			<-done
			if !ft.failed || !strings.Contains(ft.msg, tc.want) || ft.skipped {
				t.Errorf("New: failed %v, skipped %v, message %q; want a failure containing %q", ft.failed, ft.skipped, ft.msg, tc.want)
			}
		})
	}

	bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40003}})
	server := netip.MustParseAddrPort("198.18.0.1:7")
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"churn N", func() error { _, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{}); return err }, "ChurnOptions.N 0"},
		{"churn close", func() error {
			_, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{N: 1, Close: 9})
			return err
		}, "ChurnOptions.Close 9"},
		{"churn parallel", func() error {
			_, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{N: 1, Parallel: -1})
			return err
		}, "ChurnOptions.Parallel -1"},
		{"hold N", func() error {
			_, err := bed.Hold(context.Background(), server, ustacktest.HoldOptions{N: -3})
			return err
		}, "HoldOptions.N -3"},
		{"reuse port", func() error {
			_, err := bed.ReuseTimeWait(context.Background(), server, ustacktest.ReuseOptions{Port: 50000})
			return err
		}, "ReuseOptions.Port 50000: want a port in the bed's range 40000-40003"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// fakeTB records how New ends a test instead of ending the real one.
type fakeTB struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, strings.TrimSpace(fmt.Sprintln(args...))
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprintln(args...)
	runtime.Goexit()
}
func (f *fakeTB) Cleanup(fn func()) { f.TB.Cleanup(fn) }
