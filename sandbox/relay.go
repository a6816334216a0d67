//go:build linux

package sandbox

import (
	"context"
	"fmt"
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ustacknet/ustack/tun"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The TCP relay carries the connections the guest opens without a TCP
// endpoint of gVisor's for each: it translates between the guest's
// segments and a host socket, the way pasta does. The host socket's
// buffers are the flow's buffers, so there is no second TCP stack in the
// middle: guest data is written to the host socket as it arrives in order
// and acknowledged once the socket (or, when it is full, a bounded buffer
// of the flow) holds it. Host data stays in the host socket's receive
// queue until the guest acknowledges it: the relay peeks at it to send
// and to send again (MSG_PEEK at the socket's SO_PEEK_OFF offset), and
// takes it off the queue (MSG_TRUNC) once acknowledged, so the host peer's
// window is the guest's. On a kernel without SO_PEEK_OFF for TCP (before
// Linux 6.9) host data is read into the flow as far as the guest's window
// allows, and kept until acknowledged. What the relay holds in user space
// either way comes from one budget (relaybudget.go).
//
// The relay sits between the link and the gateway's stack. It takes the
// guest's SYNs and every later segment of the flows it owns; everything
// else (UDP, ICMP, the connections the gateway opens into the guest for
// -p forwards, segments of no flow) goes on to gVisor, which answers a
// stray segment with a reset as before. On an Ethernet link (a TAP
// device, as rootlesskit makes) the relay takes the frames sent to its
// MAC address and answers to the MAC the guest's SYN came from; gVisor
// answers the guest's ARP and neighbour solicitations as before.
//
// What the relay offers the guest: its MSS from the link's MTU, window
// scaling when the guest offers it, no timestamps and no SACK (the link
// neither loses nor reorders on its own). It retransmits on a timer with
// exponential back-off from relayRTO and after three duplicate ACKs, and
// probes a zero window. Inbound IP fragments are left to gVisor: Linux
// sets DF on TCP, so a guest's segments are never fragments.
//
// A flow costs no goroutine: its host socket is a raw descriptor in the
// relay's epoll set (relayhost.go), connected, read and written where the
// event that needs it is handled, and it has no TCP endpoint, timers or
// processor hand-off in gVisor. A short connection costs about half the
// CPU of one carried by gVisor's forwarder (docs/BENCHMARKS.md).

const (
	// relayWindow caps guest data accepted but not yet taken by the host
	// socket (its send buffer full), per flow; it is the window the relay
	// offers, in units of 1<<relayWS bytes when the guest scales.
	relayWindow = 2 << 20
	relayWS     = 6
	// relaySendMax caps host data read but not yet acknowledged by the
	// guest, per flow.
	relaySendMax = 4 << 20
	// relayReadFirst is a flow's first host read, and relayReadMax the
	// read once one has filled its buffer.
	relayReadFirst = 4 << 10
	relayReadMax   = 64 << 10
	// relayDiscardBatch is how many acknowledged bytes a peek flow
	// leaves in its host socket before it takes them off in one call.
	// They count against the socket's receive buffer (the window the
	// host peer sees) meanwhile.
	relayDiscardBatch = 64 << 10
	relayRTO          = 200 * time.Millisecond // Linux's minimum RTO
	// relayDelAck is how long an ACK for a small segment may wait for
	// data to ride on. Linux waits 40 ms at least; a host answer on this
	// path comes within a fraction of a millisecond.
	relayDelAck = time.Millisecond
	relayMaxRTO = 30 * time.Second
	// relayRetries is how many times a segment is sent again, with no
	// answer from the guest, before the flow is reset: with the back-off
	// above, 51 s of silence, within the FIN timeout, so that a guest
	// gone silent mid-transfer (a killed namespace whose device lingers)
	// frees its flow as soon as one that closed. The link is a local one
	// to a kernel that answers even when its programs are stopped, so
	// that long a silence means the guest is gone. Any acceptable ACK
	// starts the count again: a guest that answers the probes of its
	// zero window keeps the flow as long as it likes (RFC 1122
	// 4.2.2.17).
	relayRetries = 7
	// relaySynTimeout ends a flow whose guest has not completed its
	// handshake this long after its SYN.
	relaySynTimeout = 10 * time.Second
	// relayFinTimeout ends a flow with one side closed (a FIN sent or
	// taken) when nothing has moved either way for this long.
	relayFinTimeout = 60 * time.Second
	// relayKeepIdle is the silence, in seconds, after which a host
	// socket's keepalive probes a host peer that may have died without a
	// word (keepAlive).
	relayKeepIdle = 600
)

// relayTiming holds the relay's timer settings; tests scale them down.
type relayTiming struct {
	rto, maxRTO, synTimeout, finTimeout, idleTimeout time.Duration
}

func defaultTiming(idle time.Duration) relayTiming {
	return relayTiming{rto: relayRTO, maxRTO: relayMaxRTO, synTimeout: relaySynTimeout, finTimeout: relayFinTimeout, idleTimeout: idle}
}

type relayKey struct{ guest, remote netip.AddrPort }

// relay is the link endpoint wrapper described above.
type relay struct {
	nested.Endpoint
	g        *Gateway
	verify   bool              // the link leaves inbound checksums to the stack
	eth      bool              // the link is Ethernet (a TAP device): frames need a header
	hdrLen   int               // the link's header
	mac      tcpip.LinkAddress // ours on an Ethernet link
	gso      bool              // the link hands the kernel segments to split and sum
	gsoMax   uint32
	mss4     int // MSS the link's MTU allows
	mss6     int
	ipID     atomic.Uint32
	syns     atomic.Int32 // handshakes in progress
	poll     *hostPoll
	isnSeed  maphash.Seed
	dialWait time.Duration // a host connect's deadline
	tm       relayTiming
	failed   atomic.Bool // the host poller stopped: new flows are refused
	noPeek   atomic.Bool // the kernel has no SO_PEEK_OFF for TCP (before Linux 6.9): flows read into q
	refusals refusalLog
	budget   relayBudget

	// LOCK ORDERING: rflow.mu > relay.mu. A flow's lock may be held
	// while taking the relay's (drop, open); never the other way round.

	mu      sync.Mutex // guards the fields below
	flows   map[relayKey]*rflow
	byID    map[uint64]*rflow // by the id their host socket's events carry
	nextID  uint64
	closing bool
}

func newRelay(g *Gateway, link gvstack.LinkEndpoint) (*relay, error) {
	p, err := newHostPoll()
	if err != nil {
		return nil, err
	}
	r := &relay{g: g, poll: p, dialWait: dialTimeout, isnSeed: maphash.MakeSeed(), flows: make(map[relayKey]*rflow), byID: make(map[uint64]*rflow)}
	r.tm = defaultTiming(g.cfg.TCPIdleTimeout)
	if g.cfg.timing != nil {
		r.tm = *g.cfg.timing
	}
	r.refusals.log = g.log
	r.noPeek.Store(g.cfg.noPeek)
	r.budget = relayBudget{r: r, limit: g.cfg.RelayBuffer}
	r.Endpoint.Init(link, r)
	r.verify = link.Capabilities()&gvstack.CapabilityRXChecksumOffload == 0
	r.eth = link.ARPHardwareType() == header.ARPHardwareEther
	r.hdrLen = int(link.MaxHeaderLength())
	r.mac = link.LinkAddress()
	if ge, ok := link.(gvstack.GSOEndpoint); ok && ge.SupportedGSO() == gvstack.HostGSOSupported {
		r.gso, r.gsoMax = true, ge.GSOMaxSize()
	}
	mtu := int(link.MTU())
	r.mss4 = mtu - header.IPv4MinimumSize - header.TCPMinimumSize
	r.mss6 = mtu - header.IPv6MinimumSize - header.TCPMinimumSize
	return r, nil
}

// start starts the goroutine that waits for the host sockets.
func (r *relay) start() {
	if !r.g.go_(func() { r.poll.run(r) }) {
		r.poll.close()
	}
}

// relayUsable reports whether the relay can serve link: an IP link (a TUN
// device), or Ethernet (a TAP device), whose frames the relay addresses
// to the MAC address the guest's SYN came from. gVisor keeps answering
// the guest's ARP and neighbour solicitations for the gateway.
func relayUsable(link gvstack.LinkEndpoint) bool {
	switch link.ARPHardwareType() {
	case header.ARPHardwareNone:
		return link.MaxHeaderLength() == 0
	case header.ARPHardwareEther:
		return link.MaxHeaderLength() == header.EthernetMinimumSize && len(link.LinkAddress()) == header.EthernetAddressSize
	}
	return false
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (r *relay) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if !r.DeliverInline(proto, pkt) {
		r.Endpoint.DeliverNetworkPacket(proto, pkt)
	}
}

var _ tun.InlineDispatcher = (*relay)(nil)

// DeliverInline implements tun.InlineDispatcher: a TUN device's reader
// hands the relay its segments itself, and only what the relay declines
// goes through the device's hand-off to the stack. The relay never
// enters the stack, and its system calls do not block.
func (r *relay) DeliverInline(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool {
	return (proto == header.IPv4ProtocolNumber || proto == header.IPv6ProtocolNumber) && r.take(proto, pkt)
}

// DeliverDeclined implements tun.InlineDispatcher.
func (r *relay) DeliverDeclined(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	r.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// shut resets every flow's host side, stops the relay taking new ones and
// ends the host poller.
func (r *relay) shut() {
	r.mu.Lock()
	r.closing = true
	fs := make([]*rflow, 0, len(r.flows))
	for _, f := range r.flows {
		fs = append(fs, f)
	}
	r.mu.Unlock()
	for _, f := range fs {
		f.mu.Lock()
		f.finish(false)
		f.mu.Unlock()
	}
	r.refusals.stop()
	r.poll.close()
}

// live returns the number of flows the relay holds.
func (r *relay) live() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.flows)
}

// seg is a parsed TCP segment from the guest.
type seg struct {
	key     relayKey
	v6      bool
	mac     tcpip.LinkAddress // the guest's, on an Ethernet link
	src     tcpip.Address     // key's addresses, as gVisor's header code takes them
	dst     tcpip.Address
	seq     seqnum.Value
	ack     seqnum.Value
	flags   header.TCPFlags
	wnd     uint32 // unscaled
	opts    []byte
	payload [][]byte // views of the packet, valid during take
	n       int      // payload length
}

// take handles pkt if it is the relay's, reporting whether it was.
func (r *relay) take(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool {
	var s seg
	var ipLen, total int
	var src, dst tcpip.Address
	linkLen := 0 // the link header's bytes in front of the data, consumed
	if r.eth {
		// Frames to our MAC only: gVisor's business otherwise (a
		// promiscuous NIC sees the others too). The header is read
		// before any PullUp of the data: reading it may rearrange the
		// packet's views, and with them the slices PullUp returned.
		if pkt.PktType != tcpip.PacketHost {
			return false
		}
		eh := pkt.LinkHeader().Slice()
		if len(eh) < header.EthernetMinimumSize {
			return false
		}
		s.mac = header.Ethernet(eh).SourceAddress()
		linkLen = len(eh)
	}
	frag := false // the first fragment of a datagram: its TCP header is here, its data is not
	if proto == header.IPv4ProtocolNumber {
		b, ok := pkt.Data().PullUp(header.IPv4MinimumSize)
		if !ok {
			return false
		}
		ip := header.IPv4(b)
		ipLen, total = int(ip.HeaderLength()), int(ip.TotalLength())
		if ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.FragmentOffset() != 0 ||
			ipLen < header.IPv4MinimumSize || total > pkt.Data().Size() || total < ipLen+header.TCPMinimumSize {
			// Later fragments carry no ports: gVisor holds them
			// until its reassembly times out, with no reply.
			return false
		}
		if b, ok = pkt.Data().PullUp(ipLen); !ok || !header.IPv4(b).IsChecksumValid() {
			return false
		}
		ip = header.IPv4(b)
		frag = ip.More()
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		b, ok := pkt.Data().PullUp(header.IPv6MinimumSize)
		if !ok {
			return false
		}
		ip := header.IPv6(b)
		total = header.IPv6MinimumSize + int(ip.PayloadLength())
		if total > pkt.Data().Size() {
			return false
		}
		if ipLen, frag, ok = ipv6TCP(pkt, ip.NextHeader(), total); !ok || total < ipLen+header.TCPMinimumSize {
			return false
		}
		// PullUp may have moved the views: read the addresses again.
		b, _ = pkt.Data().PullUp(header.IPv6MinimumSize)
		ip = header.IPv6(b)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
		s.v6 = true
	}
	b, ok := pkt.Data().PullUp(ipLen + header.TCPMinimumSize)
	if !ok {
		return false
	}
	tcpLen := int(header.TCP(b[ipLen:]).DataOffset())
	if tcpLen < header.TCPMinimumSize || ipLen+tcpLen > total {
		return false
	}
	if b, ok = pkt.Data().PullUp(ipLen + tcpLen); !ok {
		return false
	}
	t := header.TCP(b[ipLen:])
	srcA, dstA := netipOf(src), netipOf(dst)
	if !srcA.IsGlobalUnicast() && !srcA.IsPrivate() || !dstA.IsValid() || dstA.IsMulticast() {
		return false
	}
	s.src, s.dst = src, dst
	s.key = relayKey{netip.AddrPortFrom(srcA, t.SourcePort()), netip.AddrPortFrom(dstA, t.DestinationPort())}
	s.seq, s.ack = seqnum.Value(t.SequenceNumber()), seqnum.Value(t.AckNumber())
	s.flags, s.wnd = t.Flags(), uint32(t.WindowSize())
	s.n = total - ipLen - tcpLen
	syn := s.flags&(header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagRst) == header.TCPFlagSyn

	r.mu.Lock()
	f := r.flows[s.key]
	closing := r.closing
	r.mu.Unlock()
	if f == nil && (!syn || closing) {
		return false // gVisor's: a -p flow, or none (gVisor resets it)
	}
	if f == nil && !r.g.guestSource(srcA) {
		// Spoofed, or from an address the guest was never given:
		// no flow, and not gVisor's either.
		r.g.denied.Add(1)
		r.refusals.note(refuseSource, srcA, dstA)
		return true
	}
	if frag {
		// A fragmented segment of the relay's (Linux sets DF on TCP,
		// so a guest hardly ever sends one): dropped, as a lost
		// segment that the guest sends again, rather than left to
		// gVisor, which would reset a connection it does not know.
		return true
	}
	if pkt.Data().Size() > total {
		pkt.Data().CapLength(total) // link padding
	}
	s.opts = t.Options()
	if s.n > 0 {
		var a [4][]byte
		s.payload = a[:0]
		// The views hold the consumed link header too, in front of
		// the IP header.
		off, left := linkLen+ipLen+tcpLen, s.n
		views, voff := pkt.AsViewList()
		for v := views.Front(); v != nil && left > 0; v = v.Next() {
			p := v.AsSlice()
			if voff >= len(p) {
				voff -= len(p)
				continue
			}
			p, voff = p[voff:], 0
			if off >= len(p) {
				off -= len(p)
				continue
			}
			p, off = p[off:], 0
			p = p[:min(len(p), left)]
			left -= len(p)
			s.payload = append(s.payload, p)
		}
	}
	if r.verify {
		// Over the payload slices (PacketData.ChecksumAtOffset counts
		// its offset from the start of the views, link header and all).
		var c checksum.Checksumer
		for _, p := range s.payload {
			c.Add(p)
		}
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(total-ipLen))
		if t.CalculateChecksum(checksum.Combine(xsum, c.Checksum())) != 0xffff {
			return true // corrupt: dropped, as gVisor would
		}
	}
	if f == nil {
		r.open(&s)
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.input(&s)
	return true
}

// open starts a flow for a SYN, or refuses it with a reset.
func (r *relay) open(s *seg) {
	g := r.g
	opts := header.ParseSynOptions(s.opts, false)
	to, why := g.target(s.key.remote, "tcp")
	if why != "" {
		g.denied.Add(1)
		g.log.Debug("tcp flow denied", "src", s.key.guest, "dst", s.key.remote, "why", why)
		r.resetFor(s)
		return
	}
	refuse := func(why refuseReason) {
		if why != refuseFlows { // takeFlow counts its own
			g.refused.Add(1)
		}
		r.refusals.note(why, s.key.guest.Addr(), s.key.remote.Addr())
		r.resetFor(s)
	}
	if r.failed.Load() {
		refuse(refusePoller)
		return
	}
	// Counted first, then checked: readers on several queues cannot
	// overshoot MaxSYNs together.
	if r.syns.Add(1) > int32(g.cfg.MaxSYNs) {
		r.syns.Add(-1)
		refuse(refuseSYNs)
		return
	}
	if !g.takeFlow() {
		r.syns.Add(-1)
		refuse(refuseFlows)
		return
	}
	f := &rflow{r: r, key: s.key, v6: s.v6, guestA: s.src, remoteA: s.dst, guestMAC: s.mac, irs: s.seq, rcvNxt: s.seq + 1, state: stSynRcvd,
		sndWnd: s.wnd, rto: r.tm.rto, fd: -1, readSize: relayReadFirst, dialing: true, synCounted: true}
	f.born = time.Now()
	// ParseSynOptions floors the MSS at 48, as Linux's tcp_min_snd_mss
	// does: an MSS of 1 would cost a segment per byte.
	f.mss = int(opts.MSS)
	if f.mss == 0 {
		f.mss = header.TCPDefaultMSS
		if s.v6 {
			f.mss = 1220
		}
	}
	lim := r.mss4
	if s.v6 {
		lim = r.mss6
	}
	f.mss = min(f.mss, lim)
	if opts.WS >= 0 {
		f.guestWS, f.ourWS = uint8(min(opts.WS, header.MaxWndScale)), relayWS
	}
	f.iss = r.isn(s.key)
	f.sndUna, f.sndNxt = f.iss, f.iss
	f.wl1, f.wl2 = s.seq, f.iss
	f.mu.Lock()
	defer f.mu.Unlock()
	r.mu.Lock()
	if r.closing || r.flows[s.key] != nil || r.failed.Load() {
		// Under r.mu: fail takes its list of flows under it after
		// marking the relay failed, so no flow slips past both.
		r.mu.Unlock()
		f.endSyn()
		g.dropFlow()
		return
	}
	r.nextID++
	f.id = r.nextID
	r.flows[s.key] = f
	r.byID[f.id] = f
	r.mu.Unlock()
	if g.cfg.host == nil {
		// Config.Dial is the caller's: it may block, so it runs on
		// a goroutine, and the flow takes its socket's descriptor.
		f.armDialDeadline()
		if !g.go_(func() { f.dialConn(to) }) {
			f.finish(false)
		}
		return
	}
	fd, done, err := g.cfg.host.socket(to)
	if err != nil {
		f.dialFailed(err)
		return
	}
	f.fd = fd
	f.outWatched = !done
	if err := r.poll.ctl(unix.EPOLL_CTL_ADD, fd, f.id, !done); err != nil {
		f.dialFailed(err)
		return
	}
	if done {
		f.connected()
	} else {
		f.armDialDeadline()
	}
}

// armDialDeadline arms the dial's deadline, on the timer that later sends
// the SYN-ACK again.
func (f *rflow) armDialDeadline() {
	f.rto = f.r.dialWait
	f.armTimer()
	f.rto = f.r.tm.rto
}

// dialConn opens f's host connection with Config.Dial.
func (f *rflow) dialConn(to netip.AddrPort) {
	g := f.r.g
	ctx, cancel := context.WithTimeout(g.ctx, f.r.dialWait)
	hc, err := g.cfg.Dial(ctx, "tcp", to)
	cancel()
	fd := -1
	if err == nil {
		if fd, err = socketOf(hc); err != nil {
			g.log.Warn("tcp relay: unusable connection from Config.Dial", "err", err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == stDone {
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	if err != nil {
		f.dialFailed(err)
		return
	}
	f.fd = fd
	if err := f.r.poll.ctl(unix.EPOLL_CTL_ADD, fd, f.id, false); err != nil {
		f.dialFailed(err)
		return
	}
	f.connected()
}

// isn returns the initial sequence number for a flow, as RFC 6528 asks:
// a clock ticking every 4 us plus a keyed hash of the connection's
// addresses and ports, so that it is neither guessable from outside nor
// the same for a tuple used again soon after.
func (r *relay) isn(k relayKey) seqnum.Value {
	h := maphash.Comparable(r.isnSeed, k)
	return seqnum.Value(uint32(time.Now().UnixNano()/4000) + uint32(h))
}

// drop forgets f.
func (r *relay) drop(f *rflow) {
	r.mu.Lock()
	if r.flows[f.key] == f {
		delete(r.flows, f.key)
	}
	delete(r.byID, f.id)
	r.mu.Unlock()
}

// resetFor answers a segment of no flow with a reset (RFC 9293 3.10.7.1).
func (r *relay) resetFor(s *seg) {
	f := &rflow{r: r, key: s.key, v6: s.v6, guestA: s.src, remoteA: s.dst, guestMAC: s.mac}
	if s.flags&header.TCPFlagAck != 0 {
		r.write(f, header.TCPFlagRst, s.ack, 0, 0, buffer.Buffer{}, nil)
		return
	}
	ln := seqnum.Size(s.n)
	if s.flags&header.TCPFlagSyn != 0 {
		ln++
	}
	if s.flags&header.TCPFlagFin != 0 {
		ln++
	}
	r.write(f, header.TCPFlagRst|header.TCPFlagAck, 0, s.seq.Add(ln), 0, buffer.Buffer{}, nil)
}

// write sends one segment of f to the guest, with payload (which it
// takes) and TCP options opts.
func (r *relay) write(f *rflow, flags header.TCPFlags, seq, ack seqnum.Value, wnd uint16, payload buffer.Buffer, opts []byte) {
	ipLen := header.IPv4MinimumSize
	if f.v6 {
		ipLen = header.IPv6MinimumSize
	}
	tcpLen := header.TCPMinimumSize + len(opts)
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		ReserveHeaderBytes: r.hdrLen + ipLen + tcpLen,
		Payload:            payload,
	})
	defer pkt.DecRef()
	n := pkt.Data().Size()
	t := header.TCP(pkt.TransportHeader().Push(tcpLen))
	t.Encode(&header.TCPFields{
		SrcPort:    f.key.remote.Port(),
		DstPort:    f.key.guest.Port(),
		SeqNum:     uint32(seq),
		AckNum:     uint32(ack),
		DataOffset: uint8(tcpLen),
		Flags:      flags,
		WindowSize: wnd,
	})
	copy(t[header.TCPMinimumSize:], opts)
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	src, dst := f.remoteA, f.guestA
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+n))
	if r.gso {
		gso := gvstack.GSO{Type: gvstack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset,
			MSS: uint16(f.mss), L3HdrLen: uint16(ipLen), MaxSize: r.gsoMax}
		if f.v6 {
			gso.Type = gvstack.GSOTCPv6
		}
		pkt.GSOOptions = gso
		t.SetChecksum(xsum)
	} else {
		xsum = checksum.Combine(xsum, pkt.Data().Checksum())
		t.SetChecksum(^t.CalculateChecksum(xsum))
	}
	if f.v6 {
		header.IPv6(pkt.NetworkHeader().Push(ipLen)).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen + n),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           src,
			DstAddr:           dst,
		})
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(ipLen))
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(ipLen + tcpLen + n),
			ID:          uint16(r.ipID.Add(1)),
			Flags:       header.IPv4FlagDontFragment,
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     src,
			DstAddr:     dst,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	}
	if r.eth {
		pkt.EgressRoute.LocalLinkAddress = r.mac
		pkt.EgressRoute.RemoteLinkAddress = f.guestMAC
		pkt.EgressRoute.NetProto = pkt.NetworkProtocolNumber
		r.Endpoint.AddHeader(pkt)
	}
	if flags&header.TCPFlagAck != 0 {
		f.rcvAcked = ack
		if f.delackOn && ack == f.rcvNxt {
			// The delayed ACK rode on this segment: a timer left
			// to fire would wake a thread for nothing.
			f.delack.Stop()
			f.delackOn = false
		}
	}
	var l gvstack.PacketBufferList
	l.PushBack(pkt)
	r.Endpoint.WritePackets(l) // a failed write is a lost segment
}

