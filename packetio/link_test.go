package packetio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/testnet"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

func newLink(t testing.TB, cfg Config) *Link {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// packet returns a stack packet whose bytes are hdr (pushed as a network
// header, as the stack builds packets) followed by payload; released
// counts its release.
func packet(hdr, payload []byte, released *atomic.Int32) *gvstack.PacketBuffer {
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		ReserveHeaderBytes: len(hdr) + 16,
		Payload:            buffer.MakeWithData(payload),
		OnRelease:          func() { released.Add(1) },
	})
	copy(pkt.NetworkHeader().Push(len(hdr)), hdr)
	return pkt
}

// stackSend hands pkt to the link as the stack does, dropping the
// caller's reference afterwards.
func stackSend(l *Link, pkt *gvstack.PacketBuffer) tcpip.Error {
	var list gvstack.PacketBufferList
	list.PushBack(pkt)
	_, err := l.LinkEndpoint().WritePackets(list)
	pkt.DecRef()
	return err
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"zero", Config{}, ""},
		{"full", Config{MTU: 1420, QueueLen: 64, BlockTimeout: -1, TrustChecksums: true}, ""},
		{"mtu low", Config{MTU: 67}, "Config.MTU 67: want 0 (for 1500) or 68-65535"},
		{"mtu high", Config{MTU: 65536}, "Config.MTU 65536"},
		{"mtu negative", Config{MTU: -1}, "Config.MTU -1"},
		{"queue negative", Config{QueueLen: -1}, "Config.QueueLen -1: want 0 (for 1024) or 1-65536"},
		{"queue high", Config{QueueLen: 1<<16 + 1}, "Config.QueueLen 65537"},
		{"timeout high", Config{BlockTimeout: 2 * time.Minute}, "Config.BlockTimeout 2m0s: want at most 1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				l.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// Outbound: packets come out whole (pushed headers included), in order,
// at the offset, batched up to len(bufs), and every one is released.
func TestReadPacketsBatchesAndReleases(t *testing.T) {
	l := newLink(t, Config{})
	var released atomic.Int32
	var want []string
	for i := range 5 {
		hdr := []byte{0x45, byte(i), 2, 3}
		payload := bytes.Repeat([]byte{byte('a' + i)}, 10*i)
		want = append(want, string(hdr)+string(payload))
		if err := stackSend(l, packet(hdr, payload, &released)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	const offset = 16
	bufs := make([][]byte, 3)
	for i := range bufs {
		bufs[i] = make([]byte, offset+1500)
	}
	sizes := make([]int, 3)
	var got []string
	var batches []int
	for len(got) < 5 {
		n, err := l.ReadPackets(bufs, sizes, offset)
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, n)
		for i := range n {
			got = append(got, string(bufs[i][offset:offset+sizes[i]]))
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packets (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{3, 2}, batches); diff != "" {
		t.Errorf("batch sizes (-want +got):\n%s", diff)
	}
	if r := released.Load(); r != 5 {
		t.Errorf("%d packets released, want 5", r)
	}
	if s := l.Stats(); s.OutPackets != 5 || s.OutDropped != 0 {
		t.Errorf("stats %+v, want 5 out, 0 dropped", s)
	}
}

// A packet that does not fit its buffer is dropped, released and counted;
// the read goes on with the next.
func TestReadPacketsDropsOversized(t *testing.T) {
	l := newLink(t, Config{})
	var released atomic.Int32
	stackSend(l, packet([]byte{0x45}, make([]byte, 200), &released))
	stackSend(l, packet([]byte{0x45}, make([]byte, 50), &released))
	bufs, sizes := [][]byte{make([]byte, 100)}, []int{0}
	n, err := l.ReadPackets(bufs, sizes, 0)
	if err != nil || n != 1 || sizes[0] != 51 {
		t.Fatalf("ReadPackets = %d, %v, size %d; want 1, nil, 51", n, err, sizes[0])
	}
	if s := l.Stats(); s.OutDropped != 1 || released.Load() != 2 {
		t.Fatalf("stats %+v, released %d; want 1 dropped, 2 released", s, released.Load())
	}
}

func TestReadPacketsBadArguments(t *testing.T) {
	l := newLink(t, Config{})
	if _, err := l.ReadPackets(make([][]byte, 2), make([]int, 1), 0); err == nil {
		t.Error("short sizes: no error")
	}
	if _, err := l.ReadPackets(make([][]byte, 1), make([]int, 1), -1); err == nil {
		t.Error("negative offset: no error")
	}
	if _, err := l.WritePackets(make([][]byte, 1), -1); err == nil {
		t.Error("WritePackets negative offset: no error")
	}
	if n, err := l.ReadPackets(nil, nil, 0); n != 0 || err != nil {
		t.Errorf("empty read = %d, %v; want 0, nil", n, err)
	}
}

// Back-pressure: a send that finds the queue full waits until a read makes
// room, and loses nothing.
func TestBackPressureBlocksUntilRead(t *testing.T) {
	l := newLink(t, Config{QueueLen: 2})
	var released atomic.Int32
	for range 2 {
		stackSend(l, packet([]byte{0x45}, nil, &released))
	}
	sent := make(chan tcpip.Error, 1)
	go func() { sent <- stackSend(l, packet([]byte{0x45, 3}, nil, &released)) }()
	select {
	case err := <-sent:
		t.Fatalf("send on a full queue returned at once: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	bufs, sizes := [][]byte{make([]byte, 64)}, []int{0}
	if _, err := l.ReadPackets(bufs, sizes, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-sent:
		if err != nil {
			t.Fatalf("blocked send: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("send still blocked 5s after a read made room")
	}
	for range 2 {
		l.ReadPackets(bufs, sizes, 0)
	}
	if bufs[0][1] != 3 {
		t.Errorf("last packet read %x, want the blocked one", bufs[0][:sizes[0]])
	}
	if s := l.Stats(); s.OutBlocked != 1 || s.OutDropped != 0 || s.OutPackets != 3 {
		t.Errorf("stats %+v; want 1 blocked, 0 dropped, 3 out", s)
	}
	if r := released.Load(); r != 3 {
		t.Errorf("%d released, want 3", r)
	}
}

// With nobody reading, one send waits BlockTimeout and drops; the next
// ones drop at once until a read clears the stall.
func TestBackPressureTimeoutThenFailFast(t *testing.T) {
	const timeout = 100 * time.Millisecond
	l := newLink(t, Config{QueueLen: 1, BlockTimeout: timeout})
	var released atomic.Int32
	stackSend(l, packet([]byte{0x45}, nil, &released))
	start := time.Now()
	if err := stackSend(l, packet([]byte{0x45}, nil, &released)); !isNoBufferSpace(err) {
		t.Fatalf("send on a stuck queue: %v, want ErrNoBufferSpace", err)
	}
	if d := time.Since(start); d < timeout || d > timeout+2*time.Second {
		t.Errorf("first drop after %v, want about %v", d, timeout)
	}
	start = time.Now()
	for range 10 {
		stackSend(l, packet([]byte{0x45}, nil, &released))
	}
	if d := time.Since(start); d > timeout/2 {
		t.Errorf("10 sends to a stalled link took %v; want them dropped at once", d)
	}
	bufs, sizes := [][]byte{make([]byte, 64)}, []int{0}
	if _, err := l.ReadPackets(bufs, sizes, 0); err != nil {
		t.Fatal(err)
	}
	if err := stackSend(l, packet([]byte{0x45}, nil, &released)); err != nil {
		t.Fatalf("send after a read: %v", err)
	}
	if s := l.Stats(); s.OutDropped != 11 || s.OutBlocked != 1 {
		t.Errorf("stats %+v; want 11 dropped, 1 blocked", s)
	}
	l.Close()
	if r := released.Load(); r != 13 {
		t.Errorf("%d released after Close, want all 13", r)
	}
}

func TestNeverBlock(t *testing.T) {
	l := newLink(t, Config{QueueLen: 1, BlockTimeout: -1})
	var released atomic.Int32
	stackSend(l, packet([]byte{0x45}, nil, &released))
	start := time.Now()
	if err := stackSend(l, packet([]byte{0x45}, nil, &released)); !isNoBufferSpace(err) {
		t.Fatalf("send on a full queue: %v, want ErrNoBufferSpace", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("drop took %v, want at once", d)
	}
}

func isNoBufferSpace(err tcpip.Error) bool {
	_, ok := err.(*tcpip.ErrNoBufferSpace)
	return ok
}

// Close ends every blocked call on both sides with ErrClosed, releases the
// queued packets, and is idempotent.
func TestCloseUnblocks(t *testing.T) {
	l := newLink(t, Config{QueueLen: 1, BlockTimeout: time.Minute})
	var released atomic.Int32
	stackSend(l, packet([]byte{0x45}, nil, &released))
	sendErr := make(chan tcpip.Error, 1)
	go func() { sendErr <- stackSend(l, packet([]byte{0x45}, nil, &released)) }()
	// A second link, empty, for a blocked read.
	empty := newLink(t, Config{})
	readErr := make(chan error, 1)
	go func() {
		_, err := empty.ReadPackets([][]byte{make([]byte, 64)}, []int{0}, 0)
		readErr <- err
	}()
	testnet.WaitFor(t, 5*time.Second, "the send to block", func() error {
		if s := l.Stats(); s.OutBlocked != 1 {
			return fmt.Errorf("stats %+v, want 1 blocked", s)
		}
		return nil
	})
	testnet.WaitFor(t, 5*time.Second, "ReadPackets to block", testnet.Blocked(1, "github.com/ustacknet/ustack/packetio.(*Link).read"))
	l.Close()
	empty.Close()
	select {
	case err := <-sendErr:
		if _, ok := err.(*tcpip.ErrClosedForSend); !ok {
			t.Errorf("blocked send after Close: %v, want ErrClosedForSend", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("send still blocked 5s after Close")
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, ErrClosed) || !errors.Is(err, os.ErrClosed) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked read after Close: %v, want ErrClosed matching os.ErrClosed and net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still blocked 5s after Close")
	}
	if r := released.Load(); r != 2 {
		t.Errorf("%d released, want 2", r)
	}
	l.Close()
	if _, err := l.ReadPackets([][]byte{make([]byte, 64)}, []int{0}, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v", err)
	}
	if _, err := l.WritePackets([][]byte{{0x45}}, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
	if err := stackSend(l, packet([]byte{0x45}, nil, &released)); err == nil {
		t.Error("stack send after Close succeeded")
	}
}

func TestReadPacketsContext(t *testing.T) {
	l := newLink(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := l.ReadPacketsContext(ctx, [][]byte{make([]byte, 64)}, []int{0}, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadPacketsContext = %v, want context.DeadlineExceeded", err)
	}
}

// recorder is a stack.NetworkDispatcher that records what it is given.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	v := pkt.ToView()
	defer v.Release()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%#x %x", proto, v.AsSlice()))
}

func (*recorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// Inbound: IP packets are delivered with their protocol, copied (the
// caller may scribble on its buffers afterwards), garbage is dropped and
// counted, and nothing is delivered while detached.
func TestWritePacketsDelivers(t *testing.T) {
	l := newLink(t, Config{})
	var r recorder
	if n, err := l.WritePackets([][]byte{{0, 0x45, 1}}, 1); n != 1 || err != nil {
		t.Fatalf("detached write = %d, %v; want 1, nil", n, err)
	}
	l.LinkEndpoint().Attach(&r)
	if !l.LinkEndpoint().IsAttached() {
		t.Fatal("not attached")
	}
	bufs := [][]byte{
		{9, 9, 0x45, 1, 2},
		{9, 9, 0x60, 3},
		{9, 9, 0x10, 4}, // not IP
		{9, 9},          // empty after offset
		{9},             // shorter than offset
	}
	n, err := l.WritePackets(bufs, 2)
	if n != len(bufs) || err != nil {
		t.Fatalf("WritePackets = %d, %v; want %d, nil", n, err, len(bufs))
	}
	for _, b := range bufs {
		for i := range b {
			b[i] = 0xff
		}
	}
	want := []string{"0x800 450102", "0x86dd 6003"}
	r.mu.Lock()
	got := r.got
	r.mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if s := l.Stats(); s.InPackets != 2 || s.InDropped != 4 {
		t.Errorf("stats %+v; want 2 in, 4 dropped", s)
	}
	l.LinkEndpoint().Attach(nil)
	l.WritePackets([][]byte{{0x45}}, 0)
	if s := l.Stats(); s.InPackets != 2 || s.InDropped != 5 {
		t.Errorf("after detach: stats %+v; want 2 in, 5 dropped", s)
	}
}

// The stack closing the endpoint closes the link; Link.Close runs the
// stack's on-close action exactly once, outside its own lock (the action
// closes the endpoint again, as gVisor's RemoveNIC does).
func TestCloseRunsStackAction(t *testing.T) {
	l := newLink(t, Config{})
	ep := l.LinkEndpoint()
	runs := 0
	ep.SetOnCloseAction(func() {
		runs++
		ep.SetOnCloseAction(nil)
		ep.Close()
	})
	l.Close()
	l.Close()
	if runs != 1 {
		t.Errorf("on-close action ran %d times, want 1", runs)
	}
	l2 := newLink(t, Config{})
	l2.LinkEndpoint().Close()
	if _, err := l2.ReadPackets([][]byte{make([]byte, 64)}, []int{0}, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after the stack closed the endpoint: %v, want ErrClosed", err)
	}
}

func TestEndpointBasics(t *testing.T) {
	l := newLink(t, Config{MTU: 1420, TrustChecksums: true})
	ep := l.LinkEndpoint()
	if ep.MTU() != 1420 || l.MTU() != 1420 {
		t.Errorf("MTU %d/%d, want 1420", ep.MTU(), l.MTU())
	}
	ep.SetMTU(1280)
	if l.MTU() != 1280 {
		t.Errorf("MTU after SetMTU %d, want 1280", l.MTU())
	}
	if ep.Capabilities() != gvstack.CapabilityRXChecksumOffload {
		t.Errorf("capabilities %v, want RX checksum offload", ep.Capabilities())
	}
	if ep.MaxHeaderLength() != 0 || ep.LinkAddress() != "" {
		t.Error("a packet link has no link header or address")
	}
	if ep != l.LinkEndpoint() {
		t.Error("LinkEndpoint returns different values")
	}
}
