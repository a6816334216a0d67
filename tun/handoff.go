package tun

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxHandoffQueue is how many packets a handoff worker holds before it
// drops new ones, like a NIC's full receive ring.
const maxHandoffQueue = 4096

// maxHandoffBytes bounds the bytes a handoff worker holds, too: with the
// offloads a packet can be a 64 KiB TCP segment, and 4096 of those would
// be 256 MiB.
const maxHandoffBytes = 16 << 20

// handoff is the stack.NetworkDispatcher that a device's readers deliver
// to. It queues each packet for one of its workers, which deliver them to
// the stack's dispatcher, so that a reader never enters the stack.
//
// That matters because the stack removes a NIC (RemoveNIC, Destroy) while
// holding its own lock, and waits there for the link's readers to stop;
// the stack takes that same lock for every inbound packet (ipv4 looks up
// the NIC's name for iptables). A reader delivering inline would deadlock
// Destroy whenever a packet arrives at the wrong moment. The workers are
// not waited for under the stack's lock: they stop on their own once
// detached, and Device.Close waits for them.
//
// The hand-off also pipelines: the reader goes back to the descriptor
// while the worker runs the stack. Delivering inline on the offload path
// (tried once its readers used Go's poller) measured the same TCP
// connection rate and a 40% lower UDP receive rate (64-byte datagrams,
// kernel to stack: 134,000 against 230,000-240,000 per second on 2 CPUs,
// bench/fastpath udp).
type handoff struct {
	dispatcher gvstack.NetworkDispatcher
	inline     InlineDispatcher // dispatcher, when it is one
	workers    []handoffWorker
	stop       chan struct{} // closed to stop the workers
	stopOnce   sync.Once
	wg         sync.WaitGroup // the workers
}

type handoffWorker struct {
	wake chan struct{} // capacity 1: there is work

	mu    sync.Mutex // guards the fields below; a leaf (packets are delivered with it let go)
	q     []queuedPacket
	bytes int // the sizes of the packets in q
}

type queuedPacket struct {
	proto tcpip.NetworkProtocolNumber
	pkt   *gvstack.PacketBuffer // holds a reference
	link  bool                  // DeliverLinkPacket rather than DeliverNetworkPacket
	// declined by InlineDispatcher.DeliverInline: DeliverDeclined
	// rather than DeliverNetworkPacket
	declined bool
}

// InlineDispatcher is a stack.NetworkDispatcher that handles some packets
// on the device's reader goroutine, before the hand-off: those it can
// handle without entering the stack (the hand-off keeps readers out of
// the stack's locks; see handoff), saving a goroutine switch each. A
// device's readers offer every packet to DeliverInline first; a packet
// it declines goes through the hand-off to DeliverDeclined instead of
// DeliverNetworkPacket, so it is not examined twice.
type InlineDispatcher interface {
	gvstack.NetworkDispatcher
	// DeliverInline handles pkt and reports true, or reports false
	// and leaves pkt as it was. pkt is the caller's: it is valid only
	// during the call (IncRef it to keep it). It must not call into the
	// stack, nor block.
	DeliverInline(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool
	// DeliverDeclined delivers a packet DeliverInline declined, on the
	// hand-off's worker.
	DeliverDeclined(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer)
}

// startHandoff starts n workers delivering to dispatcher.
func startHandoff(dispatcher gvstack.NetworkDispatcher, n int) *handoff {
	inline, _ := dispatcher.(InlineDispatcher)
	h := &handoff{
		dispatcher: dispatcher,
		inline:     inline,
		workers:    make([]handoffWorker, max(n, 1)),
		stop:       make(chan struct{}),
	}
	for i := range h.workers {
		h.workers[i].wake = make(chan struct{}, 1)
		h.wg.Add(1)
		go h.run(&h.workers[i])
	}
	return h
}

var _ gvstack.NetworkDispatcher = (*handoff)(nil)

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (h *handoff) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if h.inline != nil && h.inline.DeliverInline(proto, pkt) {
		return
	}
	h.enqueue(queuedPacket{proto: proto, pkt: pkt, declined: h.inline != nil})
}

