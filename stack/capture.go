package stack

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// DefaultCaptureSnapLen is the snap length of a capture when
// Config.CaptureSnapLen is 0: tcpdump's default and largest, which keeps
// whole packets up to 256 KiB.
const DefaultCaptureSnapLen = 262144

// pcap file format (the classic libpcap format, microsecond timestamps).
const (
	pcapMagic     = 0xa1b2c3d4
	linkTypeRaw   = 101 // LINKTYPE_RAW: each packet starts with its IPv4 or IPv6 header
	pcapRecordHdr = 16
)

// Capture is a link endpoint that writes every packet going either way
// between a link and what is attached to it (a stack, or another link
// endpoint) to a pcap stream. A Stack makes one for Config.Capture; a
// program that has its own layers over a device (such as the sandbox's
// gateway) puts one right over the device with NewCapture.
//
// Packets are written from the network header on (link type RAW). A link
// whose readers offer packets to an inline dispatcher first (tun's
// InlineDispatcher) still does so through a Capture, and each packet is
// recorded once.
type Capture struct {
	nested.Endpoint
	snap int
	log  *slog.Logger

	// dmu guards up. It and mu are leaves, never held together.
	dmu sync.Mutex
	up  gvstack.NetworkDispatcher

	mu     sync.Mutex // guards the fields below, and serialises writes to w; a leaf
	w      io.Writer  // nil once stopped
	err    error      // the write error that stopped the capture
	buf    []byte     // record being written, reused
	stored uint64     // packets written
}

// NewCapture wraps lower in a Capture writing to w, keeping snapLen bytes
// of each packet (0 means DefaultCaptureSnapLen; valid: 0-262144). It
// writes the pcap file header at once. log receives the error that stops
// the capture, if any (nil: slog.Default()). The caller keeps w: Stop
// ends the writes, and nothing closes w.
func NewCapture(lower gvstack.LinkEndpoint, w io.Writer, snapLen int, log *slog.Logger) (*Capture, error) {
	if snapLen < 0 || snapLen > DefaultCaptureSnapLen {
		return nil, fmt.Errorf("snap length %d: want 0 (default %d) or 1-%d", snapLen, DefaultCaptureSnapLen, DefaultCaptureSnapLen)
	}
	if snapLen == 0 {
		snapLen = DefaultCaptureSnapLen
	}
	if log == nil {
		log = slog.Default()
	}
	return newCaptureLink(lower, w, snapLen, log)
}

func newCaptureLink(lower gvstack.LinkEndpoint, w io.Writer, snap int, log *slog.Logger) (*Capture, error) {
	var hdr [24]byte
	binary.LittleEndian.PutUint32(hdr[0:], pcapMagic)
	binary.LittleEndian.PutUint16(hdr[4:], 2) // version 2.4
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	// Time zone and timestamp accuracy: 0, as every writer sets them.
	binary.LittleEndian.PutUint32(hdr[16:], uint32(snap))
	binary.LittleEndian.PutUint32(hdr[20:], linkTypeRaw)
	if _, err := w.Write(hdr[:]); err != nil {
		return nil, fmt.Errorf("writing the pcap file header: %w", err)
	}
	c := &Capture{snap: snap, log: log, w: w}
	c.Endpoint.Init(lower, c)
	return c, nil
}

// DeliverNetworkPacket records an inbound packet, then passes it up.
func (c *Capture) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	c.record(pkt)
	c.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// inlineDispatcher is the shape of tun.InlineDispatcher (this package
// does not import tun): a dispatcher that takes some packets on the
// device's reader and has the others delivered later through
// DeliverDeclined.
type inlineDispatcher interface {
	gvstack.NetworkDispatcher
	DeliverInline(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool
	DeliverDeclined(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer)
}

var _ inlineDispatcher = (*Capture)(nil)

// DeliverInline records an inbound packet the device's reader offers
// first, then offers it to what is attached above if that takes packets
// inline. Recording comes first so that the file keeps the wire's order
// when the packet's handling sends an answer at once (as the sandbox's
// relay answers a SYN). A packet declined here comes back through
// DeliverDeclined, which does not record it again.
func (c *Capture) DeliverInline(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool {
	c.record(pkt)
	d, ok := c.upper().(inlineDispatcher)
	return ok && d.DeliverInline(proto, pkt)
}

// DeliverDeclined passes up a packet DeliverInline recorded and declined.
func (c *Capture) DeliverDeclined(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if d, ok := c.upper().(inlineDispatcher); ok {
		d.DeliverDeclined(proto, pkt)
		return
	}
	c.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// Attach remembers the dispatcher above, for DeliverInline.
func (c *Capture) Attach(d gvstack.NetworkDispatcher) {
	c.dmu.Lock()
	c.up = d
	c.dmu.Unlock()
	c.Endpoint.Attach(d)
}

func (c *Capture) upper() gvstack.NetworkDispatcher {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return c.up
}

// WritePackets records outbound packets, then passes them down.
func (c *Capture) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		c.record(pkt)
	}
	return c.Endpoint.WritePackets(pkts)
}

// record writes pkt, from its network header on, as one pcap record in a
// single Write call, so a reader of a file being written never sees half
// a record. A write error stops the capture (and is logged once); the
// traffic itself goes on.
func (c *Capture) record(pkt *gvstack.PacketBuffer) {
	now := time.Now()
	skip := len(pkt.VirtioNetHeader().Slice()) + len(pkt.LinkHeader().Slice())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w == nil {
		return
	}
	size := pkt.Size() - skip
	if size < 0 {
		return
	}
	n := min(size, c.snap)
	if cap(c.buf) < pcapRecordHdr+n {
		c.buf = make([]byte, pcapRecordHdr+n)
	}
	b := c.buf[:pcapRecordHdr+n]
	binary.LittleEndian.PutUint32(b[0:], uint32(now.Unix()))
	binary.LittleEndian.PutUint32(b[4:], uint32(now.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(b[8:], uint32(n))
	binary.LittleEndian.PutUint32(b[12:], uint32(size))
	out := b[pcapRecordHdr:]
	for _, v := range pkt.AsSlices() {
		if len(out) == 0 {
			break
		}
		if skip >= len(v) {
			skip -= len(v)
			continue
		}
		v = v[skip:]
		skip = 0
		out = out[copy(out, v):]
	}
	if _, err := c.w.Write(b); err != nil {
		c.err = err
		c.w = nil
		c.log.Error("packet capture stopped: writing a record failed", "err", err, "packets written", c.stored)
		return
	}
	c.stored++
}

// Stop ends the capture: no record is written after it returns. It is
// idempotent.
func (c *Capture) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w = nil
}

// CaptureStats describes a packet capture (Config.Capture).
type CaptureStats struct {
	// Packets counts the records written.
	Packets uint64
	// Err is the write error that stopped the capture, if any.
	Err error
}

// CaptureStats returns the state of the capture (Config.Capture), or the
// zero value if the stack has none.
func (st *Stack) CaptureStats() CaptureStats {
	if st.capture == nil {
		return CaptureStats{}
	}
	return st.capture.Stats()
}

// Stats returns the capture's counters.
func (c *Capture) Stats() CaptureStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CaptureStats{Packets: c.stored, Err: c.err}
}
