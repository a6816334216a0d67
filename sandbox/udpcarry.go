//go:build linux

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ustacknet/ustack/internal/rawsys"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The guest's UDP flows: each is a gVisor UDP endpoint (made by the
// stack's UDP forwarder) paired with a connected, non-blocking host
// socket, and none has a goroutine, a timer or a buffer of its own. Two
// goroutines carry every flow:
//   - the pump reads the endpoints that have datagrams from the guest
//     (their waiter queues tell it, with no goroutine parked per endpoint)
//     and sends them on the host sockets;
//   - the poller waits on one epoll set of the host sockets, whose own
//     descriptor sits in Go's network poller, and writes what the host
//     sockets receive to the endpoints.
// A third sweeps idle flows away.
//
// A new flow costs the stack's endpoint and three system calls (socket,
// connect, epoll_ctl; a bind too with an outbound address), made where
// the stack hands the flow over. A goroutine pair per flow would, in a
// burst of new flows, leave hundreds of goroutines runnable ahead of the
// TUN reader (an execution trace of a 3000-flow burst showed the reader
// waiting 18 ms behind them while the guest's queue overflowed), and
// would hold two 64 KiB read buffers per flow for as long as it lives.

// handleUDP starts carrying a new guest UDP flow (below). It runs
// on the packet path. Returning false makes the stack answer with ICMP
// port unreachable.
func (g *Gateway) handleUDP(r *udp.ForwarderRequest) bool {
	src, dst, to, ok := g.admitForwarded("udp", r.ID())
	if !ok {
		return false
	}
	if !g.takeFlow() {
		g.log.Warn("udp flow refused: too many flows", "src", src, "dst", dst, "max", g.cfg.MaxFlows)
		return false
	}
	wq := new(waiter.Queue)
	ep, terr := r.CreateEndpoint(wq)
	if terr != nil {
		g.dropFlow()
		g.log.Debug("udp endpoint", "err", terr)
		return true
	}
	isDNS := dst.Addr() == g.addrs.DNS.Addr() || (g.addrs.DNS6.IsValid() && dst.Addr() == g.addrs.DNS6.Addr())
	g.udp.add(ep, wq, to, isDNS)
	return true
}

// udpCarrier carries the guest's UDP flows. LOCK ORDER: guestFlow.mu >
// udpCarrier.mu.
type udpCarrier struct {
	g     *Gateway
	epfd  int      // the epoll set of the host sockets
	ep    *os.File // epfd, in Go's poller
	rc    syscall.RawConn
	wake  chan struct{} // capacity 1: ready has flows
	stopc chan struct{} // closed by close

	mu     sync.Mutex // guards the fields below
	closed bool
	flows  map[uint64]*guestFlow
	nextID uint64
	ready  []*guestFlow // flows whose endpoints have datagrams from the guest
}

// guestFlow is one guest UDP flow.
type guestFlow struct {
	c     *udpCarrier
	id    uint64
	ep    tcpip.Endpoint
	wq    *waiter.Queue
	entry waiter.Entry // on wq: readable
	isDNS bool
	last  atomic.Int64 // UnixNano of the last datagram either way
	queue atomic.Bool  // in c.ready, or about to be

	mu    sync.Mutex // guards the fields below and the use of fd
	fd    int        // the host socket; -1 once ended
	pend  []byte     // a datagram from the guest the host socket could not take yet
	ended bool
}

func newUDPCarrier(g *Gateway) (*udpCarrier, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	c := &udpCarrier{g: g, epfd: fd, ep: os.NewFile(uintptr(fd), "udp-epoll"), wake: make(chan struct{}, 1),
		stopc: make(chan struct{}), flows: make(map[uint64]*guestFlow)}
	if c.rc, err = c.ep.SyscallConn(); err != nil {
		c.ep.Close()
		return nil, err
	}
	return c, nil
}

// start starts the carrier's goroutines.
func (c *udpCarrier) start() {
	c.g.go_(c.pump)
	c.g.go_(c.poll)
	c.g.go_(c.sweep)
}

// close ends every flow and the goroutines (the Gateway waits for them).
func (c *udpCarrier) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	fs := make([]*guestFlow, 0, len(c.flows))
	for _, f := range c.flows {
		fs = append(fs, f)
	}
	c.mu.Unlock()
	for _, f := range fs {
		f.end()
	}
	close(c.stopc)
	c.ep.Close() // ends poll
}

