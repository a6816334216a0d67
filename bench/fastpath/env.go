//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"github.com/vishvananda/netlink"
)

// Addresses: all from the benchmarking range 198.18.0.0/15, inside
// namespaces made for the run that have no route out.
var (
	tunKernel  = netip.MustParsePrefix("198.18.0.1/24") // kernel side of the TUN
	tunStack   = netip.MustParsePrefix("198.18.0.2/24") // the ustack stack
	vethClient = netip.MustParsePrefix("198.18.1.1/24") // veth end in namespace A
	vethServer = netip.MustParsePrefix("198.18.1.2/24") // veth end in namespace B
)

// pair is two endpoints that exchange traffic: a "client" side (ustack,
// or the kernel in namespace A) and a "server" side (always the kernel, in
// a private namespace).
type pair struct {
	name       string
	serverAddr netip.Addr
	dial       func(network, address string) (net.Conn, error)
	listenPkt  func(network, address string) (net.PacketConn, error)
	clientAddr netip.Addr
	server     *netns.NS
	// clientNS is the client's namespace when the client is the kernel
	// (veth), for workers that lock their thread into it; nil for ustack.
	clientNS *netns.NS
	// stats describes the ustack side's TCP retransmissions; nil for veth.
	stats func() string
	close func()
}

// tunOptions chooses how the ustack side is built.
type tunOptions struct {
	mtu        int
	noOffload  bool
	multiQueue bool
	driver     tun.Driver          // empty: the Linux default (kernel)
	stackCfg   func(*stack.Config) // adjusts the stack's Config
	tuneGVisor func(*stack.Stack)  // adjusts gVisor after New
}

// newTUNPair makes a namespace with a TUN device whose kernel side is
// tunKernel, and a ustack stack on the device's link at tunStack.
func newTUNPair(o tunOptions) (*pair, error) {
	ns, err := netns.New()
	if err != nil {
		return nil, err
	}
	p, err := newTUNPairIn(ns.File(), o)
	if err != nil {
		ns.Close()
		return nil, err
	}
	p.server = ns
	closeStack := p.close
	p.close = func() {
		closeStack()
		ns.Close()
	}
	return p, nil
}

// newTUNPairIn is newTUNPair in an existing namespace; the pair's server
// is left nil.
func newTUNPairIn(nsFile *os.File, o tunOptions) (*pair, error) {
	dev, err := tun.Open(tun.Config{
		NetNS:      nsFile,
		MTU:        o.mtu,
		Addrs:      []netip.Prefix{tunKernel},
		Up:         true,
		MultiQueue: o.multiQueue,
		NoOffload:  o.noOffload,
		Driver:     o.driver,
	})
	if err != nil {
		return nil, err
	}
	cfg := stack.Config{Link: dev.LinkEndpoint(), Addrs: []netip.Prefix{tunStack}}
	if o.stackCfg != nil {
		o.stackCfg(&cfg)
	}
	st, err := stack.New(cfg)
	if err != nil {
		dev.Close()
		return nil, err
	}
	applyTCPFlag(st)
	if o.tuneGVisor != nil {
		o.tuneGVisor(st)
	}
	return &pair{
		name:       fmt.Sprintf("ustack mtu %d", o.mtu),
		serverAddr: tunKernel.Addr(),
		clientAddr: tunStack.Addr(),
		dial:       st.Dial,
		listenPkt:  st.ListenPacket,
		stats: func() string {
			t := st.GVisor().Stats().TCP
			return fmt.Sprintf("retransmits %d (fast %d, timeouts %d, SACK recovery %d, TLP %d, spurious %d)",
				t.Retransmits.Value(), t.FastRetransmit.Value(), t.Timeouts.Value(), t.SACKRecovery.Value(),
				t.TLPRecovery.Value(), t.SpuriousRecovery.Value())
		},
		close: func() {
			st.Close()
			dev.Close()
		},
	}, nil
}

// newVethPair makes two namespaces joined by a veth pair with the given
// MTU: the kernel-to-kernel baseline.
func newVethPair(mtu int) (p *pair, err error) {
	a, err := netns.New()
	if err != nil {
		return nil, err
	}
	b, err := netns.New()
	if err != nil {
		a.Close()
		return nil, err
	}
	defer func() {
		if err != nil {
			a.Close()
			b.Close()
		}
	}()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "va", MTU: mtu},
		PeerName:      "vb",
		PeerMTU:       uint32(mtu),
		PeerNamespace: netlink.NsFd(int(b.File().Fd())),
	}
	if err := a.Handle().LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("veth: %w", err)
	}
	for _, end := range []struct {
		ns   *netns.NS
		name string
		addr netip.Prefix
	}{{a, "va", vethClient}, {b, "vb", vethServer}} {
		h := end.ns.Handle()
		l, err := h.LinkByName(end.name)
		if err != nil {
			return nil, fmt.Errorf("veth %s: %w", end.name, err)
		}
		ipn := &net.IPNet{IP: end.addr.Addr().AsSlice(), Mask: net.CIDRMask(end.addr.Bits(), 32)}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
			return nil, fmt.Errorf("veth %s address: %w", end.name, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("veth %s up: %w", end.name, err)
		}
	}
	return &pair{
		name:       fmt.Sprintf("veth mtu %d", mtu),
		serverAddr: vethServer.Addr(),
		clientAddr: vethClient.Addr(),
		dial:       a.Dial,
		listenPkt:  a.ListenPacket,
		server:     b,
		clientNS:   a,
		close: func() {
			// Namespaces vanish with their last reference, the veth
			// pair with them.
			a.Close()
			b.Close()
		},
	}, nil
}

var errTimeout = errors.New("timed out")
