package main

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

// newTUNPingEnv runs the stack over a TUN device whose kernel side lives
// in a fresh network namespace.
func newTUNPingEnv(cfg stack.Config) (*pingEnv, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("ping --tun needs root (CAP_NET_ADMIN) to create a network namespace and a TUN device; run it with sudo, or drop --tun")
	}
	ns, err := netns.New()
	if err != nil {
		return nil, fmt.Errorf("ping --tun: %w", err)
	}
	// The kernel's IPv6 address must answer at once, without duplicate
	// address detection.
	if err := ns.DisableDAD(); err != nil {
		ns.Close()
		return nil, fmt.Errorf("ping --tun: %w", err)
	}
	// Open returns once the kernel takes packets for the addresses (their
	// local routes in place).
	dev, err := tun.Open(tun.Config{Name: "ustack%d", NetNS: ns.File(), Addrs: []netip.Prefix{demoServer, pingPeer6}, Up: true})
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("ping --tun: %w", err)
	}
	cfg.Link = dev.LinkEndpoint()
	cfg.Addrs = []netip.Prefix{demoClient, pingLocal6}
	st, err := stack.New(cfg)
	if err != nil {
		dev.Close()
		ns.Close()
		return nil, err
	}
	return &pingEnv{kind: "the Linux kernel over TUN " + dev.Name() + " in a private namespace", st: st,
		close: func() { st.Close(); dev.Close(); ns.Close() }}, nil
}
