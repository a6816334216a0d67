package stack

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// listenDial returns a listener on a loopback stack and a client conn
// connected to it (closed at the end of the test), not yet accepted.
func listenDial(t *testing.T, st *Stack) (*TCPListener, *TCPConn) {
	t.Helper()
	l, err := st.ListenTCPAddrPort(netip.MustParseAddrPort("127.0.0.1:0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, l.AddrPort())
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return l, c
}

// dialPair returns a connected client conn and the server's accepted
// conn on a loopback stack.
func dialPair(t *testing.T, st *Stack) (*TCPConn, *TCPConn) {
	t.Helper()
	l, c := listenDial(t, st)
	defer l.Close()
	s, err := l.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

func TestKeepAliveConfig(t *testing.T) {
	st := newLoopback(t, "", "")
	c, _ := dialPair(t, st)
	steps := []struct {
		name string
		do   func() error
		want net.KeepAliveConfig
	}{
		{"fresh: off, Linux's defaults", func() error { return nil },
			net.KeepAliveConfig{Enable: false, Idle: 2 * time.Hour, Interval: 75 * time.Second, Count: 9}},
		{"SetKeepAlive keeps the times", func() error { return c.SetKeepAlive(true) },
			net.KeepAliveConfig{Enable: true, Idle: 2 * time.Hour, Interval: 75 * time.Second, Count: 9}},
		{"SetKeepAlivePeriod sets idle and interval", func() error { return c.SetKeepAlivePeriod(3 * time.Second) },
			net.KeepAliveConfig{Enable: true, Idle: 3 * time.Second, Interval: 3 * time.Second, Count: 9}},
		{"negative period changes nothing", func() error { return c.SetKeepAlivePeriod(-1) },
			net.KeepAliveConfig{Enable: true, Idle: 3 * time.Second, Interval: 3 * time.Second, Count: 9}},
		{"config with zeros takes net's defaults", func() error { return c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true}) },
			net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}},
		{"config with negatives keeps values", func() error {
			return c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 250 * time.Millisecond, Interval: -1, Count: 3})
		}, net.KeepAliveConfig{Enable: true, Idle: 250 * time.Millisecond, Interval: 15 * time.Second, Count: 3}},
		{"disable", func() error {
			return c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: false, Idle: -1, Interval: -1, Count: -1})
		},
			net.KeepAliveConfig{Enable: false, Idle: 250 * time.Millisecond, Interval: 15 * time.Second, Count: 3}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if diff := cmp.Diff(s.want, c.KeepAliveConfig()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
	}
	for _, tc := range []struct {
		name string
		cfg  net.KeepAliveConfig
		want string
	}{
		{"idle too long", net.KeepAliveConfig{Enable: true, Idle: 10 * time.Hour}, "keepalive Idle 10h0m0s: want up to 9h6m7s"},
		{"interval too long", net.KeepAliveConfig{Enable: true, Interval: 10 * time.Hour}, "keepalive Interval 10h0m0s: want up to 9h6m7s"},
		{"count too big", net.KeepAliveConfig{Enable: true, Count: 128}, "KeepAliveConfig.Count 128: want 1-127"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.SetKeepAliveConfig(tc.cfg)
			if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("SetKeepAliveConfig = %v; want EINVAL saying %q", err, tc.want)
			}
		})
	}
	if err := c.SetKeepAlivePeriod(24 * time.Hour); !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "keepalive period 24h0m0s") {
		t.Errorf("SetKeepAlivePeriod(24h) = %v", err)
	}
	c.Close()
	if err := c.SetKeepAlive(true); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetKeepAlive after Close = %v, want net.ErrClosed", err)
	}
}

func TestNoDelay(t *testing.T) {
	st := newLoopback(t, "", "")
	c, s := dialPair(t, st)
	if !c.NoDelay() || !s.NoDelay() {
		t.Errorf("NoDelay: dialled %v, accepted %v; want true for both, as package net", c.NoDelay(), s.NoDelay())
	}
	if err := c.SetNoDelay(false); err != nil {
		t.Fatal(err)
	}
	if c.NoDelay() {
		t.Errorf("NoDelay after SetNoDelay(false) = true")
	}
	if err := c.SetNoDelay(true); err != nil || !c.NoDelay() {
		t.Errorf("SetNoDelay(true) = %v, NoDelay %v", err, c.NoDelay())
	}
}

func TestListenerDeadline(t *testing.T) {
	st := newLoopback(t, "", "")
	l, _ := listenDial(t, st)
	defer l.Close()
	// A deadline in the past: Accept fails at once, even with a
	// connection waiting, as package net does.
	l.SetDeadline(time.Now().Add(-time.Second))
	_, err := l.Accept()
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Accept past the deadline = %v, want a timeout", err)
	}
	// No deadline: the waiting connection is accepted.
	l.SetDeadline(time.Time{})
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept without deadline: %v", err)
	}
	s.Close()
	// A blocked Accept ends when a deadline set meanwhile passes.
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	l.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("blocked Accept = %v, want a timeout", err)
	}
	// A later deadline lets Accept wait for a connection.
	l.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	c2, err := st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, l.AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := <-done; err != nil {
		t.Errorf("Accept with a later deadline = %v", err)
	}
	l.Close()
	if err := l.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetDeadline after Close = %v", err)
	}
}