// add carries a new flow of the guest's on its endpoint ep (with wait
// queue wq) to the host address to, and reports whether it does; if not,
// ep is closed. It makes the host socket itself with the default Dial,
// and otherwise calls Config.Dial on a goroutine.
func (c *udpCarrier) add(ep tcpip.Endpoint, wq *waiter.Queue, to netip.AddrPort, isDNS bool) bool {
	f := &guestFlow{c: c, ep: ep, wq: wq, isDNS: isDNS, fd: -1}
	f.touch()
	if c.g.cfg.host == nil {
		if !c.g.go_(func() {
			fd, err := c.dialCustom(to)
			c.attach(f, fd, err)
		}) {
			ep.Close()
			c.g.dropFlow()
			return false
		}
		return true
	}
	fd, err := c.g.cfg.host.udpSocket(to)
	return c.attach(f, fd, err)
}

// attach registers f with its host socket fd, or ends it if err.
func (c *udpCarrier) attach(f *guestFlow, fd int, err error) bool {
	g := c.g
	if err != nil {
		g.refused.Add(1)
		g.log.Debug("udp flow: host socket", "err", err)
		f.ep.Close()
		g.dropFlow()
		return false
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		unix.Close(fd)
		f.ep.Close()
		g.dropFlow()
		return false
	}
	c.nextID++
	f.id = c.nextID
	f.fd = fd
	c.flows[f.id] = f
	c.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(uint32(f.id)), Pad: int32(uint32(f.id >> 32))}
	if err := unix.EpollCtl(c.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		g.refused.Add(1)
		g.log.Debug("udp flow: epoll_ctl", "err", err)
		f.end()
		return false
	}
	if f.isDNS {
		g.dnsQueries.Add(1)
	} else {
		g.udpFlows.Add(1)
	}
	f.mu.Lock()
	if f.ended { // by close, meanwhile
		f.mu.Unlock()
		return false
	}
	f.entry = waiter.NewFunctionEntry(waiter.ReadableEvents, func(waiter.EventMask) { c.schedule(f) })
	f.wq.EventRegister(&f.entry)
	f.mu.Unlock()
	// The datagram that opened the flow is in the endpoint already.
	c.schedule(f)
	return true
}

// dialCustom calls Config.Dial and takes a duplicate of the connection's
// descriptor, non-blocking.
func (c *udpCarrier) dialCustom(to netip.AddrPort) (int, error) {
	ctx, cancel := context.WithTimeout(c.g.ctx, dialTimeout)
	defer cancel()
	hc, err := c.g.cfg.Dial(ctx, "udp", to)
	if err != nil {
		return -1, err
	}
	fd, err := dupSocket(hc)
	if errors.Is(err, errNoSocket) {
		return -1, errors.New("Config.Dial returned a connection without a descriptor (not a syscall.Conn)")
	}
	return fd, err
}

// udpSocket opens a non-blocking UDP socket connected to to, from the
// outbound address of its family if one is set.
func (d hostDialer) udpSocket(to netip.AddrPort) (int, error) {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	family := unix.AF_INET6
	if to.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if local := d.local(to.Addr()); local.IsValid() {
		if err := unix.Bind(fd, udpSockaddr(netip.AddrPortFrom(local, 0))); err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError("bind", err)
		}
	}
	if err := unix.Connect(fd, udpSockaddr(to)); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}

func udpSockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: a.Addr().As4(), Port: int(a.Port())}
	}
	return &unix.SockaddrInet6{Addr: a.Addr().As16(), Port: int(a.Port())}
}

func (f *guestFlow) touch() { f.last.Store(time.Now().UnixNano()) }

// schedule queues f for the pump. It runs in the stack's delivery of the
// guest's datagram, so it only queues.
func (c *udpCarrier) schedule(f *guestFlow) {
	if f.queue.Swap(true) {
		return
	}
	c.mu.Lock()
	c.ready = append(c.ready, f)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// pump sends the datagrams of the flows in ready to their host sockets.
func (c *udpCarrier) pump() {
	buf := make([]byte, 64<<10)
	var batch []*guestFlow
	for {
		select {
		case <-c.wake:
		case <-c.stopc:
			return
		}
		c.mu.Lock()
		batch, c.ready = c.ready, batch[:0]
		c.mu.Unlock()
		for i, f := range batch {
			f.queue.Store(false) // a datagram from now on queues f again
			f.fromGuest(buf)
			batch[i] = nil
		}
	}
}

// fromGuest sends what f's endpoint holds to the host socket, until the
// endpoint is empty or the socket full (then the poller resumes once the
// socket is writable).
func (f *guestFlow) fromGuest(buf []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended || f.pend != nil {
		return
	}
	for {
		w := tcpip.SliceWriter(buf)
		res, terr := f.ep.Read(&w, tcpip.ReadOptions{})
		if terr != nil {
			if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
				f.endLocked()
			}
			return
		}
		f.touch()
		if !f.sendLocked(buf[:res.Count]) {
			return
		}
	}
}

