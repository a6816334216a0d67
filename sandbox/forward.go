//go:build linux

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ustacknet/ustack/portfwd"
	"github.com/ustacknet/ustack/slirpapi"
	"github.com/ustacknet/ustack/stack"
)

// ErrForwardExists and ErrNoForward are matched (errors.Is) by AddForward
// and RemoveForward errors. They are portfwd's errors, which the control
// API's client matches too.
var (
	ErrForwardExists = portfwd.ErrExists
	ErrNoForward     = portfwd.ErrNotFound
)

// Forward is one inbound port forward (portfwd.Forward).
type Forward = portfwd.Forward

// ParseForward parses [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp], as
// portfwd.Parse.
func ParseForward(s string) (Forward, error) { return portfwd.Parse(s) }

// The Gateway is the forward manager of its sandbox.
var _ portfwd.Manager = (*Gateway)(nil)

// forwarder serves one Forward.
type forwarder struct {
	f    Forward
	ln   net.Listener   // tcp
	pc   net.PacketConn // udp
	stop chan struct{}
	wg   sync.WaitGroup // its goroutines

	mu    sync.Mutex // guards flows. LOCK ORDERING: mu > the stack's (a flow's socket may be closed under it); Gateway.mu is let go before a forwarder is closed
	flows map[netip.AddrPort]*udpFlow
}

// udpFlow is one host peer's flow into the guest through a UDP forward.
type udpFlow struct {
	gc   *stack.UDPConn
	last atomic.Int64 // unix nanoseconds of the last datagram either way
}

// AddForward starts forwarding f: the host listens on f.Host and each
// connection or UDP flow is dialled into the guest, from the gateway
// address, with a source port from the stack's pool. A host address that
// is already in use gives an error matching syscall.EADDRINUSE.
func (g *Gateway) AddForward(f Forward) error {
	if f.Proto != "tcp" && f.Proto != "udp" {
		return fmt.Errorf("sandbox: forward %s: protocol %q is not tcp or udp", f, f.Proto)
	}
	if f.GuestPort == 0 || !f.Host.IsValid() {
		return fmt.Errorf("sandbox: forward %s: want a host address and port and a guest port", f)
	}
	key := f.String()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return fmt.Errorf("sandbox: forward %s: gateway closed: %w", f, net.ErrClosed)
	}
	if _, ok := g.forwards[key]; ok {
		g.mu.Unlock()
		return fmt.Errorf("sandbox: forward %s: %w", f, ErrForwardExists)
	}
	g.mu.Unlock()
	fw := &forwarder{f: f, stop: make(chan struct{}), flows: make(map[netip.AddrPort]*udpFlow)}
	var err error
	// The host address's family only: 0.0.0.0 is IPv4's wildcard, not
	// both families' (Go's "tcp" on 0.0.0.0 would take [::] too), as in
	// slirp4netns and Docker.
	network := f.Proto + "4"
	if f.Host.Addr().Is6() && !f.Host.Addr().Is4In6() {
		network = f.Proto + "6"
	}
	if f.Proto == "tcp" {
		fw.ln, err = net.Listen(network, f.Host.String())
	} else {
		fw.pc, err = net.ListenPacket(network, f.Host.String())
	}
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("sandbox: forward %s: host %s port %d is already in use by another program: %w", f, f.Proto, f.Host.Port(), err)
		}
		return fmt.Errorf("sandbox: forward %s: %w", f, err)
	}
	g.mu.Lock()
	if _, ok := g.forwards[key]; ok || g.closed {
		g.mu.Unlock()
		fw.close()
		if ok {
			return fmt.Errorf("sandbox: forward %s: %w", f, ErrForwardExists)
		}
		return fmt.Errorf("sandbox: forward %s: gateway closed: %w", f, net.ErrClosed)
	}
	g.forwards[key] = fw
	g.open[fw] = struct{}{}
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		if f.Proto == "tcp" {
			g.serveTCPForward(fw)
		} else {
			g.serveUDPForward(fw)
		}
	}()
	g.log.Info("forward added", "forward", f.String())
	return nil
}

// RemoveForward stops forwarding f and closes its connections.
func (g *Gateway) RemoveForward(f Forward) error {
	key := f.String()
	g.mu.Lock()
	fw, ok := g.forwards[key]
	delete(g.forwards, key)
	delete(g.open, fw)
	g.mu.Unlock()
	if !ok {
		return fmt.Errorf("sandbox: forward %s: %w", f, ErrNoForward)
	}
	fw.Close()
	g.log.Info("forward removed", "forward", key)
	return nil
}