type rstate uint8

const (
	stSynRcvd     rstate = iota // dialling the host, or SYN-ACK sent
	stEstablished               // data both ways; FINs tracked separately
	stDone                      // finished; the flow is out of the table
)

// rflow is one relayed connection. Its fields are guarded by mu, except
// the immutable ones at the top.
type rflow struct {
	r        *relay
	key      relayKey
	v6       bool
	guestA   tcpip.Address // key's addresses, for the headers it writes
	remoteA  tcpip.Address
	guestMAC tcpip.LinkAddress // on an Ethernet link
	irs      seqnum.Value      // the guest's initial sequence number
	iss      seqnum.Value      // ours
	mss      int
	id       uint64 // in relay.byID, once in the table

	mu         sync.Mutex // guards the fields below
	state      rstate
	fd         int       // the host socket (relayhost.go), or -1
	dialing    bool      // its connect is in progress
	synCounted bool      // counted in relay.syns: the guest's handshake is not complete
	born       time.Time // the guest's SYN came
	lastActive time.Time // a segment last moved, either way (kept while idle timing is on; see active)
	idle       *time.Timer
	idleOn     bool
	idleAt     time.Time // when the armed idle timer is due
	outWatched bool      // its EPOLLOUT edges are asked for (relayhost.go)
	readable   bool      // it may have data or a FIN to read
	finQueued  bool      // its last events said a FIN (or an error) is there to read
	readSize   int       // the next read's size
	guestWS    uint8     // scale of the guest's windows
	ourWS      uint8     // scale of ours

	// guest -> host
	rcvNxt    seqnum.Value
	pend      buffer.Buffer // accepted, not yet written to the host (its buffer was full); from the relay's budget
	guestFin  bool          // the guest's FIN is accepted
	hostShut  bool          // CloseWrite done on the host socket
	lastWnd   uint32        // the window last advertised, in bytes
	rcvAdv    seqnum.Value  // the furthest right edge advertised so far
	ackNeeded bool          // the guest has not heard of rcvNxt yet
	ackDelay  bool          // and may wait for relayDelAck (see input)
	rcvAcked  seqnum.Value  // the ACK number last sent
	delack    *time.Timer
	delackOn  bool

	// host -> guest
	sndUna, sndNxt seqnum.Value
	sndMax         seqnum.Value   // the highest sent (sndNxt goes back on a timeout)
	finSeq         seqnum.Value   // our FIN's, once finOut
	finOut         bool           // the FIN has been sent at least once
	sndWnd         uint32         // the guest's window, in bytes
	wl1, wl2       seqnum.Value   // the sequence and ACK numbers of the segment sndWnd came from
	q              []*buffer.View // bytes from sndUna on, sent or not, read from the host (not peek); from the relay's budget
	qLen           int            // bytes from sndUna on: q's, or (peek) those known to be in the host socket
	peek           bool           // host data stays in the socket until the guest acknowledges it (SO_PEEK_OFF): q stays empty
	skip           int            // peek: bytes the guest acknowledged that are still in the socket (discarded in batches)
	peekPos        int            // peek: the socket's peek offset from the head of its queue; -1 unknown
	hostEOF        bool           // the host sent its FIN (read returned EOF)
	finSent        bool
	finAcked       bool
	dupAcks        int
	recovering     bool // in fast recovery, until recover is acknowledged
	recover        seqnum.Value
	timer          *time.Timer
	timerOn        bool
	timerAt        time.Time // when the armed timer is due
	rto            time.Duration
	retries        int
	budgetWait     bool // in relay.budget's waiting list
	hostFull       bool // the host socket's last write found it full; cleared once pend is written
}