// sendLocked sends one datagram on the host socket and reports whether
// the flow can go on: if the socket is full it keeps the datagram and
// waits for the socket to be writable. A datagram the host refuses
// otherwise (an ICMP error from an earlier one, too big for the path, no
// route) is lost, as it would be from a socket of the guest's own, and the
// flow goes on; an ICMP error read from the socket ends it (hostEvent).
func (f *guestFlow) sendLocked(b []byte) bool {
	for {
		_, err := rawsys.Send(f.fd, b)
		switch err {
		case nil:
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			f.pend = append([]byte(nil), b...)
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLET, Fd: int32(uint32(f.id)), Pad: int32(uint32(f.id >> 32))}
			if unix.EpollCtl(f.c.epfd, unix.EPOLL_CTL_MOD, f.fd, &ev) != nil {
				f.endLocked()
			}
			return false
		default:
			f.c.g.log.Debug("udp flow: send", "err", err)
			return true
		}
	}
}

// poll hands the host sockets' events to their flows until close.
func (c *udpCarrier) poll() {
	var evs [128]unix.EpollEvent
	buf := make([]byte, 64<<10)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), evs[:], 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				c.g.log.Error("udp flows: epoll_wait", "err", err)
				return true
			}
			for i := range n {
				id := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
				c.mu.Lock()
				f := c.flows[id]
				c.mu.Unlock()
				if f != nil {
					f.hostEvent(evs[i].Events, buf)
				}
			}
			if n < len(evs) {
				return false // drained: park until the set is readable
			}
		}
	})
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if err != nil && !closed {
		c.g.log.Error("udp flows: host poller stopped", "err", err)
	}
}

// hostEvent handles the host socket's events: datagrams for the guest,
// room for a datagram that waits.
func (f *guestFlow) hostEvent(events uint32, buf []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return
	}
	if events&unix.EPOLLOUT != 0 && f.pend != nil {
		p := f.pend
		f.pend = nil
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(uint32(f.id)), Pad: int32(uint32(f.id >> 32))}
		if unix.EpollCtl(f.c.epfd, unix.EPOLL_CTL_MOD, f.fd, &ev) != nil {
			f.endLocked()
			return
		}
		if !f.sendLocked(p) {
			return
		}
		// What the guest sent meanwhile waits in the endpoint.
		f.c.schedule(f)
	}
	var r bytes.Reader
	for {
		n, err := rawsys.Recv(f.fd, buf)
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return
		default:
			// ICMP port unreachable and the like: the host's peer is
			// gone, and so is the flow (the guest's next datagram
			// opens a new one).
			f.endLocked()
			return
		}
		f.touch()
		r.Reset(buf[:n])
		// A datagram the stack cannot take at once (its send buffer
		// full) is dropped, as a full queue drops it.
		f.ep.Write(&r, tcpip.WriteOptions{})
		if f.isDNS {
			f.endLocked() // a DNS flow ends with its answer
			return
		}
	}
}

// sweep ends flows idle for their timeout, checking a few times per
// timeout: a flow ends between its timeout and a quarter more.
func (c *udpCarrier) sweep() {
	period := min(c.g.cfg.UDPTimeout, dnsTimeout) / 4
	t := time.NewTicker(period)
	defer t.Stop()
	var idle []*guestFlow
	for {
		select {
		case <-t.C:
		case <-c.stopc:
			return
		}
		now := time.Now().UnixNano()
		c.mu.Lock()
		for _, f := range c.flows {
			timeout := c.g.cfg.UDPTimeout
			if f.isDNS {
				timeout = dnsTimeout
			}
			if now-f.last.Load() >= int64(timeout) {
				idle = append(idle, f)
			}
		}
		c.mu.Unlock()
		for i, f := range idle {
			f.end()
			idle[i] = nil
		}
		idle = idle[:0]
	}
}

// dnsTimeout ends a DNS flow that got no answer.
const dnsTimeout = 10 * time.Second

// end ends f: its endpoint, its host socket and its slot.
func (f *guestFlow) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endLocked()
}

func (f *guestFlow) endLocked() {
	if f.ended {
		return
	}
	f.ended = true
	c := f.c
	c.mu.Lock()
	delete(c.flows, f.id)
	c.mu.Unlock()
	if f.entry.Mask() != 0 {
		f.wq.EventUnregister(&f.entry)
	}
	f.ep.Close()
	unix.Close(f.fd) // leaves the epoll set with it
	f.fd = -1
	f.pend = nil
	c.g.dropFlow()
}
