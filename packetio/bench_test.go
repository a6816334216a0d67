package packetio

import (
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

const benchBatch = 64

// BenchmarkOutbound measures one 1420-byte packet from the stack side
// through the queue and out of ReadPackets (in batches of 64): the queue
// holds a reference, not a copy, and ReadPackets copies once. Expect 0
// allocs/op.
func BenchmarkOutbound(b *testing.B) {
	l, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		ReserveHeaderBytes: 20,
		Payload:            buffer.MakeWithData(make([]byte, 1400)),
	})
	pkt.NetworkHeader().Push(20)[0] = 0x45
	defer pkt.DecRef()
	var list gvstack.PacketBufferList
	list.PushBack(pkt)
	ep := l.LinkEndpoint()
	bufs := make([][]byte, benchBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 16+1500)
	}
	sizes := make([]int, benchBatch)
	b.SetBytes(int64(pkt.Size()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ep.WritePackets(list); err != nil {
			b.Fatal(err)
		}
		if (i+1)%benchBatch == 0 || i == b.N-1 {
			if _, err := l.ReadPackets(bufs, sizes, 16); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// nopDispatcher takes inbound packets and does nothing with them.
type nopDispatcher struct{}

func (nopDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}
func (nopDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer)    {}

// BenchmarkInbound measures one 1420-byte packet into WritePackets (in
// batches of 64) up to the stack's dispatcher: one copy into pooled packet
// storage. Expect 0 allocs/op.
func BenchmarkInbound(b *testing.B) {
	l, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	l.LinkEndpoint().Attach(nopDispatcher{})
	bufs := make([][]byte, benchBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 16+1420)
		bufs[i][16] = 0x45
	}
	b.SetBytes(1420)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += benchBatch {
		n := min(benchBatch, b.N-i)
		if _, err := l.WritePackets(bufs[:n], 16); err != nil {
			b.Fatal(err)
		}
	}
}