// sendSynAck sends (or sends again) the SYN-ACK.
func (f *rflow) sendSynAck() {
	var opts [8]byte
	n := header.EncodeMSSOption(uint32(f.mss), opts[:])
	if f.ourWS != 0 || f.guestWS != 0 {
		n += header.EncodeNOP(opts[n:])
		n += header.EncodeWSOption(int(f.ourWS), opts[n:])
	}
	// The window of a SYN is never scaled (RFC 7323 2.2).
	wnd := uint16(min(f.rcvRoom(), 0xffff))
	f.lastWnd = uint32(wnd)
	f.r.write(f, header.TCPFlagSyn|header.TCPFlagAck, f.iss, f.rcvNxt, wnd, buffer.Buffer{}, opts[:n])
}

// window returns the window to advertise, scaled, and notes it, with the
// furthest right edge advertised so far (rcvAdv). The window may shrink,
// down to zero, when the budget is spent: RFC 9293 3.8.6.2.2 advises
// against it, but a window the relay could not honour would have the
// guest send what is then dropped, and a zero window is what tells a
// stalled guest to wait. Segments up to rcvAdv stay acceptable, so a
// guest that had sent up to an earlier edge still gets its ACKs through.
func (f *rflow) window() uint16 {
	w := uint32(f.rcvRoom())
	if f.ourWS == 0 {
		w = min(w, 0xffff)
	}
	w = min(w, 0xffff<<f.ourWS)
	f.lastWnd = w >> f.ourWS << f.ourWS
	if edge := f.rcvNxt.Add(seqnum.Size(f.lastWnd)); f.rcvAdv.LessThan(edge) {
		f.rcvAdv = edge
	}
	return uint16(w >> f.ourWS)
}

