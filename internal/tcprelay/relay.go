//go:build linux

package tcprelay

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ustacknet/ustack/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
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
// either way comes from one budget (budget.go).
//
// The relay sits between the link and the gateway's stack, which attaches
// to it as to the link. It takes the guest's SYNs that the Gateway admits
// and every later segment of the flows it owns; everything else (UDP,
// ICMP, the connections the gateway opens into the guest for -p
// forwards, segments of no flow) goes on to gVisor, which answers a stray
// segment with a reset as before. On an Ethernet link (a TAP
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
// relay's epoll set (host.go), connected, read and written where the
// event that needs it is handled, and it has no TCP endpoint, timers or
// processor hand-off in gVisor. A short connection costs about half the
// CPU of one carried by gVisor's forwarder (docs/BENCHMARKS.md).

// Gateway is what the relay asks of its owner: whether and where a new
// flow goes, host sockets, goroutines, and a share of the owner's cap on
// flows. Its methods are called on the link's reader and on the relay's
// goroutines, concurrently, and all but Admit with a flow's lock held
// (LOCK ORDERING: rflow.mu > the Gateway's locks): they must not call
// the relay.
type Gateway interface {
	// Admit decides a new flow from the guest's src to dst: it returns
	// the host address to connect to, or an error saying why not. An
	// error that matches ErrSource (errors.Is) says that src is not an
	// address of the guest's: the SYN is dropped unanswered. Any other
	// error refuses the flow with a reset. Admit only decides: the relay
	// counts refusals in Stats.Denied, and may ask about a SYN that it
	// then drops as malformed (a fragment, a bad checksum).
	Admit(src, dst netip.AddrPort) (netip.AddrPort, error)
	// Socket opens a TCP socket to addr for a flow and gives it to the
	// relay: a non-blocking descriptor, connected (done) or with its
	// connect in progress. It does not block unless Config.SocketBlocks
	// is set, in which case the relay calls it on a goroutine started
	// through Go, with ctx ending at the relay's connect deadline or its
	// Close.
	Socket(ctx context.Context, addr netip.AddrPort) (fd int, done bool, err error)
	// Go runs fn on a goroutine that the owner waits for when it closes,
	// and reports true; once the owner is closing it runs nothing and
	// reports false.
	Go(fn func()) bool
	// TakeFlow takes a slot under the owner's cap on flows, or reports
	// false (the owner counts that refusal); DropFlow gives one back.
	TakeFlow() bool
	DropFlow()
}

// ErrSource is the error (matched with errors.Is) by which
// Gateway.Admit says that a flow's source address is not the guest's:
// spoofed, or never given to it. Such a SYN gets no answer.
var ErrSource = errors.New("the source address is outside the guest's networks")

// Defaults and bounds of Config.
const (
	DefaultMaxSYNs     = 1024
	DefaultBuffer      = 16 << 20
	MinBuffer          = relayReadMax
	DefaultDialTimeout = 10 * time.Second
)

// Config configures a Relay. The zero value works: each field's default
// is given with it.
type Config struct {
	// MaxSYNs caps the flows whose handshake (the host's connect, then
	// the guest's) is in progress; SYNs over it are refused with a
	// reset. Default DefaultMaxSYNs.
	MaxSYNs int
	// Buffer bounds, in bytes, the data the relay holds in user space
	// for all its flows together (budget.go). Default DefaultBuffer; at
	// least MinBuffer.
	Buffer int
	// IdleTimeout resets a flow (both sides) when neither side has sent
	// anything for this long. Default 0: never.
	IdleTimeout time.Duration
	// DialTimeout bounds a host connect. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// SocketBlocks says that Gateway.Socket may block (a dialer of the
	// caller's): the relay calls it on a goroutine (Gateway.Go), with the
	// flow's handshake waiting meanwhile.
	SocketBlocks bool
	// Logger receives the logs. Default slog.Default().
	Logger *slog.Logger

	timing *timing // nil: the defaults (tests scale them)
	noPeek bool    // host data is read into the budget, as on a kernel without SO_PEEK_OFF for TCP (tests)
}

