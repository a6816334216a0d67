package main

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

// newTUNDemoEnv runs the client stack over a TUN device whose kernel side
// lives in a fresh network namespace, where the kernel serves.
func newTUNDemoEnv(cfg stack.Config, driver tun.Driver) (*demoEnv, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("demo --tun needs root (CAP_NET_ADMIN) to create a network namespace and a TUN device; run it with sudo, or drop --tun")
	}
	ns, err := netns.New()
	if err != nil {
		return nil, fmt.Errorf("demo --tun: %w", err)
	}
	dev, err := tun.Open(tun.Config{Driver: driver, Name: "ustack%d", NetNS: ns.File(), Addrs: []netip.Prefix{demoServer}, Up: true})
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
	kind := "the Linux kernel over TUN " + dev.Name() + " in a private namespace"
	if driver != tun.DriverDefault {
		kind += ", " + string(driver) + " driver"
	}
	return &demoEnv{kind: kind, st: st,
		client: demoClient.Addr(), server: demoServer.Addr(),
		close: func() { st.Close(); stop(); dev.Close(); ns.Close() }}, nil
}