// rcvRoom is the window to offer: what pend may still take, within the
// relay's budget. The host socket takes more at once, as a rule, but a
// window the relay could not hold when it does not would have the guest
// send segments that are then dropped.
func (f *rflow) rcvRoom() int {
	room := relayWindow - int(f.pend.Size())
	if f.hostFull {
		// Only what pend can still hold; a socket that takes data
		// at once needs no budget, so a new flow is never starved by
		// the others' stalls.
		room = min(room, f.r.budget.availPend())
	}
	return max(0, room)
}

// ack sends a bare ACK.
func (f *rflow) ack() {
	f.ackNeeded = false
	f.r.write(f, header.TCPFlagAck, f.sndNxt, f.rcvNxt, f.window(), buffer.Buffer{}, nil)
}

// input handles a segment of the flow from the guest.
func (f *rflow) input(s *seg) {
	if f.state == stDone {
		return
	}
	if s.flags&header.TCPFlagRst != 0 {
		// RFC 5961 3.2: a reset ends the flow only at exactly the
		// next sequence number; elsewhere in the window it draws a
		// challenge ACK, which a guest that really reset answers
		// with a reset that fits. Outside the window it is ignored.
		switch {
		case s.seq == f.rcvNxt:
			f.finish(false)
		case f.state == stEstablished && f.rcvNxt.LessThan(s.seq) && s.seq.LessThan(f.rcvNxt.Add(seqnum.Size(max(f.lastWnd, 1)))):
			f.ack()
		}
		return
	}
	if s.flags&header.TCPFlagSyn != 0 {
		if f.state == stSynRcvd {
			if !f.dialing && s.flags&header.TCPFlagAck == 0 && s.seq == f.irs {
				f.sendSynAck() // the guest sent its SYN again
			}
			return // still dialling: the SYN-ACK comes when the dial ends
		}
		// RFC 5961 4.2: a SYN on a synchronized connection draws a
		// challenge ACK. A guest that lost the connection answers
		// with a reset (at rcvNxt, which ends the flow) and sends its
		// SYN again; an off-path SYN changes nothing.
		f.ack()
		return
	}
	if s.flags&header.TCPFlagAck == 0 {
		return
	}
	if f.state == stSynRcvd {
		if f.dialing || s.ack != f.iss+1 {
			if !f.dialing {
				f.r.resetFor(s)
			}
			return
		}
		f.state = stEstablished
		f.endSyn()
		f.sndUna = f.iss + 1
		f.wl1, f.wl2 = s.seq, s.ack
		f.retries, f.rto = 0, f.r.tm.rto
		f.stopTimer()
		defer func() {
			// Host data that came before the guest's ACK goes now.
			if f.state == stEstablished {
				f.push()
				f.pull()
			}
		}()
	}
	if f.sndMax.LessThan(s.ack) {
		// It acknowledges what was never sent: RFC 9293 3.10.7.4 has
		// the segment dropped and answered with an ACK (RFC 5961 5.2).
		f.ack()
		return
	}
	if !f.onData(s) { // first, so that data sent below carries the new ACK
		f.active() // a keepalive probe is activity too
		return     // unacceptable: answered with an ACK, and dropped
	}
	if f.state == stDone {
		return
	}
	f.onAck(s)
	if f.state == stDone {
		return
	}
	if f.ackNeeded {
		// In-order data is acknowledged at once only every second
		// full segment (as Linux and RFC 9293 3.8.6.3 do); otherwise
		// the ACK waits up to relayDelAck to ride on the host's answer,
		// which on a request and response saves the guest a packet.
		if f.ackDelay && int(f.rcvAcked.Size(f.rcvNxt)) < 2*f.mss {
			f.armDelAck()
		} else {
			f.ack()
		}
	}
	f.maybeDone()
	f.active()
}

