//go:build freebsd || linux

package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ustacknet/ustack/internal/testnet"
)

// The FreeBSD driver's device, bsdTun, over one end of a SOCK_SEQPACKET
// socket pair instead of a tun(4) descriptor: like tun(4), the socket
// keeps each write one packet and is polled by Go's poller. The test
// plays tun(4) on the other end, with its 4-byte address family headers.

// newTestBSDTun returns a bsdTun over a socket pair and the other end.
// Destroyed records the names Close destroys.
func newTestBSDTun(t *testing.T) (tn *bsdTun, peer *os.File, destroyed *[]string) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	tn, err = newBSDTun(fds[0], "tun7")
	if err != nil {
		unix.Close(fds[1])
		t.Fatal(err)
	}
	var mu sync.Mutex
	destroyed = new([]string)
	tn.destroy = func(name string) error {
		mu.Lock()
		defer mu.Unlock()
		*destroyed = append(*destroyed, name)
		return nil
	}
	peer = os.NewFile(uintptr(fds[1]), "peer")
	// A read that a broken test would leave waiting fails instead.
	for _, f := range []interface{ SetReadDeadline(time.Time) error }{tn, peer} {
		if err := f.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		tn.Close()
		peer.Close()
	})
	return tn, peer, destroyed
}

// framed is pkt behind FreeBSD's address family header af.
func framed(af uint32, pkt []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, af), pkt...)
}

func TestBSDTunWrite(t *testing.T) {
	tn, peer, _ := newTestBSDTun(t)
	v4 := rawBytes("198.18.0.2:80", "198.18.0.1:1000", 1)
	v6 := rawBytes("[fd00::2]:80", "[fd00::1]:1000", 2)
	for _, pkt := range [][]byte{v4, v6} {
		if n, err := tn.Write(pkt); n != len(pkt) || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(pkt))
		}
	}
	if _, err := tn.Write([]byte{0x00, 1, 2, 3}); err == nil {
		t.Error("Write of a packet that is not IP succeeded")
	}
	if _, err := tn.Write(nil); err == nil {
		t.Error("Write of an empty packet succeeded")
	}
	var got [][]byte
	buf := make([]byte, 2048)
	for range 2 {
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bytes.Clone(buf[:n]))
	}
	want := [][]byte{framed(2, v4), framed(28, v6)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packets on the wire (-want +got):\n%s", diff)
	}
}

func TestBSDTunRead(t *testing.T) {
	tn, peer, _ := newTestBSDTun(t)
	v4 := rawBytes("198.18.0.1:1000", "198.18.0.2:80", 1)
	v6 := rawBytes("[fd00::1]:1000", "[fd00::2]:80", 2)
	for _, b := range [][]byte{
		framed(2, v4),
		framed(17, v4), // not AF_INET or AF_INET6: skipped
		{0, 0, 0, 2},   // a header without a packet: skipped
		framed(10, v6), // Linux's AF_INET6, not FreeBSD's: skipped
		framed(28, v6),
	} {
		if _, err := peer.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	var got [][]byte
	buf := make([]byte, MaxMTU)
	for range 2 {
		n, err := tn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bytes.Clone(buf[:n]))
	}
	if diff := cmp.Diff([][]byte{v4, v6}, got); diff != "" {
		t.Errorf("packets read (-want +got):\n%s", diff)
	}
}

// TestBSDTunStopAndClose checks that a read deadline in the past wakes a
// blocked Read (how the endpoint stops its reader), that Close is
// idempotent and destroys the interface once, and that Read and Write
// after Close fail with os.ErrClosed.
func TestBSDTunStopAndClose(t *testing.T) {
	tn, peer, destroyed := newTestBSDTun(t)
	errc := make(chan error, 1)
	go func() {
		_, err := tn.Read(make([]byte, MaxMTU))
		errc <- err
	}()
	testnet.WaitFor(t, 10*time.Second, "the reader waiting in the poller", testnet.Blocked(1, "github.com/ustacknet/ustack/tun.(*bsdTun).Read"))
	if err := tn.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read after a deadline in the past: %v, want %v", err, os.ErrDeadlineExceeded)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked 10 s after a deadline in the past")
	}
	if len(*destroyed) != 0 {
		t.Errorf("interface destroyed before Close: %v", *destroyed)
	}
	for range 2 {
		if err := tn.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if diff := cmp.Diff([]string{"tun7"}, *destroyed); diff != "" {
		t.Errorf("interfaces destroyed (-want +got):\n%s", diff)
	}
	if _, err := tn.Read(make([]byte, 100)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v, want %v", err, os.ErrClosed)
	}
	if _, err := tn.Write(rawBytes("198.18.0.2:80", "198.18.0.1:1000", 1)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v, want %v", err, os.ErrClosed)
	}
	// The far end sees the close: tun(4)'s reader never would, but a
	// socket at its end reads nothing, which Read reports as io.EOF.
	if n, err := peer.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("peer Read after Close = %d, %v; want 0, EOF", n, err)
	}
}

