package packetio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Defaults and bounds of Config.
const (
	DefaultMTU          = 1500
	MinMTU              = 68
	MaxMTU              = 65535
	DefaultQueueLen     = 1024
	MaxQueueLen         = 1 << 16
	DefaultBlockTimeout = time.Second
	MaxBlockTimeout     = time.Minute
)

// Config configures a Link. Its zero value is usable.
type Config struct {
	// MTU is the largest IP packet the stack sends through the link.
	// Default DefaultMTU (1500); valid MinMTU-MaxMTU. The stack may
	// change it later (gVisor's SetMTU).
	MTU int

	// QueueLen is the capacity of the outbound queue, in packets.
	// Default DefaultQueueLen (1024); valid 1-MaxQueueLen.
	QueueLen int

	// BlockTimeout bounds how long the stack's sending goroutine waits
	// for room in a full outbound queue before dropping the packet; see
	// the package doc. Default DefaultBlockTimeout (1 s); a negative
	// value never waits (a full queue drops at once); at most
	// MaxBlockTimeout.
	BlockTimeout time.Duration

	// TrustChecksums marks every inbound packet as checksum-verified, so
	// that the stack skips verifying TCP and UDP checksums (gVisor's
	// CapabilityRXChecksumOffload). Set it only when the transport
	// already guarantees integrity, as WireGuard's authenticated
	// encryption does (Linux's WireGuard marks its decrypted packets the
	// same way). Outbound checksums are always computed. Default false.
	TrustChecksums bool
}

// Validate reports the first invalid field of c, naming it and the values
// allowed.
func (c *Config) Validate() error {
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) {
		return fmt.Errorf("packetio: Config.MTU %d: want 0 (for %d) or %d-%d", c.MTU, DefaultMTU, MinMTU, MaxMTU)
	}
	if c.QueueLen < 0 || c.QueueLen > MaxQueueLen {
		return fmt.Errorf("packetio: Config.QueueLen %d: want 0 (for %d) or 1-%d", c.QueueLen, DefaultQueueLen, MaxQueueLen)
	}
	if c.BlockTimeout > MaxBlockTimeout {
		return fmt.Errorf("packetio: Config.BlockTimeout %v: want at most %v (0 for %v, negative to never wait)", c.BlockTimeout, MaxBlockTimeout, DefaultBlockTimeout)
	}
	return nil
}

// ErrClosed is returned by ReadPackets and WritePackets once the Link is
// closed. errors.Is also matches it against os.ErrClosed (what
// wireguard-go's devices return) and net.ErrClosed.
var ErrClosed error = closedError{}

type closedError struct{}

func (closedError) Error() string { return "packetio: link closed" }
func (closedError) Is(target error) bool {
	return target == os.ErrClosed || target == net.ErrClosed
}

var (
	errOffset = errors.New("packetio: negative offset")
	errSizes  = errors.New("packetio: len(sizes) < len(bufs)")
)

// Stats counts a Link's packets since New.
type Stats struct {
	// OutPackets were copied out by ReadPackets.
	OutPackets uint64
	// OutDropped were sent by the stack but dropped: the queue stayed
	// full past BlockTimeout, the packet did not fit the reader's
	// buffer, or the link was closed.
	OutDropped uint64
	// OutBlocked counts the sends that found the queue full and waited.
	OutBlocked uint64
	// InPackets were delivered to the stack by WritePackets.
	InPackets uint64
	// InDropped were given to WritePackets but not delivered: not an
	// IPv4 or IPv6 packet, or no stack attached.
	InDropped uint64
}