func (f *rflow) armDelAck() {
	if f.delackOn {
		return
	}
	f.delackOn = true
	if f.delack == nil {
		f.delack = time.AfterFunc(relayDelAck, f.onDelAck)
	} else {
		f.delack.Reset(relayDelAck)
	}
}

func (f *rflow) onDelAck() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delackOn = false
	if f.state != stDone && f.ackNeeded {
		f.ack()
	}
}

// onAck handles the acknowledgement and window of s.
// The caller has dropped segments whose ACK is beyond sndMax.
func (f *rflow) onAck(s *seg) {
	if s.ack.LessThan(f.sndUna) {
		return // an old ACK (RFC 9293 3.10.7.4: ignored)
	}
	wnd := s.wnd << f.guestWS
	// The window comes only from a segment no older than the one it
	// last came from (SND.WL1 and SND.WL2): a reordered old ACK does
	// not move it.
	fresh := f.wl1.LessThan(s.seq) || (f.wl1 == s.seq && f.wl2.LessThanEq(s.ack))
	// An acceptable ACK: the guest is there. A guest that keeps its
	// window closed while it answers our probes keeps the flow.
	f.retries = 0
	if s.ack == f.sndUna {
		// A duplicate ACK as RFC 5681 counts them: no data, no FIN,
		// the same window, and data outstanding.
		if s.n == 0 && f.sndUna != f.sndNxt && s.flags&header.TCPFlagFin == 0 && wnd == f.sndWnd {
			f.dupAcks++
			if f.dupAcks == 3 && !f.recovering {
				// Fast retransmit, and recovery until everything
				// sent so far is acknowledged (NewReno, RFC 6582).
				f.recovering, f.recover = true, f.sndMax
				f.retransmit()
			}
		}
		if fresh {
			f.wl1, f.wl2 = s.seq, s.ack
			f.setWindow(wnd)
		}
		return
	}
	acked := int(f.sndUna.Size(s.ack))
	if f.finOut && f.finSeq.LessThan(s.ack) {
		f.finAcked = true
		acked--
	}
	if f.sndNxt.LessThan(s.ack) {
		// Acknowledges what was sent before a timeout took sndNxt back.
		f.sndNxt = s.ack
		f.finSent = f.finAcked
	}
	f.sndUna = s.ack
	f.trim(acked)
	if f.state == stDone {
		return // the host socket failed
	}
	f.dupAcks, f.rto = 0, f.r.tm.rto
	if f.recovering {
		if s.ack.LessThan(f.recover) {
			f.retransmit() // a partial ACK: the next hole
		} else {
			f.recovering = false
		}
	}
	if fresh {
		f.wl1, f.wl2 = s.seq, s.ack
		f.setWindow(wnd)
	}
	if f.sndUna == f.sndNxt {
		f.stopTimer()
	} else {
		f.restartTimer()
	}
	f.push()
	f.pull()
}