// DeliverLinkPacket implements stack.NetworkDispatcher.
func (h *handoff) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	h.enqueue(queuedPacket{proto: proto, pkt: pkt, link: true})
}

func (h *handoff) enqueue(p queuedPacket) {
	select {
	case <-h.stop:
		return // nobody would deliver or release it
	default:
	}
	// Not airtight against a concurrent stopWorkers, which does not
	// happen: the readers are stopped and waited for before it.
	w := &h.workers[0]
	if len(h.workers) > 1 {
		w = &h.workers[flowHash(p.pkt)%uint32(len(h.workers))]
	}
	w.mu.Lock()
	size := p.pkt.Size()
	if len(w.q) >= maxHandoffQueue || w.bytes+size > maxHandoffBytes {
		w.mu.Unlock()
		return // dropped
	}
	p.pkt.IncRef()
	w.q = append(w.q, p)
	w.bytes += size
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // already signalled
	}
}

// run delivers w's packets until stopped, then drops what is left.
func (h *handoff) run(w *handoffWorker) {
	defer h.wg.Done()
	var batch []queuedPacket
	for {
		select {
		case <-w.wake:
		case <-h.stop:
		}
		select {
		case <-h.stop: // takes precedence over work
			w.mu.Lock()
			batch, w.q, w.bytes = w.q, nil, 0
			w.mu.Unlock()
			for _, p := range batch {
				p.pkt.DecRef()
			}
			return
		default:
		}
		w.mu.Lock()
		batch, w.q, w.bytes = w.q, batch[:0], 0
		w.mu.Unlock()
		for i, p := range batch {
			switch {
			case p.link:
				h.dispatcher.DeliverLinkPacket(p.proto, p.pkt)
			case p.declined:
				h.inline.DeliverDeclined(p.proto, p.pkt)
			default:
				h.dispatcher.DeliverNetworkPacket(p.proto, p.pkt)
			}
			p.pkt.DecRef()
			batch[i] = queuedPacket{}
		}
	}
}

// stopWorkers tells the workers to stop without waiting for them.
func (h *handoff) stopWorkers() {
	h.stopOnce.Do(func() { close(h.stop) })
}

// wait waits for the workers to stop. Never call it with the stack's lock
// held (that is, from the stack's calls into the link endpoint).
func (h *handoff) wait() { h.wg.Wait() }

// flowHash hashes pkt's addresses, transport protocol and ports (FNV-1a),
// so that every packet of a flow goes to the same worker and stays in
// order.
func flowHash(pkt *gvstack.PacketBuffer) uint32 {
	// The reader has not parsed the packet: it is all in Data, whose first
	// view (128 bytes in fdbased) holds the headers, so this does not copy.
	b, ok := pkt.Data().PullUp(min(pkt.Data().Size(), header.IPv6MinimumSize+4))
	if !ok {
		return 0
	}
	var key []byte
	switch header.IPVersion(b) {
	case header.IPv4Version:
		if len(b) < header.IPv4MinimumSize {
			return 0
		}
		ip := header.IPv4(b)
		key = b[12:20] // source and destination
		hl := int(ip.HeaderLength())
		if ip.FragmentOffset() == 0 && !ip.More() && len(b) >= hl+4 {
			return fnv(fnv(fnv(2166136261, key), []byte{ip.Protocol()}), b[hl:hl+4])
		}
		return fnv(fnv(2166136261, key), []byte{ip.Protocol()})
	case header.IPv6Version:
		if len(b) < header.IPv6MinimumSize {
			return 0
		}
		key = b[8:40]
		next := b[6]
		if !header.IsExtensionHeader(next) && len(b) >= header.IPv6MinimumSize+4 {
			return fnv(fnv(fnv(2166136261, key), []byte{next}), b[40:44])
		}
		return fnv(fnv(2166136261, key), []byte{next})
	}
	return 0
}

func fnv(h uint32, b []byte) uint32 {
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}
