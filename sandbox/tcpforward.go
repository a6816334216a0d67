//go:build linux

package sandbox

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ustacknet/ustack/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// gVisor's path for the guest's TCP connections (NoTCPRelay, or a link
// the relay cannot serve): a gVisor endpoint per connection, spliced to a
// host connection.

// handleTCP carries one guest TCP connection. It runs on the packet path,
// so the dial happens in a goroutine; the guest's handshake completes
// only once the host connection is up, so a refusal reaches the guest as
// a RST.
func (g *Gateway) handleTCP(r *tcp.ForwarderRequest) {
	src, dst, to, ok := g.admitForwarded("tcp", r.ID())
	if !ok {
		r.Complete(true)
		return
	}
	if !g.takeFlow() {
		g.log.Warn("tcp flow refused: too many flows", "src", src, "dst", dst, "max", g.cfg.MaxFlows)
		r.Complete(true)
		return
	}
	// gVisor runs each request on a goroutine of its own: carry the
	// flow on it rather than start another one.
	growStack(0)
	if !g.enter() {
		g.dropFlow()
		r.Complete(true)
		return
	}
	defer g.wg.Done()
	g.carryTCP(r, src, dst, to)
}

// growStack grows the calling goroutine's stack to 32 KiB while it is
// still shallow. A flow's goroutine starts with Go's minimum stack and
// otherwise grows it twice, deep inside the host dial and gVisor's
// handshake, where each growth copies and adjusts every frame: 5% of the
// gateway's CPU at 6,000 connections/s. One growth here, with three frames
// to copy, costs a fraction of that.
//
//go:noinline
func growStack(i int) byte {
	var b [16 << 10]byte
	return b[i]
}

func (g *Gateway) carryTCP(r *tcp.ForwarderRequest, src, dst, to netip.AddrPort) {
	defer g.dropFlow()
	ctx, cancel := context.WithTimeout(g.ctx, dialTimeout)
	hc, err := g.cfg.Dial(ctx, "tcp", to)
	cancel()
	if err != nil {
		g.refused.Add(1)
		g.log.Debug("tcp dial failed", "src", src, "dst", dst, "to", to, "err", err)
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		hc.Close()
		return
	}
	r.Complete(false)
	gc, err := g.st.WrapTCP(ep, &wq)
	if err != nil {
		hc.Close()
		return
	}
	g.tcpFlows.Add(1)
	g.splice(gc, hc)
}

// halfCloser is a stream with CloseWrite, and an abortive close.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

func abort(c net.Conn) {
	switch c := c.(type) {
	case *stack.TCPConn:
		c.Abort()
	case *net.TCPConn:
		c.SetLinger(0)
		c.Close()
	default:
		c.Close()
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE)
}

// splice copies both ways between a guest conn and a host conn, carrying
// half-close as half-close and a reset as a reset, until both directions
// end or the Gateway closes.
func (g *Gateway) splice(guest, host net.Conn) {
	if !g.track(host) {
		guest.Close()
		host.Close()
		return
	}
	defer g.untrack(host)
	var (
		wg    sync.WaitGroup
		reset atomic.Bool
	)
	copyOne := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := copyStream(dst, src)
		if err != nil && (isReset(err) || errors.Is(err, net.ErrClosed)) {
			if reset.CompareAndSwap(false, true) {
				abort(dst)
				abort(src)
			}
			return
		}
		if hc, ok := dst.(halfCloser); ok {
			hc.CloseWrite()
		}
	}
	wg.Add(2)
	go copyOne(host, guest)
	copyOne(guest, host)
	wg.Wait()
	if !reset.Load() {
		guest.Close()
		host.Close()
	}
}