func (f *rflow) setWindow(w uint32) {
	grew := w > f.sndWnd
	if f.sndWnd == 0 && w > 0 && f.sndUna == f.sndNxt {
		// The window opened: the persist timer, backed off maybe to
		// maxRTO, gives way to a fresh retransmission timer.
		f.stopTimer()
		f.rto = f.r.tm.rto
	}
	f.sndWnd = w
	if grew {
		f.push()
		f.pull()
	}
}

// trim drops n acknowledged bytes from the front of the send queue: from
// q, or, on a peek flow, from the host socket, in batches of up to
// relayDiscardBatch (one system call each).
func (f *rflow) trim(n int) {
	f.qLen -= n
	if f.peek {
		f.skip += n
		// Before the batch fills, too, once the guest has all it was
		// sent: a host peer may be waiting for the window those bytes
		// close (Linux offers none below a segment, and a segment on
		// loopback is 64 KiB).
		if f.skip >= relayDiscardBatch || f.qLen == 0 {
			if err := f.discard(); err != nil {
				f.hostFailed(err)
			}
		}
		return
	}
	f.r.budget.give(n, false)
	for n > 0 && len(f.q) > 0 {
		v := f.q[0]
		if v.Size() > n {
			v.TrimFront(n)
			return
		}
		n -= v.Size()
		v.Release()
		f.q[0] = nil
		f.q = f.q[1:]
	}
}