// TestBSDTunEndpoint runs the FreeBSD driver's link endpoint (the water
// endpoint over a bsdTun) both ways, and stops it by the read deadline,
// which leaves the device open, as Attach(nil) must.
func TestBSDTunEndpoint(t *testing.T) {
	tn, peer, destroyed := newTestBSDTun(t)
	tn.SetReadDeadline(time.Time{}) // the endpoint's reader waits until stopped
	ep := newWaterEndpoint(tn, 1500)
	gone := make(chan struct{})
	ep.onGone = func() { close(gone) }
	rec := &recordingDispatcher{got: map[uint16][]byte{}}
	ep.Attach(rec)
	const n = 20
	for i := range n {
		src := fmt.Sprintf("198.18.0.1:%d", 1000+i%2)
		if _, err := peer.Write(framed(2, rawBytes(src, "198.18.0.2:80", byte(i)))); err != nil {
			t.Fatal(err)
		}
	}
	waitTotal(t, rec, n)
	rec.mu.Lock()
	if diff := cmp.Diff(map[uint16][]byte{1000: {0, 2, 4, 6, 8, 10, 12, 14, 16, 18}, 1001: {1, 3, 5, 7, 9, 11, 13, 15, 17, 19}}, rec.got); diff != "" {
		t.Errorf("payloads delivered per flow (-want +got):\n%s", diff)
	}
	rec.mu.Unlock()

	src, dst := netip.MustParseAddrPort("198.18.0.2:80"), netip.MustParseAddrPort("198.18.0.1:1000")
	src6, dst6 := netip.MustParseAddrPort("[fd00::2]:80"), netip.MustParseAddrPort("[fd00::1]:1000")
	out1, out2 := rawPacket(src, dst, 0, 7), rawPacket(src6, dst6, 0, 8)
	want := [][]byte{framed(2, packetBytes(out1)), framed(28, packetBytes(out2))}
	var pkts gvstack.PacketBufferList
	pkts.PushBack(out1)
	pkts.PushBack(out2)
	written, werr := ep.WritePackets(pkts)
	pkts.Reset()
	if written != 2 || werr != nil {
		t.Fatalf("WritePackets = %d, %v; want 2, nil", written, werr)
	}
	var got [][]byte
	buf := make([]byte, 2048)
	for range 2 {
		m, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bytes.Clone(buf[:m]))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packets on the wire (-want +got):\n%s", diff)
	}

	ep.Attach(nil) // the deadline stops the reader
	ep.Wait()
	select {
	case <-gone:
		t.Error("onGone called for a stop that was asked for")
	default:
	}
	if len(*destroyed) != 0 {
		t.Errorf("Attach(nil) destroyed the interface: %v", *destroyed)
	}
	// The device stays open and writable until closed.
	pkts.PushBack(rawPacket(src, dst, 0, 9))
	written, werr = ep.WritePackets(pkts)
	pkts.Reset()
	if written != 1 || werr != nil {
		t.Errorf("WritePackets after Attach(nil) = %d, %v; want 1, nil", written, werr)
	}
	if err := ep.close(); err != nil {
		t.Errorf("close: %v", err)
	}
	pkts.PushBack(rawPacket(src, dst, 0, 10))
	written, werr = ep.WritePackets(pkts)
	pkts.Reset()
	if _, ok := werr.(*tcpip.ErrClosedForSend); written != 0 || !ok {
		t.Errorf("WritePackets after close = %d, %v; want 0, %v", written, werr, &tcpip.ErrClosedForSend{})
	}
}

// TestBSDTunGone checks that the reader reports a device that fails under
// it: here the far end closes, which tun(4) cannot do, but the path is
// the same as any read error nobody asked for.
func TestBSDTunGone(t *testing.T) {
	tn, peer, _ := newTestBSDTun(t)
	tn.SetReadDeadline(time.Time{}) // the endpoint's reader waits until stopped
	ep := newWaterEndpoint(tn, 1500)
	gone := make(chan struct{})
	ep.onGone = func() { close(gone) }
	ep.Attach(&recordingDispatcher{got: map[uint16][]byte{}})
	peer.Close()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("onGone not called 10 s after the device failed")
	}
	ep.Wait()
	ep.Attach(nil)
}

// BenchmarkBSDTunFraming measures what the FreeBSD driver's framing costs
// per packet: a 1500-byte IPv4 packet written through bsdTun (writev with
// the header) and read back through bsdTun (readv, header stripped), over
// a socket pair, against the same packet written and read with plain
// write and read on a socket pair (the baseline, sub-benchmark "plain").
//
//	go test -run '^$' -bench BSDTunFraming -count 5 ./tun/
func BenchmarkBSDTunFraming(b *testing.B) {
	pkt := make([]byte, 1500)
	copy(pkt, rawBytes("198.18.0.2:80", "198.18.0.1:1000", 1))
	pkt[0] = 0x45
	buf := make([]byte, MaxMTU)
	pair := func(b *testing.B) (a, c int) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		return fds[0], fds[1]
	}
	b.Run("plain", func(b *testing.B) {
		x, y := pair(b)
		fx, fy := os.NewFile(uintptr(x), "x"), os.NewFile(uintptr(y), "y")
		defer fx.Close()
		defer fy.Close()
		b.SetBytes(int64(len(pkt)))
		for b.Loop() {
			if _, err := fx.Write(pkt); err != nil {
				b.Fatal(err)
			}
			if _, err := fy.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bsdTun", func(b *testing.B) {
		x, y := pair(b)
		tx, err := newBSDTun(x, "tx")
		if err != nil {
			b.Fatal(err)
		}
		ty, err := newBSDTun(y, "ty")
		if err != nil {
			b.Fatal(err)
		}
		defer tx.Close()
		defer ty.Close()
		b.SetBytes(int64(len(pkt)))
		for b.Loop() {
			if _, err := tx.Write(pkt); err != nil {
				b.Fatal(err)
			}
			if _, err := ty.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
