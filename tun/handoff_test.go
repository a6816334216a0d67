package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/testnet"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// rawPacket builds an unparsed inbound packet, as a reader would: an IP
// header for src -> dst with protocol UDP, then ports and a payload.
func rawPacket(src, dst netip.AddrPort, fragOffset uint16, payload byte) *gvstack.PacketBuffer {
	l4 := make([]byte, 8)
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	l4 = append(l4, payload)
	var b []byte
	if src.Addr().Is4() {
		b = make([]byte, header.IPv4MinimumSize)
		header.IPv4(b).Encode(&header.IPv4Fields{
			TotalLength:    uint16(len(b) + len(l4)),
			TTL:            64,
			Protocol:       uint8(header.UDPProtocolNumber),
			SrcAddr:        tcpip.AddrFrom4(src.Addr().As4()),
			DstAddr:        tcpip.AddrFrom4(dst.Addr().As4()),
			FragmentOffset: fragOffset,
		})
	} else {
		b = make([]byte, header.IPv6MinimumSize)
		header.IPv6(b).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(len(l4)),
			TransportProtocol: header.UDPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           tcpip.AddrFrom16(src.Addr().As16()),
			DstAddr:           tcpip.AddrFrom16(dst.Addr().As16()),
		})
	}
	return gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(append(b, l4...))})
}

func TestFlowHash(t *testing.T) {
	ap := netip.MustParseAddrPort
	hash := func(src, dst string, frag uint16) uint32 {
		pkt := rawPacket(ap(src), ap(dst), frag, 0)
		defer pkt.DecRef()
		return flowHash(pkt)
	}
	tests := []struct {
		name     string
		a, b     [2]string
		fragA    uint16
		fragB    uint16
		wantSame bool
	}{
		{"same v4 flow", [2]string{"198.18.0.1:1000", "198.18.0.2:80"}, [2]string{"198.18.0.1:1000", "198.18.0.2:80"}, 0, 0, true},
		{"v4 source port differs", [2]string{"198.18.0.1:1000", "198.18.0.2:80"}, [2]string{"198.18.0.1:1001", "198.18.0.2:80"}, 0, 0, false},
		{"v4 address differs", [2]string{"198.18.0.1:1000", "198.18.0.2:80"}, [2]string{"198.18.0.3:1000", "198.18.0.2:80"}, 0, 0, false},
		// A later fragment has no ports: all fragments of a datagram hash
		// alike, whatever its ports.
		{"v4 fragments ignore ports", [2]string{"198.18.0.1:1000", "198.18.0.2:80"}, [2]string{"198.18.0.1:2000", "198.18.0.2:90"}, 8, 16, true},
		{"same v6 flow", [2]string{"[fd00::1]:1000", "[fd00::2]:80"}, [2]string{"[fd00::1]:1000", "[fd00::2]:80"}, 0, 0, true},
		{"v6 port differs", [2]string{"[fd00::1]:1000", "[fd00::2]:80"}, [2]string{"[fd00::1]:1000", "[fd00::2]:81"}, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ha, hb := hash(tt.a[0], tt.a[1], tt.fragA), hash(tt.b[0], tt.b[1], tt.fragB)
			if (ha == hb) != tt.wantSame {
				t.Errorf("hashes %#x and %#x: same = %v, want %v", ha, hb, ha == hb, tt.wantSame)
			}
		})
	}
}

// recordingDispatcher records the last payload byte of each delivered
// packet, per source port.
type recordingDispatcher struct {
	mu    sync.Mutex
	got   map[uint16][]byte
	total int
}

func (r *recordingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	b := pkt.Data().AsRange().ToSlice()
	r.mu.Lock()
	defer r.mu.Unlock()
	port := binary.BigEndian.Uint16(b[header.IPv4MinimumSize:])
	r.got[port] = append(r.got[port], b[len(b)-1])
	r.total++
}

func (r *recordingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// TestHandoffKeepsFlowsInOrder sends interleaved flows through four workers
// and checks that each flow arrives complete and in order.
func TestHandoffKeepsFlowsInOrder(t *testing.T) {
	rec := &recordingDispatcher{got: map[uint16][]byte{}}
	h := startHandoff(rec, 4)
	const flows, perFlow = 8, 200
	for i := range perFlow {
		for f := range flows {
			pkt := rawPacket(netip.AddrPortFrom(kernel4.Addr(), uint16(1000+f)), netip.AddrPortFrom(stack4.Addr(), 80), 0, byte(i))
			h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
			pkt.DecRef()
		}
	}
	testnet.WaitFor(t, 10*time.Second, "every packet delivered", func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.total != flows*perFlow {
			return fmt.Errorf("delivered %d packets, want %d", rec.total, flows*perFlow)
		}
		return nil
	})
	h.stopWorkers()
	h.wait()
	for f := range flows {
		got := rec.got[uint16(1000+f)]
		for i, b := range got {
			if b != byte(i) {
				t.Fatalf("flow %d: packet %d carries %d: out of order", f, i, b)
			}
		}
	}
}