// onData takes the payload and FIN of s. It reports false for a segment
// that is not acceptable (RFC 9293 3.10.7.4), which it has answered with
// an ACK: the caller drops it, ACK field and all.
func (f *rflow) onData(s *seg) bool {
	fin := s.flags&header.TCPFlagFin != 0
	if s.n == 0 && !fin {
		// A bare segment is acceptable at rcvNxt, or inside a window
		// that is open. Otherwise it gets an ACK: keepalive probes
		// (one below rcvNxt) are such segments, and their senders
		// count on the answer.
		// The right edge counts (as Linux's tcp_sequence has it): a
		// guest that filled the window sends its ACKs from there.
		if s.seq != f.rcvNxt && !(f.rcvNxt.LessThan(s.seq) && s.seq.LessThanEq(f.rcvAdv)) {
			f.ack()
			return false
		}
		return true
	}
	f.ackNeeded = true // whatever happens next, the guest hears where we are
	f.ackDelay = false
	seq, n, payload := s.seq, s.n, s.payload
	if seq.LessThan(f.rcvNxt) {
		// Partly or wholly old: skip what was taken.
		skip := int(seq.Size(f.rcvNxt))
		if skip > n || (skip == n && !fin) || (skip == n && f.guestFin) {
			f.ack() // a duplicate: tell the guest where we are
			return false
		}
		n -= skip
		seq = f.rcvNxt
		for skip > 0 {
			if len(payload[0]) > skip {
				payload[0] = payload[0][skip:]
				break
			}
			skip -= len(payload[0])
			payload = payload[1:]
		}
	}
	if seq != f.rcvNxt || f.guestFin {
		// Out of order (dropped; the guest sends it again) or after
		// the FIN. The ACK goes at once and bare, whatever data is
		// waiting to go: a guest counts only bare ACKs as duplicates,
		// and three of them make it send the missing segment.
		f.ack()
		return true
	}
	room := relayWindow - int(f.pend.Size())
	whole := true // all the segment's new data was taken
	if n > room {
		n, fin, whole = room, false, false // beyond the window offered
		payload = capSlices(payload, n)
	}
	if n > 0 {
		took, ok := f.toHost(payload, n)
		if !ok {
			return true // the flow ended
		}
		if took < n {
			// The host socket is full and the budget spent: the
			// rest is not acknowledged, and comes again.
			n, fin = took, false
		}
		f.rcvNxt = f.rcvNxt.Add(seqnum.Size(n))
		whole = whole && n == s.n-int(s.seq.Size(seq))
	}
	// The ACK of a FIN may wait too, for the host's FIN (as Linux's
	// does in CLOSE_WAIT): a host that closes in turn saves the guest a
	// segment. Not when ours has gone: nothing would carry it.
	f.ackDelay = whole && (!fin || !f.hostEOF)
	if fin {
		f.rcvNxt++
		f.guestFin = true
		if f.pend.Size() == 0 {
			f.shutHost()
		}
	}
	return true
}

func capSlices(p [][]byte, n int) [][]byte {
	for i, b := range p {
		if len(b) >= n {
			p[i] = b[:n]
			return p[:i+1]
		}
		n -= len(b)
	}
	return p
}

// hostFailed ends the flow after a host socket error: a reset, or
// anything else, becomes a reset to the guest.
func (f *rflow) hostFailed(err error) {
	f.r.g.log.Debug("tcp flow: host error", "src", f.key.guest, "dst", f.key.remote, "err", err)
	f.finish(false) // first: a guest that hears the reset finds the flow gone
	f.r.write(f, header.TCPFlagRst|header.TCPFlagAck, f.sndNxt, f.rcvNxt, 0, buffer.Buffer{}, nil)
}

// finish ends the flow: gracefully (both FINs done) or by resetting the
// host side. The caller holds mu.
func (f *rflow) finish(graceful bool) {
	if f.state == stDone {
		return
	}
	f.state = stDone
	f.stopTimer()
	if f.delackOn {
		f.delack.Stop()
		f.delackOn = false
	}
	if f.idleOn {
		f.idle.Stop()
		f.idleOn = false
	}
	f.endDial()
	f.endSyn()
	if f.peek {
		if graceful && f.skip > 0 {
			// What the guest acknowledged leaves the socket first:
			// closed with unread data, it would reset its peer.
			if err := f.discard(); err != nil {
				graceful = false
			}
		}
	} else {
		f.trim(f.qLen)
	}
	f.r.budget.give(int(f.pend.Size()), true)
	f.pend.Release()
	f.closeHost(graceful)
	f.r.drop(f)
	f.r.g.dropFlow()
}

// maybeDone ends the flow when both directions are closed.
func (f *rflow) maybeDone() {
	if f.state == stEstablished && f.guestFin && (f.hostShut || f.hostEOF) && f.pend.Size() == 0 && f.finAcked {
		f.finish(true)
	}
}

// readRoom is how much host data the flow may read now.
func (f *rflow) readRoom() int {
	inflight := f.qLen
	room := relaySendMax - inflight
	// Read no further ahead of the guest's window than one read.
	if w := int(f.sndWnd) - inflight + relayReadMax; w < room {
		room = w
	}
	if f.state != stEstablished && f.state != stSynRcvd {
		return 0
	}
	return room
}

// push sends host data (and then the FIN) as far as the guest's window
// allows: what q holds, or, on a peek flow, what the host socket holds,
// peeked at as it goes out.
func (f *rflow) push() {
	if f.state == stSynRcvd {
		return // after the handshake
	}
	sent := int(f.sndUna.Size(f.sndNxt))
	if f.finSent && !f.finAcked {
		sent-- // the FIN is in flight
	}
	for f.state == stEstablished {
		avail := min(int(f.sndWnd), relaySendMax) - sent
		if avail <= 0 {
			break
		}
		n := min(avail, f.segMax())
		switch {
		case sent < f.qLen:
			n = min(n, f.qLen-sent)
		case !f.peek || !f.readable || f.hostEOF:
			n = 0
		default:
			n = min(n, f.readSize)
		}
		if n == 0 {
			break
		}
		b, got, ok := f.data(sent, n)
		if !ok {
			return // the flow ended
		}
		if got == 0 {
			break // nothing more now; or the host's FIN, sent below
		}
		// The host's FIN rides on its last data when both are in.
		fin := f.hostEOF && !f.finSent && sent+got == f.qLen
		f.sendData(b, got == n, f.sndNxt, fin)
		f.sndNxt = f.sndNxt.Add(seqnum.Size(got))
		sent += got
		if fin {
			f.finSent, f.finOut = true, true
			f.finSeq = f.sndNxt
			f.sndNxt++
		}
	}
	if f.state != stEstablished {
		return
	}
	if f.hostEOF && !f.finSent && sent == f.qLen {
		f.finSent, f.finOut = true, true
		f.finSeq = f.sndNxt
		f.r.write(f, header.TCPFlagFin|header.TCPFlagAck, f.sndNxt, f.rcvNxt, f.window(), buffer.Buffer{}, nil)
		f.ackNeeded = false
		f.sndNxt++
	}
	if f.sndMax.LessThan(f.sndNxt) {
		f.sndMax = f.sndNxt
	}
	if f.sndUna != f.sndNxt {
		f.armTimer()
	} else if f.unsent() && f.sndWnd == 0 {
		f.armTimer() // probe the zero window
	}
}

// unsent reports whether host data waits for the guest's window: in q,
// or, on a peek flow, maybe in the socket.
func (f *rflow) unsent() bool {
	sent := int(f.sndUna.Size(f.sndNxt))
	if f.finSent && !f.finAcked {
		sent--
	}
	return f.qLen > sent || (f.peek && f.readable && !f.hostEOF)
}

// segMax is the most payload one write to the link carries.
func (f *rflow) segMax() int {
	if f.r.gso {
		hdr := header.IPv4MinimumSize + header.TCPMinimumSize
		if f.v6 {
			hdr = header.IPv6MinimumSize + header.TCPMinimumSize
		}
		return max(f.mss, min(int(f.r.gsoMax)-hdr, 0xffff-hdr)/f.mss*f.mss)
	}
	return f.mss
}

