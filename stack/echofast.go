package stack

import (
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// echoLink sits between the stack's link and gVisor's NIC and hands ICMP
// echo replies to their PingConns on the link's reader goroutine, when
// the link offers packets inline (tun's InlineDispatcher). Without it a
// reply crosses three goroutines: the device's reader, its hand-off
// worker (which runs gVisor's receive path) and the PingConn's reader.
// The reader may not enter the stack (see tun's handoff), but it can
// queue a reply on a PingConn of its own, which takes one goroutine
// switch off every round trip. Having queued one, the reader yields its
// processor, so that the PingConn's reader runs before the device's
// reader reads again (a read that mostly finds nothing, one system call
// on the reply's path); that yield roughly halved the time from the
// device to the PingConn's caller (bench/fastpath ping).
//
// It takes only what gVisor's ICMP endpoint would deliver the same way:
// an unfragmented echo reply with no IPv4 options or IPv6 extension
// headers, valid checksums, to one of the stack's addresses, from a
// unicast source, whose identifier a PingConn holds. Everything else,
// including any packet on a link with a link-layer header, goes on to
// gVisor. gVisor's own counters do not see the replies taken here.
type echoLink struct {
	nested.Endpoint
	ipOnly bool // the link carries bare IP packets, which DeliverInline parses

	// local is the set of the stack's addresses, replaced whole when
	// they change.
	local atomic.Pointer[map[netip.Addr]struct{}]

	count atomic.Int32 // len(socks), read without mu on every packet
	mu    sync.RWMutex // guards socks; a leaf
	socks map[echoKey]*echoInbox
}

// echoKey names an echo socket as gVisor demultiplexes replies to it: its
// bound address (the unspecified address of its family when bound to
// none) and its identifier.
type echoKey struct {
	addr netip.Addr
	id   uint16
}

// echoReply is one queued reply: the whole ICMP message and its sender.
type echoReply struct {
	from netip.Addr
	msg  []byte
}

// echoInbox holds the replies the fast path took for one PingConn, up to
// its receive buffer's size, as gVisor's endpoint would.
type echoInbox struct {
	limit int
	wake  chan struct{} // capacity 1: a reply was queued

	mu    sync.Mutex  // guards the fields below; a leaf
	q     []echoReply // queued replies from q[head] on
	head  int
	bytes int
}

func newEchoLink(lower gvstack.LinkEndpoint) *echoLink {
	l := &echoLink{
		ipOnly: lower.ARPHardwareType() == header.ARPHardwareNone && lower.MaxHeaderLength() == 0,
		socks:  make(map[echoKey]*echoInbox),
	}
	empty := map[netip.Addr]struct{}{}
	l.local.Store(&empty)
	l.Endpoint.Init(lower, l)
	return l
}

// setLocal records the stack's addresses.
func (l *echoLink) setLocal(addrs []netip.Prefix) {
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, p := range addrs {
		m[p.Addr()] = struct{}{}
	}
	l.local.Store(&m)
}

// register starts taking replies for the socket bound to addr (invalid
// for none, in family v6 or not) with identifier id, queuing up to limit
// bytes of them, and returns the socket's inbox. The caller unregisters
// it before the identifier can go to another socket.
func (l *echoLink) register(addr netip.Addr, v6 bool, id uint16, limit int) *echoInbox {
	in := &echoInbox{limit: limit, wake: make(chan struct{}, 1)}
	k := echoKey{addr: echoBound(addr, v6), id: id}
	l.mu.Lock()
	l.socks[k] = in
	l.count.Store(int32(len(l.socks)))
	l.mu.Unlock()
	return in
}

// unregister stops taking replies for in, registered under addr, v6, id.
func (l *echoLink) unregister(addr netip.Addr, v6 bool, id uint16, in *echoInbox) {
	k := echoKey{addr: echoBound(addr, v6), id: id}
	l.mu.Lock()
	if l.socks[k] == in {
		delete(l.socks, k)
	}
	l.count.Store(int32(len(l.socks)))
	l.mu.Unlock()
}

func echoBound(addr netip.Addr, v6 bool) netip.Addr {
	switch {
	case addr.IsValid() && !addr.IsUnspecified():
		return addr
	case v6:
		return netip.IPv6Unspecified()
	default:
		return netip.IPv4Unspecified()
	}
}

var _ inlineDispatcher = (*echoLink)(nil)

// DeliverInline takes pkt if it is an echo reply for a PingConn; see
// echoLink.
func (l *echoLink) DeliverInline(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool {
	if !l.ipOnly || l.count.Load() == 0 {
		return false
	}
	var src, dst netip.Addr
	var msg []byte
	var id uint16
	switch proto {
	case header.IPv4ProtocolNumber:
		b, ok := pkt.Data().PullUp(header.IPv4MinimumSize)
		if !ok {
			return false
		}
		ip := header.IPv4(b)
		total := int(ip.TotalLength())
		if b[0]>>4 != 4 || ip.HeaderLength() != header.IPv4MinimumSize || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) ||
			ip.More() || ip.FragmentOffset() != 0 || total > pkt.Data().Size() || total < header.IPv4MinimumSize+header.ICMPv4MinimumSize ||
			!ip.IsChecksumValid() {
			return false
		}
		if b, ok = pkt.Data().PullUp(total); !ok {
			return false
		}
		ip = header.IPv4(b[:total])
		icmp := header.ICMPv4(ip.Payload())
		if icmp.Type() != header.ICMPv4EchoReply || icmp.Code() != 0 || checksum.Checksum(icmp, 0) != 0xffff {
			return false
		}
		src, dst = netip.AddrFrom4(ip.SourceAddress().As4()), netip.AddrFrom4(ip.DestinationAddress().As4())
		if src == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return false
		}
		msg, id = icmp, icmp.Ident()
	case header.IPv6ProtocolNumber:
		b, ok := pkt.Data().PullUp(header.IPv6MinimumSize)
		if !ok {
			return false
		}
		ip := header.IPv6(b)
		total := header.IPv6MinimumSize + int(ip.PayloadLength())
		if b[0]>>4 != 6 || ip.NextHeader() != uint8(header.ICMPv6ProtocolNumber) ||
			total > pkt.Data().Size() || total < header.IPv6MinimumSize+header.ICMPv6EchoMinimumSize {
			return false
		}
		if b, ok = pkt.Data().PullUp(total); !ok {
			return false
		}
		ip = header.IPv6(b[:total])
		icmp := header.ICMPv6(ip.Payload())
		if icmp.Type() != header.ICMPv6EchoReply || icmp.Code() != 0 {
			return false
		}
		sum := header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(icmp)))
		if checksum.Checksum(icmp, sum) != 0xffff {
			return false
		}
		src, dst = netip.AddrFrom16(ip.SourceAddress().As16()), netip.AddrFrom16(ip.DestinationAddress().As16())
		msg, id = icmp, icmp.Ident()
	default:
		return false
	}
	if src.IsUnspecified() || src.IsMulticast() {
		return false
	}
	if _, ok := (*l.local.Load())[dst]; !ok {
		return false
	}
	l.mu.RLock()
	in := l.socks[echoKey{addr: dst, id: id}]
	if in == nil {
		in = l.socks[echoKey{addr: echoBound(netip.Addr{}, dst.Is6()), id: id}]
	}
	l.mu.RUnlock()
	if in == nil {
		return false
	}
	in.push(src, msg)
	return true
}