// Link is a packet-level link; see the package doc. Its methods are safe
// for concurrent use.
type Link struct {
	q            chan *gvstack.PacketBuffer // outbound queue; each packet holds a reference
	done         chan struct{}              // closed by Close
	blockTimeout time.Duration
	caps         gvstack.LinkEndpointCapabilities
	mtu          atomic.Uint32
	stalled      atomic.Bool // a send timed out; cleared by the next ReadPackets
	disp         atomic.Pointer[dispatcher]
	ep           endpoint

	outPackets, outDropped, outBlocked, inPackets, inDropped atomic.Uint64

	// mu is held for reading by the stack's senders while they enqueue,
	// and for writing by Close to fence them off before it drains the
	// queue, so that no packet is queued after the drain.
	mu     sync.RWMutex
	closed bool // guarded by mu

	actMu   sync.Mutex // guards onClose. LOCK ORDERING: mu > actMu (Close)
	onClose func()     // set by the stack, run by Close

	closeOnce sync.Once
}

// dispatcher boxes the stack's dispatcher for an atomic.Pointer.
type dispatcher struct{ d gvstack.NetworkDispatcher }

// New returns an open Link configured by cfg, or an error naming the
// invalid field.
func New(cfg Config) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mtu, qlen, bt := cfg.MTU, cfg.QueueLen, cfg.BlockTimeout
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if qlen == 0 {
		qlen = DefaultQueueLen
	}
	if bt == 0 {
		bt = DefaultBlockTimeout
	}
	l := &Link{
		q:            make(chan *gvstack.PacketBuffer, qlen),
		done:         make(chan struct{}),
		blockTimeout: bt,
	}
	if cfg.TrustChecksums {
		l.caps = gvstack.CapabilityRXChecksumOffload
	}
	l.mtu.Store(uint32(mtu))
	l.ep.l = l
	return l, nil
}

// LinkEndpoint returns the stack side of the link, for stack.Config.Link
// or gVisor's Stack.CreateNIC. It is the same value on every call. The
// stack that takes it closes the Link when it removes it.
func (l *Link) LinkEndpoint() gvstack.LinkEndpoint { return &l.ep }

// MTU returns the link's current MTU.
func (l *Link) MTU() int { return int(l.mtu.Load()) }

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	return Stats{
		OutPackets: l.outPackets.Load(),
		OutDropped: l.outDropped.Load(),
		OutBlocked: l.outBlocked.Load(),
		InPackets:  l.inPackets.Load(),
		InDropped:  l.inDropped.Load(),
	}
}

// ReadPackets reads the packets the stack sent, in order. It blocks until
// at least one is queued, then copies up to len(bufs) of those queued
// into bufs[i][offset:], one per buffer, sets sizes[i] to each one's
// length and returns how many it copied. A packet longer than its buffer
// (past offset) is dropped and counted in Stats.OutDropped, so give
// buffers of at least MTU bytes after offset. len(sizes) must be at least
// len(bufs). After Close it returns 0 and ErrClosed.
func (l *Link) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, error) {
	return l.read(nil, bufs, sizes, offset)
}

// ReadPacketsContext is ReadPackets that also returns, with ctx.Err(),
// when ctx is done before a packet is queued.
func (l *Link) ReadPacketsContext(ctx context.Context, bufs [][]byte, sizes []int, offset int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := l.read(ctx.Done(), bufs, sizes, offset)
	if err == errCanceled {
		err = ctx.Err()
	}
	return n, err
}

var errCanceled = errors.New("canceled")

func (l *Link) read(cancel <-chan struct{}, bufs [][]byte, sizes []int, offset int) (int, error) {
	switch {
	case offset < 0:
		return 0, errOffset
	case len(sizes) < len(bufs):
		return 0, errSizes
	case l.isClosed():
		return 0, ErrClosed
	case len(bufs) == 0:
		return 0, nil
	}
	n := 0
	for n == 0 {
		var pkt *gvstack.PacketBuffer
		select {
		case pkt = <-l.q:
		case <-l.done:
			return 0, ErrClosed
		case <-cancel:
			return 0, errCanceled
		}
		for pkt != nil {
			if size := pkt.Size(); size <= len(bufs[n])-offset {
				copyOut(bufs[n][offset:], pkt)
				sizes[n] = size
				n++
			} else {
				l.outDropped.Add(1)
			}
			pkt.DecRef()
			pkt = nil
			if n == len(bufs) {
				break
			}
			select {
			case pkt = <-l.q:
			default:
			}
		}
	}
	l.outPackets.Add(uint64(n))
	if l.stalled.Load() {
		l.stalled.Store(false)
	}
	return n, nil
}

