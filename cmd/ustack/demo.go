package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

func newDemoCmd() *cobra.Command {
	rng := portalloc.Range{First: 40000, Last: 40009}
	pol := portalloc.Sequential
	var useTUN bool
	var driver string
	c := &cobra.Command{
		Use:   "demo",
		Short: "Show the stack and its port allocator at work over an in-memory link (no root needed)",
		Long: `demo joins two user-space stacks by an in-memory link and makes TCP and UDP
connections from one to the other with a small port range. It prints the
source port of each connection, showing ports advancing one by one and
wrapping, ports released on close and reused, TCP and UDP counting
independently, and the error when the range is exhausted. It also pings
the server: the echo identifiers of ICMP sockets come from their own pool
with the same range and policy, and advance and wrap the same way.

With --tun (root only) the peer is the Linux kernel: the stack runs over a
real TUN device in a private network namespace, with the kernel as the
server, using addresses from 198.18.0.0/24.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if rng.Size() < 3 {
				return usageError{fmt.Errorf("invalid argument %q for \"--range\" flag: the demo needs at least 3 ports", rng)}
			}
			var drv tun.Driver
			if driver != "" {
				if !useTUN {
					return usageError{fmt.Errorf("--driver goes with --tun: the in-memory demo has no device")}
				}
				d, err := tun.ParseDriver(driver)
				if err != nil {
					return usageError{fmt.Errorf("invalid argument %q for \"--driver\" flag: want %s", driver, driverChoices())}
				}
				drv = d
			}
			var env *demoEnv
			var err error
			cfg := stack.Config{Ports: portalloc.Config{
				TCP:  portalloc.PoolConfig{Range: rng, Policy: pol},
				UDP:  portalloc.PoolConfig{Range: rng, Policy: pol},
				ICMP: portalloc.PoolConfig{Range: rng, Policy: pol},
			}}
			if useTUN {
				env, err = newTUNDemoEnv(cfg, drv)
			} else {
				env, err = newMemDemoEnv(cfg)
			}
			if err != nil {
				return err
			}
			defer env.close()
			fmt.Fprintf(c.OutOrStdout(), "ustack demo: client %s -> server %s (%s), port range %s, policy %s\n\n",
				env.client, env.server, env.kind, rng, pol)
			return runDemo(c.Context(), c.OutOrStdout(), env, rng)
		},
	}
	c.Flags().Var(&rng, "range", "ephemeral port range FIRST-LAST or preset ("+joinPresets()+")")
	c.Flags().Var(&pol, "policy", "port policy: sequential, random or hash")
	c.Flags().BoolVar(&useTUN, "tun", false, "use a real TUN device in a private network namespace, with the kernel as the server (needs root)")
	c.Flags().StringVar(&driver, "driver", "", "with --tun, the TUN driver: "+driverChoices())
	return c
}

func joinPresets() string {
	s := ""
	for i, n := range portalloc.Presets() {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

// demoEnv is a client stack and a server that echoes one exchange and
// closes: TCP on port 7 and UDP on port 7 at server.
type demoEnv struct {
	kind   string
	st     *stack.Stack
	client netip.Addr
	server netip.Addr
	close  func()
}

// runDemo makes the connections and prints the table.
func runDemo(ctx context.Context, w io.Writer, env *demoEnv, rng portalloc.Range) error {
	st := env.st
	tcpPool := st.Allocator().Pool(portalloc.TCP)
	udpPool := st.Allocator().Pool(portalloc.UDP)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tPROTO\tPORT OR ECHO ID\tTCP IN USE\tUDP IN USE\tWHAT HAPPENED")
	step := 0
	row := func(proto string, port any, note string) {
		step++
		fmt.Fprintf(tw, "%d\t%s\t%v\t%d\t%d\t%s\n", step, proto, port, tcpPool.InUse(), udpPool.InUse(), note)
	}
	dst := netip.AddrPortFrom(env.server, 7)
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	// 1. Connections one after another: ports advance and wrap, and each
	// returns to the pool when its connection is gone.
	n := rng.Size()
	for i := 0; i < n+n/2; i++ {
		c, err := st.DialTCPAddrPort(dialCtx, netip.AddrPort{}, dst)
		if err != nil {
			return err
		}
		port := c.LocalAddrPort().Port()
		if err := exchange(c); err != nil {
			c.Close()
			return err
		}
		// The server closes first, so our side skips TIME_WAIT.
		c.Close()
		if err := waitReleased(tcpPool, port); err != nil {
			return err
		}
		note := "connect, echo, close: port released"
		if i >= n {
			note = "wrapped: port reused after release"
		}
		row("tcp", port, note)
	}
	// 2. UDP has its own pool.
	for i := 0; i < 2; i++ {
		u, err := st.DialUDPAddrPort(netip.AddrPort{}, dst)
		if err != nil {
			return err
		}
		if err := exchange(u); err != nil {
			u.Close()
			return err
		}
		port := u.LocalAddrPort().Port()
		u.Close()
		row("udp", port, "udp counts on its own, from the start of its range")
	}
	// 2b. Ping: echo identifiers come from the ICMP pool, advance and
	// wrap like ports.
	for i := 0; i < n+2; i++ {
		id, err := pingOnce(st, env.server, i+1)
		if err != nil {
			return err
		}
		note := "ping: echo request and reply, socket closed: identifier released"
		if i >= n {
			note = "ping wrapped: identifier reused after release"
		}
		row("icmp", id, note)
	}
	// 3. Hold every port, then one more: exhaustion. Release one: reuse.
	var held []*stack.TCPConn
	defer func() {
		for _, c := range held {
			c.SetLinger(0)
			c.Close()
		}
	}()
	for {
		c, err := st.DialTCPAddrPort(dialCtx, netip.AddrPort{}, netip.AddrPortFrom(env.server, 9))
		if errors.Is(err, portalloc.ErrExhausted) {
			row("tcp", "-", err.Error())
			break
		}
		if err != nil {
			return err
		}
		held = append(held, c)
		row("tcp", c.LocalAddrPort().Port(), "connection kept open")
		if len(held) > n {
			return fmt.Errorf("demo: more than %d connections open from a %d-port range", n, n)
		}
	}
	victim := held[len(held)/2]
	port := victim.LocalAddrPort().Port()
	victim.SetLinger(0) // reset: the port is free at once
	victim.Close()
	held = append(held[:len(held)/2], held[len(held)/2+1:]...)
	if err := waitReleased(tcpPool, port); err != nil {
		return err
	}
	row("tcp", port, "closed (reset): port released")
	c, err := st.DialTCPAddrPort(dialCtx, netip.AddrPort{}, netip.AddrPortFrom(env.server, 9))
	if err != nil {
		return err
	}
	held = append(held, c)
	row("tcp", c.LocalAddrPort().Port(), "next connection gets the released port")
	return tw.Flush()
}

// pingOnce opens an echo socket to server, sends one echo request with
// sequence number seq, waits for the reply and closes the socket. It
// returns the socket's identifier.
func pingOnce(st *stack.Stack, server netip.Addr, seq int) (uint16, error) {
	c, err := st.DialPingAddr(netip.Addr{}, server)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{Seq: seq, Data: []byte("ustack demo")}}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	if _, err := c.Write(msg); err != nil {
		return 0, err
	}
	b := make([]byte, 128)
	for {
		n, err := c.Read(b)
		if err != nil {
			return 0, err
		}
		m, err := icmp.ParseMessage(1, b[:n])
		if err != nil {
			return 0, fmt.Errorf("demo: malformed echo reply: %w", err)
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.Seq == seq {
			if e.ID != int(c.ID()) {
				return 0, fmt.Errorf("demo: echo reply with identifier %d, want %d", e.ID, c.ID())
			}
			return c.ID(), nil
		}
	}
}

// exchange sends one byte and waits for it to come back, then for the
// server's close (TCP).
func exchange(c net.Conn) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if _, ok := c.(*stack.TCPConn); ok {
		if _, err := c.Read(b); err != io.EOF {
			return fmt.Errorf("demo: want the server to close after the echo, got %v", err)
		}
	}
	return nil
}

func waitReleased(p *portalloc.Pool, port uint16) error {
	deadline := time.Now().Add(10 * time.Second)
	for p.Held(port) {
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: port %d still held 10s after close", port)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// startDemoServer opens the demo server's sockets with listen and serves
// them.
func startDemoServer(listen func(network, addr string) (any, error), at netip.Addr) (func(), error) {
	var socks []io.Closer
	fail := func(err error) (func(), error) {
		for _, s := range socks {
			s.Close()
		}
		return nil, fmt.Errorf("demo server: %w", err)
	}
	for _, spec := range []struct{ network, port string }{{"tcp", "7"}, {"tcp", "9"}, {"udp", "7"}} {
		s, err := listen(spec.network, net.JoinHostPort(at.String(), spec.port))
		if err != nil {
			return fail(err)
		}
		socks = append(socks, s.(io.Closer))
	}
	return serveDemo(socks[0].(net.Listener), socks[1].(net.Listener), socks[2].(net.PacketConn)), nil
}

// serveDemo runs the demo server on a TCP listener and a UDP socket: echo
// one byte and close (TCP), echo each datagram (UDP). Port 9 (discard)
// keeps connections open until they close. It returns a stop function.
func serveDemo(l7, l9 net.Listener, pc net.PacketConn) (stop func()) {
	done := make(chan struct{}, 3)
	var conns = make(chan net.Conn, 1024)
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			c, err := l7.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err == nil {
					c.Write(b)
				}
			}()
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			c, err := l9.Accept()
			if err != nil {
				return
			}
			select {
			case conns <- c:
			default:
				c.Close()
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:n], from)
		}
	}()
	return func() {
		l7.Close()
		l9.Close()
		pc.Close()
		for range 3 {
			<-done
		}
		close(conns)
		for c := range conns {
			c.Close()
		}
	}
}
