//go:build linux

package ustacktest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// wire sits between the stack and the TUN device's link and sees every
// packet either way. It keeps a pcap copy of each one (unless capture is
// off) and notes the client ports of the connections and datagrams that
// reach servers on the kernel's side.
type wire struct {
	nested.Endpoint
	snap    int  // bytes of each packet kept in the capture
	capture bool // keep packets for Capture
	limit   int  // bytes of records kept at most (maxCapture)

	mu       sync.Mutex // guards the fields below; a leaf
	records  []byte     // pcap records (without the file header)
	left     int        // packets left out of the capture past maxCapture
	accepted map[netip.AddrPort]*accepts
	udp      map[netip.AddrPort][]uint16
}

// accepts is what the wire saw of one TCP server: the client port of each
// handshake the server answered, in order.
type accepts struct {
	ports []uint16
	// isn is the sequence number of the last SYN-ACK per client port, to
	// tell a retransmitted SYN-ACK from a new handshake.
	isn map[uint16]uint32
}

var (
	_ gvstack.LinkEndpoint      = (*wire)(nil)
	_ gvstack.NetworkDispatcher = (*wire)(nil)
)

func newWire(lower gvstack.LinkEndpoint, snap int, capture bool) *wire {
	w := &wire{
		snap:     snap,
		capture:  capture,
		limit:    maxCapture,
		accepted: make(map[netip.AddrPort]*accepts),
		udp:      make(map[netip.AddrPort][]uint16),
	}
	w.Endpoint.Init(lower, w)
	return w
}

// DeliverNetworkPacket implements gvstack.NetworkDispatcher: a packet from
// the kernel on its way to the gvstack.
func (w *wire) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	w.see(pkt, false)
	w.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets implements gvstack.LinkWriter: packets from the stack on
// their way to the kernel.
func (w *wire) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		w.see(pkt, true)
	}
	return w.Endpoint.WritePackets(pkts)
}

// see records pkt; out tells whether the stack sent it.
func (w *wire) see(pkt *gvstack.PacketBuffer, out bool) {
	now := time.Now()
	buf := pkt.ToBuffer()
	buf.TrimFront(int64(len(pkt.VirtioNetHeader().Slice()) + len(pkt.LinkHeader().Slice())))
	size := int(buf.Size())
	var b []byte
	if w.capture {
		b = buf.Flatten()
	} else {
		// The ports need only the headers.
		b = make([]byte, min(size, headLen))
		buf.ReadAt(b, 0)
	}
	buf.Release()
	seg, ok := parse(b, size)

	w.mu.Lock()
	defer w.mu.Unlock()
	if ok {
		switch {
		case seg.proto == header.TCPProtocolNumber && !out && seg.flags == header.TCPFlagSyn|header.TCPFlagAck:
			// The server's half of a handshake: its destination port is
			// the client port the server saw.
			a := w.accepted[seg.src]
			if a == nil {
				a = &accepts{isn: make(map[uint16]uint32)}
				w.accepted[seg.src] = a
			}
			if isn, seen := a.isn[seg.dst.Port()]; !seen || isn != seg.seq {
				a.isn[seg.dst.Port()] = seg.seq
				a.ports = append(a.ports, seg.dst.Port())
			}
		case seg.proto == header.UDPProtocolNumber && out:
			w.udp[seg.dst] = append(w.udp[seg.dst], seg.src.Port())
		}
	}
	if !w.capture {
		return
	}
	n := min(len(b), w.snap)
	if len(w.records)+16+n > w.limit {
		w.left++
		return
	}
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(now.Unix()))
	binary.LittleEndian.PutUint32(h[4:], uint32(now.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(h[8:], uint32(n))
	binary.LittleEndian.PutUint32(h[12:], uint32(size))
	w.records = append(w.records, h[:]...)
	w.records = append(w.records, b[:n]...)
}

// segment is what the wire reads from a packet's headers.
type segment struct {
	proto    tcpip.TransportProtocolNumber
	src, dst netip.AddrPort
	flags    header.TCPFlags
	seq      uint32
}

// headLen covers the longest IPv4 header (60 bytes) and a TCP header
// without options.
const headLen = 80

// parse reads the addresses and ports of an unfragmented IPv4 or IPv6
// packet carrying TCP or UDP directly (no IPv6 extension headers). b
// holds the packet's first bytes, at least its IP and transport headers;
// size is the whole packet's length.
func parse(b []byte, size int) (segment, bool) {
	var (
		s          segment
		srcA, dstA netip.Addr
		payload    []byte
	)
	if len(b) < 1 {
		return s, false
	}
	switch header.IPVersion(b) {
	case header.IPv4Version:
		ip := header.IPv4(b)
		if !ip.IsValid(size) || int(ip.HeaderLength()) > len(b) || ip.FragmentOffset() != 0 || ip.More() {
			return s, false
		}
		s.proto = tcpip.TransportProtocolNumber(ip.Protocol())
		srcA = netip.AddrFrom4([4]byte(b[12:16]))
		dstA = netip.AddrFrom4([4]byte(b[16:20]))
		payload = b[ip.HeaderLength():min(int(ip.TotalLength()), len(b))]
	case header.IPv6Version:
		ip := header.IPv6(b)
		if !ip.IsValid(size) {
			return s, false
		}
		s.proto = ip.TransportProtocol()
		srcA = netip.AddrFrom16([16]byte(b[8:24]))
		dstA = netip.AddrFrom16([16]byte(b[24:40]))
		payload = b[header.IPv6MinimumSize:]
	default:
		return s, false
	}
	switch s.proto {
	case header.TCPProtocolNumber:
		if len(payload) < header.TCPMinimumSize {
			return s, false
		}
		t := header.TCP(payload)
		s.src = netip.AddrPortFrom(srcA, t.SourcePort())
		s.dst = netip.AddrPortFrom(dstA, t.DestinationPort())
		s.flags = t.Flags()
		s.seq = t.SequenceNumber()
	case header.UDPProtocolNumber:
		if len(payload) < header.UDPMinimumSize {
			return s, false
		}
		u := header.UDP(payload)
		s.src = netip.AddrPortFrom(srcA, u.SourcePort())
		s.dst = netip.AddrPortFrom(dstA, u.DestinationPort())
	default:
		return s, false
	}
	return s, true
}

// tcpPorts returns the client ports of the handshakes server answered.
func (w *wire) tcpPorts(server netip.AddrPort) []uint16 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a := w.accepted[server]; a != nil {
		return append([]uint16(nil), a.ports...)
	}
	return nil
}

// udpPorts returns the source port of each datagram sent to server.
func (w *wire) udpPorts(server netip.AddrPort) []uint16 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]uint16(nil), w.udp[server]...)
}

// writePcap writes a pcap file (LINKTYPE_RAW: IP packets without a link
// header) of the packets kept so far.
func (w *wire) writePcap(out io.Writer) error {
	w.mu.Lock()
	records, left := w.records, w.left
	w.mu.Unlock()
	// records only grows by append: the prefix taken above stays valid.
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4) // microsecond timestamps
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], uint32(w.snap))
	binary.LittleEndian.PutUint32(h[20:], 101) // LINKTYPE_RAW
	if _, err := out.Write(h[:]); err != nil {
		return err
	}
	if _, err := out.Write(records); err != nil {
		return err
	}
	if left > 0 {
		return fmt.Errorf("ustacktest: capture full at %d MiB: %d later packets left out", w.limit>>20, left)
	}
	return nil
}
