//go:build linux

package udprelay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ustacknet/ustack/internal/rawsys"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Gateway is what the relay asks of its owner: host sockets, goroutines,
// and the return of a flow's slot under the owner's cap on flows. Its
// methods are called on the stack's packet path and on the relay's
// goroutines, concurrently, and DropFlow with a flow's lock held (LOCK
// ORDERING: flow.mu > the Gateway's locks): they must not call the relay.
type Gateway interface {
	// Socket opens a non-blocking, close-on-exec UDP socket connected to
	// addr for a new flow, and gives it to the relay. It does not block
	// unless Config.SocketBlocks is set, in which case the relay calls it
	// on a goroutine started through Go, with ctx ending after
	// Config.DialTimeout or at the relay's Close.
	Socket(ctx context.Context, addr netip.AddrPort) (fd int, err error)
	// Go runs fn on a goroutine that the owner waits for when it closes,
	// and reports true; once the owner is closing it runs nothing and
	// reports false.
	Go(fn func()) bool
	// DropFlow gives back the slot under the owner's cap that the owner
	// took for a flow it handed to Add.
	DropFlow()
}

// Defaults of Config.
const (
	DefaultIdleTimeout = 120 * time.Second // RFC 4787 REQ-5 minimum is 2 min
	DefaultDNSTimeout  = 10 * time.Second
	DefaultDialTimeout = 10 * time.Second
	// MinTimeout is the least IdleTimeout and DNSTimeout.
	MinTimeout = time.Millisecond
)

// Config configures a Relay. The zero value works: each field's default
// is given with it.
type Config struct {
	// IdleTimeout ends a flow when no datagram has gone either way for
	// this long. Default DefaultIdleTimeout; at least MinTimeout.
	IdleTimeout time.Duration
	// DNSTimeout ends a DNS flow (Add's isDNS) that got no answer for this
	// long; a DNS flow ends with its first answer. Default
	// DefaultDNSTimeout; at least MinTimeout.
	DNSTimeout time.Duration
	// DialTimeout bounds Gateway.Socket when SocketBlocks is set.
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// SocketBlocks says that Gateway.Socket may block (a dialer of the
	// caller's): the relay calls it on a goroutine (Gateway.Go).
	SocketBlocks bool
	// Logger receives the logs. Default slog.Default().
	Logger *slog.Logger
}

// Stats counts what the relay did.
type Stats struct {
	Flows   uint64 // flows carried, DNS flows apart
	DNS     uint64 // DNS flows carried (Add's isDNS)
	Refused uint64 // flows whose host socket could not be had or polled
}

// Relay carries the flows handed to Add. LOCK ORDERING: flow.mu >
// Relay.mu, and flow.mu > the Gateway's locks (DropFlow); Relay.mu is
// not held while the relay calls the Gateway.
type Relay struct {
	gw     Gateway
	cfg    Config
	log    *slog.Logger
	epfd   int      // the epoll set of the host sockets
	ep     *os.File // epfd, in Go's poller
	rc     syscall.RawConn
	wake   chan struct{} // capacity 1: ready has flows
	stopc  chan struct{} // closed by Close
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the goroutines the relay starts

	flows, dns, refused atomic.Uint64 // Stats

	mu     sync.Mutex // guards the fields below
	closed bool
	byID   map[uint64]*flow
	nextID uint64
	ready  []*flow // flows whose endpoints have datagrams from the guest
}

// flow is one guest UDP flow.
type flow struct {
	r     *Relay
	id    uint64
	ep    tcpip.Endpoint
	wq    *waiter.Queue
	entry waiter.Entry // on wq: readable
	isDNS bool
	last  atomic.Int64 // UnixNano of the last datagram either way
	queue atomic.Bool  // in r.ready, or about to be

	mu    sync.Mutex // guards the fields below and the use of fd
	fd    int        // the host socket; -1 once ended
	pend  []byte     // a datagram from the guest the host socket could not take yet
	ended bool
}

