package main

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

// Demo addresses, from the 198.18.0.0/15 benchmarking range (RFC 2544).
var (
	demoServer = netip.MustParsePrefix("198.18.0.1/24")
	demoClient = netip.MustParsePrefix("198.18.0.2/24")
)

// newMemDemoEnv joins the client stack to a server stack by an in-memory
// link.
func newMemDemoEnv(cfg stack.Config) (*demoEnv, error) {
	p, err := tun.NewPipe(0)
	if err != nil {
		return nil, err
	}
	srv, err := stack.New(stack.Config{Link: p.B(), Addrs: []netip.Prefix{demoServer}})
	if err != nil {
		p.Close()
		return nil, err
	}
	cfg.Link = p.A()
	cfg.Addrs = []netip.Prefix{demoClient}
	st, err := stack.New(cfg)
	if err != nil {
		srv.Close()
		p.Close()
		return nil, err
	}
	stop, err := startDemoServer(func(network, addr string) (any, error) {
		if network == "udp" {
			return srv.ListenPacket("udp4", addr)
		}
		return srv.Listen("tcp4", addr)
	}, demoServer.Addr())
	if err != nil {
		st.Close()
		srv.Close()
		p.Close()
		return nil, err
	}
	return &demoEnv{kind: "a second user-space stack over an in-memory link", st: st,
		client: demoClient.Addr(), server: demoServer.Addr(),
		close: func() { st.Close(); stop(); srv.Close(); p.Close() }}, nil
}

// newTUNDemoEnv runs the client stack over a TUN device whose kernel side
// lives in a fresh network namespace, where the kernel serves.
func newTUNDemoEnv(cfg stack.Config) (*demoEnv, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("demo --tun needs root (CAP_NET_ADMIN) to create a network namespace and a TUN device; run it with sudo, or drop --tun")
	}
	ns, err := netns.New()
	if err != nil {
		return nil, fmt.Errorf("demo --tun: %w", err)
	}
	dev, err := tun.Open(tun.Config{Name: "ustack%d", NetNS: ns.File(), Addrs: []netip.Prefix{demoServer}, Up: true})
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("demo --tun: %w", err)
	}
	cfg.Link = dev.LinkEndpoint()
	cfg.Addrs = []netip.Prefix{demoClient}
	st, err := stack.New(cfg)
	if err != nil {
		dev.Close()
		ns.Close()
		return nil, err
	}
	stop, err := startDemoServer(func(network, addr string) (any, error) {
		if network == "udp" {
			return ns.ListenPacket("udp4", addr)
		}
		return ns.Listen("tcp4", addr)
	}, demoServer.Addr())
	if err != nil {
		st.Close()
		dev.Close()
		ns.Close()
		return nil, err
	}
	return &demoEnv{kind: "the Linux kernel over TUN " + dev.Name() + " in a private namespace", st: st,
		client: demoClient.Addr(), server: demoServer.Addr(),
		close: func() { st.Close(); stop(); dev.Close(); ns.Close() }}, nil
}