// data returns up to n bytes of host data from offset off (from sndUna):
// from q, or peeked at in the host socket. ok is false if the flow ended.
func (f *rflow) data(off, n int) (b buffer.Buffer, got int, ok bool) {
	if f.peek {
		return f.peekData(off, n)
	}
	for _, v := range f.q {
		if got == n {
			break
		}
		if off >= v.Size() {
			off -= v.Size()
			continue
		}
		c := v.Clone()
		c.TrimFront(off)
		off = 0
		if c.Size() > n-got {
			c.CapLength(n - got)
		}
		got += c.Size()
		b.Append(c)
	}
	return b, got, true
}

// sendData sends payload b at seq; psh marks the end of what the host had.
func (f *rflow) sendData(b buffer.Buffer, psh bool, seq seqnum.Value, fin bool) {
	flags := header.TCPFlagAck
	if psh {
		flags |= header.TCPFlagPsh
	}
	if fin {
		flags |= header.TCPFlagFin
	}
	f.ackNeeded = false
	f.r.write(f, flags, seq, f.rcvNxt, f.window(), b, nil)
}

// retransmit sends the oldest unacknowledged segment again (after three
// duplicate ACKs).
func (f *rflow) retransmit() {
	switch {
	case f.qLen > 0:
		n := min(f.qLen, f.segMax(), int(f.sndUna.Size(f.sndNxt)))
		b, got, ok := f.data(0, n)
		if !ok || got == 0 {
			return
		}
		f.sendData(b, true, f.sndUna, f.finSent && !f.finAcked && got == f.qLen)
	case f.finSent && !f.finAcked:
		f.r.write(f, header.TCPFlagFin|header.TCPFlagAck, f.sndNxt-1, f.rcvNxt, f.window(), buffer.Buffer{}, nil)
	}
}

func (f *rflow) armTimer() {
	if f.timerOn {
		return
	}
	d := f.rto
	if f.state == stSynRcvd && !f.dialing {
		// No later than the handshake's deadline.
		d = min(d, max(0, f.r.tm.synTimeout-time.Since(f.born)))
	}
	f.timerOn = true
	f.timerAt = time.Now().Add(d)
	if f.timer == nil {
		f.timer = time.AfterFunc(d, f.onTimer)
	} else {
		f.timer.Reset(d)
	}
}

// endSyn stops counting f in relay.syns: its handshake is complete, or
// it ended.
func (f *rflow) endSyn() {
	if f.synCounted {
		f.synCounted = false
		f.r.syns.Add(-1)
	}
}

// idlePeriod is how long f may go without a segment either way: the FIN
// timeout once a side has closed, else the idle timeout (0: none).
func (f *rflow) idlePeriod() time.Duration {
	if f.guestFin || f.hostEOF || f.hostShut {
		return f.r.tm.finTimeout
	}
	return f.r.tm.idleTimeout
}

// active notes that a segment moved, and keeps the idle timer armed for
// f's period. A flow with no period (established, no idle timeout) pays
// nothing here.
func (f *rflow) active() {
	if f.state != stEstablished {
		return
	}
	d := f.idlePeriod()
	if d <= 0 {
		return
	}
	now := time.Now()
	f.lastActive = now
	due := now.Add(d)
	if f.idleOn && !due.Before(f.idleAt) {
		return // it fires in time and looks at lastActive then
	}
	f.idleOn, f.idleAt = true, due
	if f.idle == nil {
		f.idle = time.AfterFunc(d, f.onIdle)
	} else {
		f.idle.Reset(d)
	}
}

// onIdle ends f, with resets both ways, if nothing has moved for its
// period; else it waits for the rest of it.
func (f *rflow) onIdle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == stDone || !f.idleOn || time.Now().Before(f.idleAt) {
		return // stopped or re-armed since it fired
	}
	d := f.idlePeriod()
	if left := d - time.Since(f.lastActive); d > 0 && left > 0 {
		f.idleAt = time.Now().Add(left)
		f.idle.Reset(left)
		return
	}
	f.idleOn = false
	if d <= 0 {
		return
	}
	f.r.g.log.Debug("tcp flow: idle timeout", "src", f.key.guest, "dst", f.key.remote, "after", d)
	f.finish(false) // first: a guest that hears the reset finds the flow gone
	f.r.write(f, header.TCPFlagRst|header.TCPFlagAck, f.sndNxt, f.rcvNxt, 0, buffer.Buffer{}, nil)
}

func (f *rflow) restartTimer() {
	f.stopTimer()
	f.armTimer()
}

func (f *rflow) stopTimer() {
	if f.timerOn {
		f.timer.Stop()
		f.timerOn = false
	}
}

// onTimer sends again what the guest has not acknowledged (all of it, in
// the window: losses on the link come in bursts), backing off, and resets
// the flow once relayRetries are spent.
func (f *rflow) onTimer() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.timerOn || f.state == stDone || time.Now().Before(f.timerAt) {
		return // stopped or re-armed since it fired
	}
	f.timerOn = false
	if f.dialing {
		f.dialFailed(fmt.Errorf("connect: no answer in %v", f.r.dialWait))
		return
	}
	f.retries++
	synLate := f.state == stSynRcvd && time.Since(f.born) >= f.r.tm.synTimeout
	if f.retries > relayRetries || synLate {
		why := "tcp flow: guest stopped acknowledging"
		if synLate {
			why = "tcp flow: guest did not complete its handshake"
		}
		f.r.g.log.Debug(why, "src", f.key.guest, "dst", f.key.remote)
		f.finish(false) // first: a guest that hears the reset finds the flow gone
		f.r.write(f, header.TCPFlagRst|header.TCPFlagAck, f.sndNxt, f.rcvNxt, 0, buffer.Buffer{}, nil)
		return
	}
	f.rto = min(2*f.rto, f.r.tm.maxRTO)
	f.recovering = false
	switch {
	case f.state == stSynRcvd:
		f.sendSynAck()
		f.armTimer()
	case f.sndUna != f.sndNxt:
		f.sndNxt = f.sndUna
		f.finSent = false
		f.push()
	case f.unsent():
		// The guest's window is zero: probe it with a segment one
		// below what it has acknowledged, which draws an ACK with its
		// window, as Linux's window probes do. No byte is sent beyond
		// the window, and nothing that was sent is forgotten.
		f.r.write(f, header.TCPFlagAck, f.sndUna-1, f.rcvNxt, f.window(), buffer.Buffer{}, nil)
		f.armTimer()
	}
}