// Forwards lists the active forwards, sorted.
func (g *Gateway) Forwards() []Forward {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Forward, 0, len(g.forwards))
	for _, fw := range g.forwards {
		out = append(out, fw.f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Close stops the forwarder and waits for its connections.
func (fw *forwarder) Close() error {
	fw.close()
	fw.wg.Wait()
	return nil
}

func (fw *forwarder) close() {
	fw.mu.Lock()
	select {
	case <-fw.stop:
	default:
		close(fw.stop)
	}
	flows := make([]*stack.UDPConn, 0, len(fw.flows))
	for _, fl := range fw.flows {
		flows = append(flows, fl.gc)
	}
	fw.mu.Unlock()
	if fw.ln != nil {
		fw.ln.Close()
	}
	if fw.pc != nil {
		fw.pc.Close()
	}
	for _, c := range flows {
		c.Close()
	}
}

func (g *Gateway) guestAddr(f Forward) netip.AddrPort {
	if f.Host.Addr().Is6() && g.addrs.Guest6.IsValid() {
		return netip.AddrPortFrom(g.addrs.Guest6.Addr(), f.GuestPort)
	}
	return netip.AddrPortFrom(g.addrs.Guest.Addr(), f.GuestPort)
}

func (g *Gateway) gatewayFor(guest netip.AddrPort) netip.AddrPort {
	if guest.Addr().Is6() {
		return netip.AddrPortFrom(g.addrs.Gateway6.Addr(), 0)
	}
	return netip.AddrPortFrom(g.addrs.Gateway.Addr(), 0)
}

func (g *Gateway) serveTCPForward(fw *forwarder) {
	for {
		hc, err := fw.ln.Accept()
		if err != nil {
			return
		}
		if !g.takeFlow() {
			abort(hc)
			continue
		}
		fw.wg.Add(1)
		go func() {
			defer fw.wg.Done()
			defer g.dropFlow()
			guest := g.guestAddr(fw.f)
			ctx, cancel := context.WithTimeout(g.ctx, dialTimeout)
			gc, err := g.st.DialTCPAddrPort(ctx, g.gatewayFor(guest), guest)
			cancel()
			if err != nil {
				g.log.Debug("forward dial into the guest failed", "forward", fw.f.String(), "err", err)
				abort(hc)
				return
			}
			g.inbound.Add(1)
			// Stop this connection when the forward is removed.
			done := make(chan struct{})
			go func() {
				select {
				case <-fw.stop:
					gc.Close()
					hc.Close()
				case <-done:
				}
			}()
			g.splice(gc, hc)
			close(done)
		}()
	}
}

func (g *Gateway) serveUDPForward(fw *forwarder) {
	buf := make([]byte, 65535)
	for {
		n, from, err := fw.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		peer := from.(*net.UDPAddr).AddrPort()
		// A flow that times out just as a datagram comes is closed under
		// it: the second attempt opens a new one.
		for attempt := 0; attempt < 2; attempt++ {
			fl, stopped := g.udpFlowFor(fw, peer, from)
			if stopped {
				return
			}
			if fl == nil {
				break // refused or failed; counted and logged
			}
			fl.last.Store(time.Now().UnixNano())
			if _, err := fl.gc.Write(buf[:n]); !errors.Is(err, net.ErrClosed) {
				break
			}
		}
	}
}

// udpFlowFor returns peer's flow through fw, opening it (and its
// guest-to-host goroutine) if there is none. It returns nil if the flow is
// refused or cannot be opened, and stopped once fw is closing.
func (g *Gateway) udpFlowFor(fw *forwarder, peer netip.AddrPort, from net.Addr) (fl *udpFlow, stopped bool) {
	fw.mu.Lock()
	fl = fw.flows[peer]
	fw.mu.Unlock()
	if fl != nil {
		return fl, false
	}
	if !g.takeFlow() {
		return nil, false
	}
	guest := g.guestAddr(fw.f)
	gc, err := g.st.DialUDPAddrPort(g.gatewayFor(guest), guest)
	if err != nil {
		g.dropFlow()
		g.log.Debug("forward udp flow into the guest failed", "forward", fw.f.String(), "err", err)
		return nil, false
	}
	g.inbound.Add(1)
	fl = &udpFlow{gc: gc}
	fl.last.Store(time.Now().UnixNano())
	fw.mu.Lock()
	select {
	case <-fw.stop:
		fw.mu.Unlock()
		gc.Close()
		g.dropFlow()
		return nil, true
	default:
	}
	fw.flows[peer] = fl
	fw.mu.Unlock()
	fw.wg.Add(1)
	go func() {
		defer fw.wg.Done()
		defer g.dropFlow()
		defer func() {
			fw.mu.Lock()
			delete(fw.flows, peer)
			fw.mu.Unlock()
			gc.Close()
		}()
		bp := udpBufs.Get().(*[]byte)
		defer udpBufs.Put(bp)
		b := *bp
		for {
			// Idle means no datagram either way for UDPTimeout (RFC 4787
			// REQ-6 asks at least for refresh by outbound traffic; both
			// directions refresh here).
			gc.SetReadDeadline(time.Unix(0, fl.last.Load()).Add(g.cfg.UDPTimeout))
			n, err := gc.Read(b)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, fl.last.Load())) < g.cfg.UDPTimeout {
					continue // the host side kept the flow alive
				}
				return
			}
			fl.last.Store(time.Now().UnixNano())
			fw.pc.WriteTo(b[:n], from)
		}
	}()
	return fl, false
}

// NewSlirpAPI returns slirp4netns's control protocol (package slirpapi)
// over gw's forwards.
func NewSlirpAPI(gw *Gateway) *slirpapi.Server { return slirpapi.New(gw, gw.guestAddr) }