// blockingDispatcher blocks deliveries until released, and reports the
// first one.
type blockingDispatcher struct{ entered, release chan struct{} }

func (b *blockingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.release
}
func (b *blockingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// TestHandoffStopDropsQueued fills the queue behind a blocked delivery: it
// must hold exactly maxHandoffQueue packets and drop the rest, and stopping
// must release what it holds (TestMain checks references).
func TestHandoffStopDropsQueued(t *testing.T) {
	bd := &blockingDispatcher{entered: make(chan struct{}, 1), release: make(chan struct{})}
	h := startHandoff(bd, 1)
	deliver := func(n int) {
		for i := range n {
			pkt := rawPacket(netip.MustParseAddrPort("198.18.0.1:1"), netip.MustParseAddrPort("198.18.0.2:2"), 0, byte(i))
			h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
			pkt.DecRef()
		}
	}
	deliver(1)
	<-bd.entered // the worker holds the first packet and is blocked
	deliver(maxHandoffQueue + 100)
	h.workers[0].mu.Lock()
	queued := len(h.workers[0].q)
	h.workers[0].mu.Unlock()
	if queued != maxHandoffQueue {
		t.Errorf("%d packets queued, want exactly %d (the rest dropped)", queued, maxHandoffQueue)
	}
	h.stopWorkers()
	close(bd.release)
	h.wait()
}

// TestHandoffBoundsBytes fills the queue with 60,000-byte packets (what the
// offload path delivers) behind a blocked delivery: it must stop at
// maxHandoffBytes, far below maxHandoffQueue packets.
func TestHandoffBoundsBytes(t *testing.T) {
	bd := &blockingDispatcher{entered: make(chan struct{}, 1), release: make(chan struct{})}
	h := startHandoff(bd, 1)
	const size = 60000
	deliver := func(n int) {
		for range n {
			b := make([]byte, size)
			b[0] = 0x45 // IPv4, for flowHash
			pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
			h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
			pkt.DecRef()
		}
	}
	deliver(1)
	<-bd.entered
	want := maxHandoffBytes / size
	deliver(want + 10)
	h.workers[0].mu.Lock()
	queued, bytes := len(h.workers[0].q), h.workers[0].bytes
	h.workers[0].mu.Unlock()
	if queued != want || bytes != want*size {
		t.Errorf("%d packets (%d bytes) queued, want exactly %d (%d bytes)", queued, bytes, want, want*size)
	}
	h.stopWorkers()
	close(bd.release)
	h.wait()
}

// inlineDispatcher takes the packets whose payload byte is odd inline and
// declines the others.
type inlineDispatcher struct {
	recordingDispatcher
	inline   []byte // taken inline, in order
	declined recordingDispatcher
	bypassed int // packets that reached DeliverNetworkPacket
}

func (d *inlineDispatcher) DeliverInline(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool {
	b := pkt.Data().AsRange().ToSlice()
	if b[len(b)-1]%2 == 0 {
		return false
	}
	d.mu.Lock()
	d.inline = append(d.inline, b[len(b)-1])
	d.mu.Unlock()
	return true
}

func (d *inlineDispatcher) DeliverDeclined(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	d.declined.DeliverNetworkPacket(proto, pkt)
}

func (d *inlineDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {
	d.mu.Lock()
	d.bypassed++
	d.mu.Unlock()
}

// TestHandoffInline: an InlineDispatcher gets each packet on the reader's
// goroutine first (what it takes is handled before DeliverNetworkPacket
// returns); what it declines reaches DeliverDeclined in order through the
// worker, and nothing reaches DeliverNetworkPacket.
func TestHandoffInline(t *testing.T) {
	d := &inlineDispatcher{declined: recordingDispatcher{got: map[uint16][]byte{}}}
	h := startHandoff(d, 2)
	const n = 100
	for i := range n {
		pkt := rawPacket(netip.AddrPortFrom(kernel4.Addr(), 1000), netip.AddrPortFrom(stack4.Addr(), 80), 0, byte(i))
		h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
		d.mu.Lock()
		taken := len(d.inline)
		d.mu.Unlock()
		if want := (i + 1) / 2; taken != want {
			t.Fatalf("after packet %d: %d taken inline, want %d (synchronously)", i, taken, want)
		}
	}
	testnet.WaitFor(t, 10*time.Second, "the declined packets delivered", func() error {
		d.declined.mu.Lock()
		defer d.declined.mu.Unlock()
		if d.declined.total != n/2 {
			return fmt.Errorf("%d packets declined and delivered, want %d", d.declined.total, n/2)
		}
		return nil
	})
	h.stopWorkers()
	h.wait()
	for i, b := range d.declined.got[1000] {
		if b != byte(2*i) {
			t.Fatalf("declined packet %d carries %d, want %d", i, b, 2*i)
		}
	}
	if d.bypassed != 0 {
		t.Errorf("%d packets reached DeliverNetworkPacket, want 0", d.bypassed)
	}
}