// copyOut copies pkt's bytes, headers included, into dst, which has room
// for pkt.Size() bytes. It walks the views instead of calling AsSlices,
// which allocates.
func copyOut(dst []byte, pkt *gvstack.PacketBuffer) {
	views, skip := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		n += copy(dst[n:], s[skip:])
		skip = 0
	}
}

// WritePackets delivers packets to the stack: bufs[i][offset:] is one
// IPv4 or IPv6 packet. Each is copied before delivery, so the caller may
// reuse bufs when WritePackets returns. Buffers that do not hold an IP
// packet, or that arrive while no stack is attached, are dropped and
// counted in Stats.InDropped; they count as written, as a NIC counts
// garbage it receives. It returns len(bufs), or 0 and ErrClosed after
// Close.
func (l *Link) WritePackets(bufs [][]byte, offset int) (int, error) {
	if offset < 0 {
		return 0, errOffset
	}
	if l.isClosed() {
		return 0, ErrClosed
	}
	d := l.disp.Load()
	for _, b := range bufs {
		var proto tcpip.NetworkProtocolNumber
		if offset < len(b) {
			switch header.IPVersion(b[offset:]) {
			case header.IPv4Version:
				proto = header.IPv4ProtocolNumber
			case header.IPv6Version:
				proto = header.IPv6ProtocolNumber
			}
		}
		if proto == 0 || d == nil {
			l.inDropped.Add(1)
			continue
		}
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b[offset:])})
		d.d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
		l.inPackets.Add(1)
	}
	return len(bufs), nil
}

// Close closes the link; see the package doc. It is idempotent and
// returns nil. If a stack holds the link, Close also removes it from that
// stack (gVisor's on-close action), so that the stack's routes through it
// go away instead of silently dropping.
func (l *Link) Close() error {
	var action func()
	l.closeOnce.Do(func() {
		close(l.done) // ends waits in send and read
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.actMu.Lock()
		action, l.onClose = l.onClose, nil
		l.actMu.Unlock()
		for {
			select {
			case pkt := <-l.q:
				pkt.DecRef()
				l.outDropped.Add(1)
				continue
			default:
			}
			break
		}
	})
	// Outside the Once: the action removes the NIC, which closes the
	// endpoint, which calls Close again.
	if action != nil {
		action()
	}
	return nil
}

func (l *Link) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// send queues the stack's outbound packets; see the package doc for the
// back-pressure rules. It returns how many it queued.
func (l *Link) send(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.outDropped.Add(uint64(pkts.Len()))
		return 0, &tcpip.ErrClosedForSend{}
	}
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if l.enqueue(pkt) {
			n++
		}
	}
	if n == 0 {
		if l.isClosed() {
			return 0, &tcpip.ErrClosedForSend{}
		}
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return n, nil
}

// timers holds stopped timers for send's slow path, so that waiting for
// room does not allocate.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// enqueue queues one reference to pkt, waiting for room as the package doc
// describes, and reports whether it did. Called with l.mu held for
// reading.
func (l *Link) enqueue(pkt *gvstack.PacketBuffer) bool {
	pkt.IncRef()
	select {
	case l.q <- pkt:
		return true
	default:
	}
	if l.blockTimeout > 0 && !l.stalled.Load() {
		l.outBlocked.Add(1)
		t := timers.Get().(*time.Timer)
		t.Reset(l.blockTimeout)
		queued := false
		select {
		case l.q <- pkt:
			queued = true
		case <-t.C:
			l.stalled.Store(true)
		case <-l.done:
		}
		t.Stop() // since Go 1.23, Stop leaves no stale tick in t.C
		timers.Put(t)
		if queued {
			return true
		}
	}
	pkt.DecRef()
	l.outDropped.Add(1)
	return false
}