// Stats counts what the relay did.
type Stats struct {
	Flows   uint64 // flows whose host connection was made
	Denied  uint64 // SYNs Gateway.Admit refused
	Refused uint64 // SYNs over MaxSYNs, after the poller failed, or whose host connect failed (TakeFlow's refusals are the Gateway's)
}

type relayKey struct{ guest, remote netip.AddrPort }

// Relay is the link endpoint wrapper described above: a
// gvisor stack.LinkEndpoint over the link, and its dispatcher (a
// tun.InlineDispatcher, so that a TUN device's readers hand it the
// guest's segments themselves).
type Relay struct {
	nested.Endpoint
	gw       Gateway
	log      *slog.Logger
	verify   bool              // the link leaves inbound checksums to the stack
	eth      bool              // the link is Ethernet (a TAP device): frames need a header
	hdrLen   int               // the link's header
	mac      tcpip.LinkAddress // ours on an Ethernet link
	gso      bool              // the link hands the kernel segments to split and sum
	gsoMax   uint32
	mss4     int // MSS the link's MTU allows
	mss6     int
	maxSYNs  int32
	blocking bool // Gateway.Socket may block
	ipID     atomic.Uint32
	syns     atomic.Int32 // handshakes in progress
	poll     *hostPoll
	isnSeed  maphash.Seed
	dialWait time.Duration // a host connect's deadline
	tm       timing
	failed   atomic.Bool // the host poller stopped: new flows are refused
	noPeek   atomic.Bool // the kernel has no SO_PEEK_OFF for TCP (before Linux 6.9): flows read into q
	refusals refusalLog
	budget   relayBudget
	ctx      context.Context // ends at Close: blocking sockets' dials
	cancel   context.CancelFunc

	carried, denied, refused atomic.Uint64 // Stats

	// LOCK ORDERING: rflow.mu > Relay.mu, rflow.mu > relayBudget.mu, and
	// rflow.mu > the Gateway's locks. A flow's lock may be held while
	// taking the relay's (drop, open); never the other way round.
	// refusalLog.mu is a leaf, taken with no other lock held.

	mu      sync.Mutex // guards the fields below
	flows   map[relayKey]*rflow
	byID    map[uint64]*rflow // by the id their host socket's events carry
	nextID  uint64
	closing bool
}

