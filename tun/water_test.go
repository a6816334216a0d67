package tun

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// fakeWater is a water device in memory, without read deadlines, as
// water's macOS and Windows devices are: Read returns the packets sent on
// in, or failRead's error; Write records; Close unblocks Read.
type fakeWater struct {
	in        chan []byte
	failRead  chan error
	closed    chan struct{}
	closeOnce sync.Once

	mu  sync.Mutex // guards out
	out [][]byte
}

func newFakeWater() *fakeWater {
	return &fakeWater{in: make(chan []byte), failRead: make(chan error, 1), closed: make(chan struct{})}
}

func (f *fakeWater) Read(b []byte) (int, error) {
	select {
	case p := <-f.in:
		return copy(b, p), nil
	case err := <-f.failRead:
		return 0, err
	case <-f.closed:
		return 0, os.ErrClosed
	}
}

func (f *fakeWater) Write(b []byte) (int, error) {
	select {
	case <-f.closed:
		return 0, os.ErrClosed
	default:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.out = append(f.out, bytes.Clone(b))
	return len(b), nil
}

func (f *fakeWater) Close() error {
	f.closeOnce.Do(func() { close(f.closed) })
	return nil
}

var _ io.ReadWriteCloser = (*fakeWater)(nil)

func packetBytes(pkt *gvstack.PacketBuffer) []byte {
	var b []byte
	for _, s := range pkt.AsSlices() {
		b = append(b, s...)
	}
	return b
}

// waitTotal waits (bounded) until rec has n packets.
func waitTotal(t *testing.T, rec *recordingDispatcher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec.mu.Lock()
		got := rec.total
		rec.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d packets, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWaterEndpoint runs the water driver's endpoint over a fake device:
// packets in both directions, non-IP input dropped, and the reader stopped
// by closing the device, the path water's macOS and Windows devices take.
func TestWaterEndpoint(t *testing.T) {
	f := newFakeWater()
	ep := newWaterEndpoint(f, 1500)
	gone := make(chan struct{})
	ep.onGone = func() { close(gone) }
	rec := &recordingDispatcher{got: map[uint16][]byte{}}
	ep.Attach(rec)
	if !ep.IsAttached() {
		t.Fatal("not attached after Attach")
	}
	src, dst := netip.AddrPortFrom(kernel4.Addr(), 1000), netip.AddrPortFrom(stack4.Addr(), 80)
	src6, dst6 := netip.AddrPortFrom(kernel6.Addr(), 1001), netip.AddrPortFrom(stack6.Addr(), 80)
	for i, p := range []*gvstack.PacketBuffer{rawPacket(src, dst, 0, 1), rawPacket(src, dst, 0, 2), rawPacket(src6, dst6, 0, 3)} {
		f.in <- packetBytes(p)
		p.DecRef()
		if i == 1 {
			f.in <- []byte{0x00, 1, 2, 3} // not IP: dropped
		}
	}
	waitTotal(t, rec, 3) // the non-IP packet is not among them
	if diff := cmp.Diff([]byte{1, 2}, rec.got[1000]); diff != "" {
		t.Errorf("IPv4 payloads delivered (-want +got):\n%s", diff)
	}

	var pkts gvstack.PacketBufferList
	out1, out2 := rawPacket(dst, src, 0, 7), rawPacket(dst6, src6, 0, 8)
	want := [][]byte{packetBytes(out1), packetBytes(out2)}
	pkts.PushBack(out1)
	pkts.PushBack(out2)
	n, err := ep.WritePackets(pkts)
	pkts.Reset()
	if n != 2 || err != nil {
		t.Fatalf("WritePackets = %d, %v; want 2, nil", n, err)
	}
	f.mu.Lock()
	if diff := cmp.Diff(want, f.out); diff != "" {
		t.Errorf("packets written (-want +got):\n%s", diff)
	}
	f.mu.Unlock()

	ep.Attach(nil) // no deadline: closes the device to stop the reader
	ep.Wait()
	if ep.IsAttached() {
		t.Error("attached after Attach(nil)")
	}
	ep.Attach(rec) // once detached, for good
	if ep.IsAttached() {
		t.Error("attached again after Attach(nil)")
	}
	select {
	case <-gone:
		t.Error("onGone called for a stop that was asked for")
	default:
	}
	pkts.PushBack(rawPacket(dst, src, 0, 9))
	n, err = ep.WritePackets(pkts)
	pkts.Reset()
	if _, ok := err.(*tcpip.ErrClosedForSend); n != 0 || !ok {
		t.Errorf("WritePackets on a closed device = %d, %v; want 0, %v", n, err, &tcpip.ErrClosedForSend{})
	}
	if err := ep.close(); err != nil {
		t.Errorf("close after the stop: %v", err)
	}
}

// TestWaterEndpointGone checks that a read error nobody asked for (the
// device deleted underneath) stops the reader and reports it.
func TestWaterEndpointGone(t *testing.T) {
	f := newFakeWater()
	ep := newWaterEndpoint(f, 1500)
	gone := make(chan struct{})
	ep.onGone = func() { close(gone) }
	ep.Attach(&recordingDispatcher{got: map[uint16][]byte{}})
	f.failRead <- errors.New("device gone")
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("onGone not called 10 s after the read failed")
	}
	ep.Wait()
	ep.Attach(nil)
	ep.close()
}
