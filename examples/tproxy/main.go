// Command tproxy is a small transparent proxy: every TCP connection and
// UDP flow that a network namespace sends through a TUN device is
// intercepted by a ustack stack (HandleTCP, HandleUDP) and carried on by
// an ordinary socket of the host, to the destination the namespace asked
// for. It is what tun2socks and a VPN client's split tunnel do, without
// the SOCKS part.
//
//	tproxy -netns /run/netns/guest [-tun tproxy0] [-addr 198.18.0.1/24] [-guest-addr 198.18.0.2/24]
//
// The TUN interface goes into the namespace -netns names (a file such as
// /run/netns/NAME or /proc/PID/ns/net), with -guest-addr and a default
// route through it; the stack answers as -addr and as every other
// address. A connection the host cannot make is refused to the guest
// (RST), as the destination itself would. Loopback, multicast and
// unspecified destinations are refused. A UDP flow ends when one of its
// directions has been idle for -idle.
//
// Everything the guest sends reaches whatever the host can reach: run it
// for a namespace you trust with the host's network. It prints "tproxy:
// ready" once the device is up, and stops on SIGINT or SIGTERM. Exit
// status: 0 after a signal, 1 on failure, 2 on bad usage.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nsPath := fs.String("netns", "", "network namespace file the TUN interface goes into (required)")
	name := fs.String("tun", "tproxy0", "name of the TUN interface")
	addr := fs.String("addr", "198.18.0.1/24", "the stack's own address, with prefix length")
	guest := fs.String("guest-addr", "198.18.0.2/24", "the interface's address in the namespace, with prefix length")
	idle := fs.Duration("idle", time.Minute, "UDP flows end after this long without traffic")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "tproxy: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() != 0 {
		return usage("unexpected arguments %q", fs.Args())
	}
	if *nsPath == "" {
		return usage("-netns is required: the namespace file the TUN interface goes into, such as /run/netns/NAME")
	}
	stackAddr, err := netip.ParsePrefix(*addr)
	if err != nil {
		return usage("-addr %q: want an address with prefix length, such as 198.18.0.1/24", *addr)
	}
	guestAddr, err := netip.ParsePrefix(*guest)
	if err != nil {
		return usage("-guest-addr %q: want an address with prefix length, such as 198.18.0.2/24", *guest)
	}
	if *idle <= 0 {
		return usage("-idle %v: want a positive duration", *idle)
	}
	nsFile, err := os.Open(*nsPath)
	if err != nil {
		return usage("-netns: %v", err)
	}
	defer nsFile.Close()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, stdout, log, nsFile, *name, stackAddr, guestAddr, *idle); err != nil {
		fmt.Fprintln(stderr, "tproxy:", err)
		return 1
	}
	return 0
}

// serve runs the proxy until ctx is done.
func serve(ctx context.Context, stdout io.Writer, log *slog.Logger, nsFile *os.File, name string, stackAddr, guestAddr netip.Prefix, idle time.Duration) error {
	def := netip.MustParsePrefix("0.0.0.0/0")
	if guestAddr.Addr().Is6() {
		def = netip.MustParsePrefix("::/0")
	}
	dev, err := tun.Open(tun.Config{Name: name, NetNS: nsFile, Addrs: []netip.Prefix{guestAddr}, Routes: []netip.Prefix{def}, Up: true})
	if err != nil {
		return err
	}
	defer dev.Close()
	st, err := stack.New(stack.Config{Link: dev.LinkEndpoint(), Addrs: []netip.Prefix{stackAddr}, Promiscuous: true, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	p := &proxy{log: log, idle: idle}
	if err := st.HandleTCP(p.tcp); err != nil {
		return err
	}
	if err := st.HandleUDP(p.udp); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "tproxy: ready")
	select {
	case <-ctx.Done():
	case <-dev.Gone():
		return fmt.Errorf("%s was deleted", dev.Name())
	}
	return nil
}

type proxy struct {
	log  *slog.Logger
	idle time.Duration
}

// allowed refuses destinations a proxy must not reach for a guest.
func allowed(dst netip.AddrPort) bool {
	a := dst.Addr()
	return a.IsValid() && !a.IsLoopback() && !a.IsMulticast() && !a.IsUnspecified()
}

// tcp dials the original destination from the host, then accepts the
// guest's connection and copies both ways until both sides are done.
func (p *proxy) tcp(r *stack.TCPRequest) {
	if !allowed(r.Dst) {
		r.Refuse()
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	hc, err := d.Dial("tcp", r.Dst.String())
	if err != nil {
		p.log.Info("refused", "src", r.Src, "dst", r.Dst, "err", err)
		r.Refuse()
		return
	}
	defer hc.Close()
	gc, err := r.Accept()
	if err != nil {
		p.log.Warn("accept", "src", r.Src, "dst", r.Dst, "err", err)
		return
	}
	defer gc.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(hc, gc)
		hc.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(gc, hc)
	gc.CloseWrite()
	wg.Wait()
}

// udp carries a guest's flow over a connected host socket until it has
// been idle for p.idle.
func (p *proxy) udp(r *stack.UDPRequest) {
	if !allowed(r.Dst) {
		r.Refuse()
		return
	}
	hc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.Dst))
	if err != nil {
		p.log.Info("refused", "src", r.Src, "dst", r.Dst, "err", err)
		r.Refuse()
		return
	}
	defer hc.Close()
	gc, err := r.Accept()
	if err != nil {
		p.log.Warn("accept", "src", r.Src, "dst", r.Dst, "err", err)
		return
	}
	defer gc.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		relay(hc, gc, p.idle)
		hc.Close() // ends the other direction's read
	}()
	relay(gc, hc, p.idle)
	gc.Close()
	wg.Wait()
}

// relay copies datagrams from src to dst until src has been idle for
// idle or fails.
func relay(dst io.Writer, src net.Conn, idle time.Duration) {
	buf := make([]byte, 65535)
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if err != nil {
			return // idle (a deadline), closed by the other direction, or failed
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}
