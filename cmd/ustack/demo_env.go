package main

import (
	"net/netip"

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
