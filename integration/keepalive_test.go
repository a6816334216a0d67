//go:build linux

package integration

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/stack"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestKeepAliveKernel proves that keepalive probes go out to the kernel
// and that a dead peer is detected: once the kernel's answers are
// blackholed, the probes go unanswered and a blocked Read fails with
// ETIMEDOUT. The kernel's raw TCP socket sees every probe.
func TestKeepAliveKernel(t *testing.T) {
	e := newEnv(t, stack.Config{}, 0)
	// Reverse-path filtering would drop the probes once the route back
	// is a blackhole; the raw socket must still see them.
	if err := e.ns.Do(func() error {
		for _, f := range []string{"/proc/sys/net/ipv4/conf/all/rp_filter", "/proc/sys/net/ipv4/conf/default/rp_filter", "/proc/sys/net/ipv4/conf/" + e.dev.Name() + "/rp_filter"} {
			if err := os.WriteFile(f, []byte("0"), 0); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	l := e.kernelListen(t, "tcp4", net.JoinHostPort(kernel4.Addr().String(), "0"))
	raw := e.kernelListenPacket(t, "ip4:tcp", kernel4.Addr().String())
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := e.st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, l.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kc := <-accepted
	if kc == nil {
		t.Fatal("kernel accepted nothing")
	}
	defer kc.Close()
	const idle, intvl, count = 100 * time.Millisecond, 100 * time.Millisecond, 3
	if err := c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: idle, Interval: intvl, Count: count}); err != nil {
		t.Fatal(err)
	}
	sport := c.LocalAddrPort().Port()

	// probes counts the keepalive probes (no payload, sequence number one
	// below the next to send) the kernel receives from our port until
	// want have arrived; it fails after the bound. The first bare ACK is
	// the handshake's, whose sequence number is the next to send: the
	// stack sends no data in this test.
	var nxt uint32
	var sawHandshake bool
	probes := func(want int, bound time.Duration) {
		t.Helper()
		raw.SetReadDeadline(time.Now().Add(bound))
		buf := make([]byte, 1500)
		for n := 0; n < want; {
			m, _, err := raw.ReadFrom(buf)
			if err != nil {
				t.Fatalf("saw %d keepalive probes of %d: %v", n, want, err)
			}
			seg := buf[:m]
			if len(seg) < 20 || binary.BigEndian.Uint16(seg[0:2]) != sport {
				continue
			}
			off := int(seg[12]>>4) * 4
			flags := seg[13]
			seq := binary.BigEndian.Uint32(seg[4:8])
			if len(seg) == off && flags&0x10 != 0 && flags&0x07 == 0 { // a bare ACK
				if !sawHandshake {
					sawHandshake, nxt = true, seq
				} else if seq == nxt-1 {
					n++
				}
			}
		}
	}
	// The peer is alive: probes go out every interval, the kernel answers
	// them, and the connection stays up.
	probes(2, 5*time.Second)
	if _, err := kc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		t.Fatalf("read after answered probes: %v", err)
	}
	// Kill the peer: the kernel's answers go into a blackhole.
	dst := &net.IPNet{IP: stack4.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := e.ns.Handle().RouteAdd(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE}); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = c.Read(b)
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("read from a dead peer = %v after %v, want ETIMEDOUT", err, time.Since(start))
	}
	// At least idle + (count-1) intervals of silence went by (the count-th
	// probe unanswered ends it).
	if el := time.Since(start); el < idle+(count-1)*intvl {
		t.Errorf("dead peer detected after %v, before %d probes could go unanswered", el, count)
	}
}