// DeliverDeclined passes up a packet DeliverInline declined.
func (l *echoLink) DeliverDeclined(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	l.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// push queues a copy of msg, or drops it if the inbox holds its limit
// already (as gVisor's endpoint drops on a full receive buffer). It runs
// on the link's reader, which it lets the PingConn's reader go before
// (see echoLink).
func (in *echoInbox) push(from netip.Addr, msg []byte) {
	in.mu.Lock()
	if in.bytes >= in.limit {
		in.mu.Unlock()
		return
	}
	in.q = append(in.q, echoReply{from: from, msg: append([]byte(nil), msg...)})
	in.bytes += len(msg)
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
		runtime.Gosched()
	default:
	}
}

// pop takes the oldest reply, if any.
func (in *echoInbox) pop() (echoReply, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.head == len(in.q) {
		return echoReply{}, false
	}
	r := in.q[in.head]
	in.q[in.head] = echoReply{}
	in.head++
	if in.head == len(in.q) {
		in.q, in.head = in.q[:0], 0 // empty: start again at the front
	}
	in.bytes -= len(r.msg)
	return r, true
}

// ready returns a channel that has a value when a reply may be queued; a
// nil inbox's never does.
func (in *echoInbox) ready() <-chan struct{} {
	if in == nil {
		return nil
	}
	return in.wake
}