// New makes a relay for gw. Start starts it; Close ends it.
func New(gw Gateway, cfg Config) (*Relay, error) {
	if gw == nil {
		return nil, errors.New("udprelay: the Gateway is nil")
	}
	for _, d := range []struct {
		name     string
		v        *time.Duration
		def, min time.Duration
	}{
		{"IdleTimeout", &cfg.IdleTimeout, DefaultIdleTimeout, MinTimeout},
		{"DNSTimeout", &cfg.DNSTimeout, DefaultDNSTimeout, MinTimeout},
		{"DialTimeout", &cfg.DialTimeout, DefaultDialTimeout, 0},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case d.min == 0 && *d.v < 0:
			return nil, fmt.Errorf("udprelay: %s %v: want 0 (the default) or more", d.name, *d.v)
		case *d.v < d.min:
			return nil, fmt.Errorf("udprelay: %s %v: want 0 (the default) or at least %v", d.name, *d.v, d.min)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	fd, ep, rc, err := rawsys.NewEpoll("udp-epoll")
	if err != nil {
		return nil, err
	}
	r := &Relay{gw: gw, cfg: cfg, log: cfg.Logger, epfd: fd, ep: ep, rc: rc,
		wake: make(chan struct{}, 1), stopc: make(chan struct{}), byID: make(map[uint64]*flow)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Start starts the relay's goroutines, through Gateway.Go.
func (r *Relay) Start() {
	r.goTracked(r.pump)
	r.goTracked(r.poll)
	r.goTracked(r.sweep)
}

// until waits for c, or for Close: it reports whether c came first.
func until[T any](c <-chan T, stopc <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-stopc:
		return false
	}
}

// goTracked runs fn through Gateway.Go, counted among the goroutines
// Close waits for, and reports whether it does: not once Close has begun.
func (r *Relay) goTracked(fn func()) bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	r.wg.Add(1)
	r.mu.Unlock()
	if !r.gw.Go(func() {
		defer r.wg.Done()
		fn()
	}) {
		r.wg.Done()
		return false
	}
	return true
}

// Close ends every flow (their slots go back through Gateway.DropFlow),
// stops the relay's goroutines and waits for them. It is idempotent, and
// Add refuses every flow after it.
func (r *Relay) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait()
		return
	}
	r.closed = true
	fs := slices.Collect(maps.Values(r.byID))
	r.mu.Unlock()
	r.cancel()
	for _, f := range fs {
		f.end()
	}
	close(r.stopc)
	r.ep.Close() // ends poll
	r.wg.Wait()
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	return Stats{Flows: r.flows.Load(), DNS: r.dns.Load(), Refused: r.refused.Load()}
}

// Flows returns the number of flows the relay holds.
func (r *Relay) Flows() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// Add carries a new flow of the guest's on its endpoint ep (with wait
// queue wq) to the host address to, a DNS flow if isDNS, and reports
// whether it does. The relay takes over ep and the flow's slot, which the
// caller took under its cap: when the flow ends, or at once if it cannot
// be carried, ep is closed and the slot given back (Gateway.DropFlow).
// With Config.SocketBlocks the host socket is made on a goroutine, and
// Add reports true once that goroutine runs.
func (r *Relay) Add(ep tcpip.Endpoint, wq *waiter.Queue, to netip.AddrPort, isDNS bool) bool {
	f := &flow{r: r, ep: ep, wq: wq, isDNS: isDNS, fd: -1}
	f.touch()
	if r.cfg.SocketBlocks {
		if !r.goTracked(func() {
			ctx, cancel := context.WithTimeout(r.ctx, r.cfg.DialTimeout)
			defer cancel()
			fd, err := r.gw.Socket(ctx, to)
			r.attach(f, fd, err)
		}) {
			ep.Close()
			r.gw.DropFlow()
			return false
		}
		return true
	}
	fd, err := r.gw.Socket(r.ctx, to)
	return r.attach(f, fd, err)
}

// attach registers f with its host socket fd, or ends it if err.
func (r *Relay) attach(f *flow, fd int, err error) bool {
	if err != nil {
		r.refused.Add(1)
		r.log.Debug("udp flow: host socket", "err", err)
		f.ep.Close()
		r.gw.DropFlow()
		return false
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		unix.Close(fd)
		f.ep.Close()
		r.gw.DropFlow()
		return false
	}
	r.nextID++
	f.id = r.nextID
	f.fd = fd
	r.byID[f.id] = f
	r.mu.Unlock()
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, f.event(unix.EPOLLIN|unix.EPOLLET)); err != nil {
		r.refused.Add(1)
		r.log.Debug("udp flow: epoll_ctl", "err", err)
		f.end()
		return false
	}
	if f.isDNS {
		r.dns.Add(1)
	} else {
		r.flows.Add(1)
	}
	f.mu.Lock()
	if f.ended { // by Close, meanwhile
		f.mu.Unlock()
		return false
	}
	f.entry = waiter.NewFunctionEntry(waiter.ReadableEvents, func(waiter.EventMask) { r.schedule(f) })
	f.wq.EventRegister(&f.entry)
	f.mu.Unlock()
	// The datagram that opened the flow is in the endpoint already.
	r.schedule(f)
	return true
}

// event is the epoll event for f's host socket: events, with f's id.
func (f *flow) event(events uint32) *unix.EpollEvent {
	return &unix.EpollEvent{Events: events, Fd: int32(uint32(f.id)), Pad: int32(uint32(f.id >> 32))}
}

func (f *flow) touch() { f.last.Store(time.Now().UnixNano()) }
