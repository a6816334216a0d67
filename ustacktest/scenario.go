//go:build linux

package ustacktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Result is what happened to one connection of a scenario.
type Result struct {
	// Index is the connection's place in the scenario, from 0.
	Index int
	// Port is the stack's source port. If the dial failed it is the port
	// the dial had bound (0 if it failed before binding one).
	Port uint16
	// Err is the first error of the connection: the dial, the exchange,
	// waiting for the server to close, or nil. Dial errors are
	// *net.OpError values that errors.Is matches against syscall errnos
	// (ECONNREFUSED, EADDRNOTAVAIL, ...) and os.ErrDeadlineExceeded.
	Err error
	// Start is when the dial began.
	Start time.Time
	// Connect is how long the handshake took (or the dial, if it failed).
	Connect time.Duration
	// Duration runs from Start until the connection was closed, or until
	// it failed. For Hold it ends when the exchange is done.
	Duration time.Duration
}

// Closer says which side closes a connection first, and so which side
// keeps it in TIME_WAIT.
type Closer uint8

const (
	// ClientCloses: after the exchange the stack closes the connection
	// at once; the stack's side keeps TIME_WAIT (Options.TimeWait) and,
	// in a small range, its port.
	ClientCloses Closer = iota
	// ServerCloses: after the exchange the client waits for the server's
	// FIN (end of file) and then closes; the server's kernel keeps
	// TIME_WAIT, and the stack's port is free once its own FIN is
	// acknowledged. The exchange must make the server close, as redis's
	// QUIT or an HTTP/1.0 request do.
	ServerCloses
)

func (c Closer) String() string {
	switch c {
	case ClientCloses:
		return "client closes"
	case ServerCloses:
		return "server closes"
	}
	return fmt.Sprintf("Closer(%d)", uint8(c))
}

// defaultTimeout bounds each connection of a scenario when its options
// give no Timeout.
const defaultTimeout = 10 * time.Second

// ChurnOptions configures Bed.Churn.
type ChurnOptions struct {
	// N is the number of connections, at least 1.
	N int
	// Close says which side closes each connection first. Default
	// ClientCloses.
	Close Closer
	// Exchange, if not nil, runs on each connection once it is
	// established (send a request, read the reply). Its error ends the
	// connection and becomes Result.Err.
	Exchange func(net.Conn) error
	// Parallel is how many connections are in flight at once. Default 1:
	// one after another, so that a sequential policy gives the ports in
	// order.
	Parallel int
	// Timeout bounds each connection, from its dial to its close.
	// Default 10 s.
	Timeout time.Duration
}

func (o *ChurnOptions) check() error {
	switch {
	case o.N < 1:
		return fmt.Errorf("ustacktest: ChurnOptions.N %d: want at least 1", o.N)
	case o.Close != ClientCloses && o.Close != ServerCloses:
		return fmt.Errorf("ustacktest: ChurnOptions.Close %d: want ClientCloses or ServerCloses", uint8(o.Close))
	case o.Parallel < 0:
		return fmt.Errorf("ustacktest: ChurnOptions.Parallel %d: want 0 (for 1) or more", o.Parallel)
	case o.Timeout < 0:
		return fmt.Errorf("ustacktest: ChurnOptions.Timeout %v: want 0 (for %v) or more", o.Timeout, defaultTimeout)
	}
	return nil
}

// Churn runs o.N TCP connections from the stack to server through the
// bed's port range: each one dials, runs o.Exchange, and closes in the
// order o.Close gives. It returns one Result per connection, in the order
// they started (by Index), and an error only when o is invalid. A failed
// connection does not stop the others; cancelling ctx fails the ones not
// yet done.
func (b *Bed) Churn(ctx context.Context, server netip.AddrPort, o ChurnOptions) ([]Result, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	timeout := cmpOr(o.Timeout, defaultTimeout)
	workers := min(max(o.Parallel, 1), o.N)
	results := make([]Result, o.N)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r, c := b.open(ctx, i, netip.AddrPort{}, server, o.Exchange, timeout)
				if c != nil {
					r.Err = finish(c, o.Close, r.Start.Add(timeout))
				}
				r.Duration = time.Since(r.Start)
				results[i] = r
			}
		}()
	}
	for i := range o.N {
		next <- i
	}
	close(next)
	wg.Wait()
	return results, nil
}