// New makes a relay over link, for gw. Start starts it; Close ends it.
// The link must be one Usable reports true for.
func New(link gvstack.LinkEndpoint, gw Gateway, cfg Config) (*Relay, error) {
	switch {
	case gw == nil:
		return nil, errors.New("tcprelay: the Gateway is nil")
	case !Usable(link):
		return nil, errors.New("tcprelay: the link is neither an IP link nor Ethernet with a MAC address")
	case cfg.MaxSYNs < 0:
		return nil, fmt.Errorf("tcprelay: MaxSYNs %d: want 0 (the default) or more", cfg.MaxSYNs)
	case cfg.Buffer != 0 && cfg.Buffer < MinBuffer:
		return nil, fmt.Errorf("tcprelay: Buffer %d: want 0 (the default) or at least %d bytes (64 KiB)", cfg.Buffer, MinBuffer)
	case cfg.IdleTimeout < 0:
		return nil, fmt.Errorf("tcprelay: IdleTimeout %v: want 0 (off) or a positive duration", cfg.IdleTimeout)
	case cfg.DialTimeout < 0:
		return nil, fmt.Errorf("tcprelay: DialTimeout %v: want 0 (the default) or a positive duration", cfg.DialTimeout)
	}
	if cfg.MaxSYNs == 0 {
		cfg.MaxSYNs = DefaultMaxSYNs
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p, err := newHostPoll()
	if err != nil {
		return nil, err
	}
	r := &Relay{gw: gw, log: cfg.Logger, poll: p, dialWait: cfg.DialTimeout, maxSYNs: int32(cfg.MaxSYNs), blocking: cfg.SocketBlocks,
		isnSeed: maphash.MakeSeed(), flows: make(map[relayKey]*rflow), byID: make(map[uint64]*rflow)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.tm = defaultTiming(cfg.IdleTimeout)
	if cfg.timing != nil {
		r.tm = *cfg.timing
	}
	r.refusals.log = cfg.Logger
	r.noPeek.Store(cfg.noPeek)
	r.budget = relayBudget{r: r, limit: cfg.Buffer}
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

// Start starts the goroutine (through Gateway.Go) that waits for the host
// sockets.
func (r *Relay) Start() {
	if !r.gw.Go(func() { r.poll.run(r) }) {
		r.poll.close()
	}
}

// Usable reports whether the relay can serve link: an IP link (a TUN
// device), or Ethernet (a TAP device), whose frames the relay addresses
// to the MAC address the guest's SYN came from. gVisor keeps answering
// the guest's ARP and neighbour solicitations for the gateway.
func Usable(link gvstack.LinkEndpoint) bool {
	switch link.ARPHardwareType() {
	case header.ARPHardwareNone:
		return link.MaxHeaderLength() == 0
	case header.ARPHardwareEther:
		return link.MaxHeaderLength() == header.EthernetMinimumSize && len(link.LinkAddress()) == header.EthernetAddressSize
	}
	return false
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (r *Relay) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if !r.DeliverInline(proto, pkt) {
		r.Endpoint.DeliverNetworkPacket(proto, pkt)
	}
}

var _ tun.InlineDispatcher = (*Relay)(nil)

// DeliverInline implements tun.InlineDispatcher: a TUN device's reader
// hands the relay its segments itself, and only what the relay declines
// goes through the device's hand-off to the stack. The relay never
// enters the stack, and its system calls do not block.
func (r *Relay) DeliverInline(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool {
	return (proto == header.IPv4ProtocolNumber || proto == header.IPv6ProtocolNumber) && r.take(proto, pkt)
}

// DeliverDeclined implements tun.InlineDispatcher.
func (r *Relay) DeliverDeclined(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	r.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// Close resets every flow's host side, stops the relay taking new ones and
// ends the host poller; the Gateway's Go waits for its goroutine. It does
// not close the link, which is the stack's. Calls after the first do
// nothing more.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closing = true
	fs := make([]*rflow, 0, len(r.flows))
	for _, f := range r.flows {
		fs = append(fs, f)
	}
	r.mu.Unlock()
	r.cancel()
	for _, f := range fs {
		f.mu.Lock()
		f.finish(false)
		f.mu.Unlock()
	}
	r.refusals.stop()
	r.poll.close()
}

// Flows returns the number of flows the relay holds.
func (r *Relay) Flows() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.flows)
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	return Stats{Flows: r.carried.Load(), Denied: r.denied.Load(), Refused: r.refused.Load()}
}

// drop forgets f.
func (r *Relay) drop(f *rflow) {
	r.mu.Lock()
	if r.flows[f.key] == f {
		delete(r.flows, f.key)
	}
	delete(r.byID, f.id)
	r.mu.Unlock()
}

// isn returns the initial sequence number for a flow, as RFC 6528 asks:
// a clock ticking every 4 us plus a keyed hash of the connection's
// addresses and ports, so that it is neither guessable from outside nor
// the same for a tuple used again soon after.
func (r *Relay) isn(k relayKey) seqnum.Value {
	h := maphash.Comparable(r.isnSeed, k)
	return seqnum.Value(uint32(time.Now().UnixNano()/4000) + uint32(h))
}

func netipOf(a tcpip.Address) netip.Addr {
	if a.Len() == 4 {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16())
}
