package tun

import (
	"context"
	"fmt"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// pipeQueueLen is how many packets each direction of a Pipe buffers before
// it drops, like a device's transmit queue.
const pipeQueueLen = 1024

// Pipe is two in-memory link endpoints wired back to back: what a stack
// writes to A arrives at B, and the other way round, each direction copied
// by its own goroutine as a TUN device between two stacks would. It carries
// IP packets without a link header; the network protocol of each packet
// is taken from its IP version nibble, and anything else is dropped. A full
// direction drops packets too.
type Pipe struct {
	a, b   *channel.Endpoint
	cancel context.CancelFunc
	wg     sync.WaitGroup // the two copying goroutines
	once   sync.Once
}

// NewPipe returns a running Pipe whose endpoints have the given MTU: 0
// means DefaultMTU, otherwise MinMTU..MaxMTU.
func NewPipe(mtu int) (*Pipe, error) {
	switch {
	case mtu == 0:
		mtu = DefaultMTU
	case mtu < MinMTU || mtu > MaxMTU:
		return nil, fmt.Errorf("tun: invalid pipe MTU %d: want 0 (for %d) or %d..%d", mtu, DefaultMTU, MinMTU, MaxMTU)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pipe{
		a:      channel.New(pipeQueueLen, uint32(mtu), ""),
		b:      channel.New(pipeQueueLen, uint32(mtu), ""),
		cancel: cancel,
	}
	p.wg.Add(2)
	go p.forward(ctx, p.a, p.b)
	go p.forward(ctx, p.b, p.a)
	return p, nil
}

// A returns one end of the pipe.
func (p *Pipe) A() gvstack.LinkEndpoint { return p.a }

// B returns the other end of the pipe.
func (p *Pipe) B() gvstack.LinkEndpoint { return p.b }

// Close stops the copying goroutines and waits for them, then closes both
// endpoints, dropping queued packets; writes after Close fail with
// tcpip.ErrClosedForSend. Close is idempotent. The stacks using the
// endpoints are not touched: destroy them separately, before or after.
func (p *Pipe) Close() {
	p.once.Do(func() {
		p.cancel()
		p.wg.Wait()
		p.a.Close()
		p.b.Close()
	})
}

// forward moves packets written to from into to's stack until ctx ends or
// from is closed (its stack removed the NIC).
func (p *Pipe) forward(ctx context.Context, from, to *channel.Endpoint) {
	defer p.wg.Done()
	for {
		pkt := from.ReadContext(ctx)
		if pkt == nil {
			return
		}
		deliver(to, pkt)
		pkt.DecRef()
	}
}

// deliver injects a fresh packet with pkt's bytes into to. The new packet
// shares pkt's storage copy-on-write (as gVisor's link/pipe does) but none
// of its metadata, as if it had crossed a wire.
func deliver(to *channel.Endpoint, pkt *gvstack.PacketBuffer) {
	// A stack's outbound packet has its IP header as the network header.
	first := pkt.NetworkHeader().Slice()
	if len(first) == 0 {
		for _, s := range pkt.AsSlices() {
			if len(s) > 0 {
				first = s
				break
			}
		}
	}
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(first) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	}
	if proto == 0 {
		return // not IP: a TUN device would not carry it either
	}
	in := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: pkt.ToBuffer()})
	to.InjectInbound(proto, in)
	in.DecRef()
}