// open dials server from laddr and runs exchange, all within timeout. It
// returns the connection (nil on failure) still open.
func (b *Bed) open(ctx context.Context, i int, laddr, server netip.AddrPort, exchange func(net.Conn) error, timeout time.Duration) (Result, *stack.TCPConn) {
	r := Result{Index: i, Start: time.Now()}
	deadline := r.Start.Add(timeout)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := b.st.DialTCPAddrPort(dctx, laddr, server)
	r.Connect = time.Since(r.Start)
	if err != nil {
		r.Err = err
		var oe *net.OpError
		if errors.As(err, &oe) {
			if a, ok := oe.Source.(*net.TCPAddr); ok {
				r.Port = uint16(a.Port)
			}
		}
		r.Duration = r.Connect
		return r, nil
	}
	r.Port = c.LocalAddrPort().Port()
	if exchange != nil {
		c.SetDeadline(deadline)
		if err := exchange(c); err != nil {
			r.Err = fmt.Errorf("exchange on port %d: %w", r.Port, err)
			c.Close()
			r.Duration = time.Since(r.Start)
			return r, nil
		}
		c.SetDeadline(time.Time{})
	}
	return r, c
}

// finish closes c in the order closer gives, waiting for the server's
// FIN until deadline when the server closes first.
func finish(c *stack.TCPConn, closer Closer, deadline time.Time) error {
	if closer == ServerCloses {
		c.SetReadDeadline(deadline)
		if _, err := io.Copy(io.Discard, c); err != nil {
			c.Close()
			return fmt.Errorf("waiting for the server to close: %w", err)
		}
	}
	return c.Close()
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// HoldOptions configures Bed.Hold.
type HoldOptions struct {
	// N is the number of connections, at least 1.
	N int
	// Exchange, if not nil, runs on each connection once it is
	// established; its error closes that connection and becomes
	// Result.Err.
	Exchange func(net.Conn) error
	// Timeout bounds each connection's dial and exchange. Default 10 s.
	Timeout time.Duration
}

// Held is a set of open connections made by Bed.Hold.
type Held struct {
	// Results has one entry per connection, by Index.
	Results []Result
	// Conns has the open connection of each Result, nil where it failed.
	Conns []net.Conn

	once sync.Once
}

// Close closes every connection still open (the stack closes first). It
// is idempotent and returns nil. The bed closes it too.
func (h *Held) Close() error {
	h.once.Do(func() {
		for _, c := range h.Conns {
			if c != nil {
				c.Close()
			}
		}
	})
	return nil
}

// Hold opens o.N TCP connections from the stack to server, one after
// another, runs o.Exchange on each, and keeps them open until Held.Close
// or the bed's Close. It returns an error only when o is invalid; each
// connection's outcome is in Held.Results.
func (b *Bed) Hold(ctx context.Context, server netip.AddrPort, o HoldOptions) (*Held, error) {
	switch {
	case o.N < 1:
		return nil, fmt.Errorf("ustacktest: HoldOptions.N %d: want at least 1", o.N)
	case o.Timeout < 0:
		return nil, fmt.Errorf("ustacktest: HoldOptions.Timeout %v: want 0 (for %v) or more", o.Timeout, defaultTimeout)
	}
	timeout := cmpOr(o.Timeout, defaultTimeout)
	h := &Held{Results: make([]Result, o.N), Conns: make([]net.Conn, o.N)}
	if err := b.track(h); err != nil {
		return nil, err
	}
	for i := range o.N {
		r, c := b.open(ctx, i, netip.AddrPort{}, server, o.Exchange, timeout)
		r.Duration = time.Since(r.Start)
		h.Results[i] = r
		if c != nil {
			h.Conns[i] = c
		}
	}
	return h, nil
}

// ReuseOptions configures Bed.ReuseTimeWait.
type ReuseOptions struct {
	// Port is the client port both connections use. It must be in the
	// bed's range; 0 means the range's first port.
	Port uint16
	// Exchange runs on each connection once it is established, and must
	// make the server close it (redis's QUIT, an HTTP/1.0 request). Nil
	// means the server closes on its own.
	Exchange func(net.Conn) error
	// Timeout bounds each connection, and the wait for the server's
	// TIME_WAIT between them. Default 10 s.
	Timeout time.Duration
}

// ErrNotAttempted is the error of ReuseResult.Second when the first
// connection failed, so there was no TIME_WAIT to reuse.
var ErrNotAttempted = errors.New("ustacktest: not attempted: the first connection failed")

// ReuseResult is what Bed.ReuseTimeWait saw.
type ReuseResult struct {
	// First and Second are the two connections from the same port.
	First, Second Result
	// TimeWait reports that the server's kernel held First in TIME_WAIT
	// (as its socket table showed) when Second dialled. If the kernel
	// never showed it within the Timeout, Second dials anyway.
	TimeWait bool
}

// ReuseTimeWait makes a TCP connection from o.Port to server, has the
// server close it first so that the server's kernel keeps it in
// TIME_WAIT, waits until the kernel's socket table shows that state and
// the stack has let go of the port, and then connects again from the same
// port. If the first connection fails, Second.Err is ErrNotAttempted. Linux lets a new connection take over a TIME_WAIT one when its
// initial sequence number or timestamp is newer (RFC 6191); otherwise the
// SYN is answered with the old connection's ACK, and the second dial
// fails or waits for a retransmission, which Second's Connect shows. It
// returns an error only when o is invalid.
func (b *Bed) ReuseTimeWait(ctx context.Context, server netip.AddrPort, o ReuseOptions) (ReuseResult, error) {
	var rr ReuseResult
	r := b.st.Allocator().Pool(portalloc.TCP).Range()
	port := o.Port
	if port == 0 {
		port = r.First
	}
	switch {
	case !r.Contains(port):
		return rr, fmt.Errorf("ustacktest: ReuseOptions.Port %d: want a port in the bed's range %s", port, r)
	case o.Timeout < 0:
		return rr, fmt.Errorf("ustacktest: ReuseOptions.Timeout %v: want 0 (for %v) or more", o.Timeout, defaultTimeout)
	}
	timeout := cmpOr(o.Timeout, defaultTimeout)
	local := b.StackAddr4()
	if server.Addr().Is6() {
		local = b.StackAddr6()
	}
	laddr := netip.AddrPortFrom(local, port)
	conn := func(i int) Result {
		res, c := b.open(ctx, i, laddr, server, o.Exchange, timeout)
		if c != nil {
			res.Err = finish(c, ServerCloses, res.Start.Add(timeout))
		}
		res.Duration = time.Since(res.Start)
		return res
	}
	rr.First = conn(0)
	if rr.First.Err != nil {
		rr.Second = Result{Index: 1, Port: port, Start: time.Now(), Err: ErrNotAttempted}
		return rr, nil
	}
	deadline := time.Now().Add(timeout)
	var err error
	rr.TimeWait, err = b.waitTimeWait(ctx, laddr, server, deadline)
	if err == nil {
		err = b.waitPortFree(ctx, port, deadline)
	}
	if err != nil {
		rr.Second = Result{Index: 1, Port: port, Start: time.Now(), Err: err}
		return rr, nil
	}
	rr.Second = conn(1)
	return rr, nil
}

// waitTimeWait waits until the kernel's socket table shows the
// connection from client to server in TIME_WAIT, and reports whether it
// did before deadline.
func (b *Bed) waitTimeWait(ctx context.Context, client, server netip.AddrPort, deadline time.Time) (bool, error) {
	family := uint8(unix.AF_INET)
	if server.Addr().Is6() {
		family = unix.AF_INET6
	}
	for {
		// A sock_diag socket belongs to the namespace of the thread that
		// opens it; the namespace's netlink handle has only a route socket.
		var socks []*netlink.Socket
		err := b.ns.Do(func() (err error) {
			socks, err = netlink.SocketDiagTCP(family)
			return err
		})
		if err != nil {
			return false, fmt.Errorf("ustacktest: reading the kernel's TCP sockets: %w", err)
		}
		for _, s := range socks {
			if s.State == netlink.TCP_TIME_WAIT && matches(s.ID, server, client) {
				return true, nil
			}
		}
		if err := pause(ctx, deadline); err != nil {
			return false, nil
		}
	}
}

func matches(id netlink.SocketID, local, remote netip.AddrPort) bool {
	l, ok1 := netip.AddrFromSlice(id.Source)
	r, ok2 := netip.AddrFromSlice(id.Destination)
	return ok1 && ok2 && id.SourcePort == local.Port() && id.DestinationPort == remote.Port() &&
		l.Unmap() == local.Addr() && r.Unmap() == remote.Addr()
}

// waitPortFree waits until the stack's TCP pool no longer holds port (the
// first connection's endpoint has left the stack).
func (b *Bed) waitPortFree(ctx context.Context, port uint16, deadline time.Time) error {
	pool := b.st.Allocator().Pool(portalloc.TCP)
	for pool.Held(port) {
		if err := pause(ctx, deadline); err != nil {
			return fmt.Errorf("ustacktest: the stack still holds port %d after the first connection: %w", port, err)
		}
	}
	return nil
}

// pause sleeps a millisecond between two checks of a condition, or fails
// once deadline passes or ctx is done.
func pause(ctx context.Context, deadline time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if time.Now().After(deadline) {
		return context.DeadlineExceeded
	}
	time.Sleep(time.Millisecond)
	return nil
}
