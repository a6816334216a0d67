package stack

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// addrMu serialises AddAddress, RemoveAddress and SetRoutes of every
// stack (they are rare), so that the address families the stack reports
// follow gVisor's table. It guards no field: it orders those calls. It
// comes before Stack.mu (RemoveAddress takes that under it) and gVisor's
// locks.
var addrMu sync.Mutex

// checkAddrPrefix applies Config.Addrs' rules to p.
func checkAddrPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("invalid prefix; want an address with its prefix length, such as 198.18.0.2/24")
	}
	a := p.Addr()
	if a.Is4In6() {
		return fmt.Errorf("IPv4-mapped IPv6 address; give the IPv4 address instead")
	}
	if a.IsUnspecified() || a.IsMulticast() {
		return fmt.Errorf("want a unicast address")
	}
	return nil
}

// Addresses returns the stack's addresses with their prefix lengths.
func (st *Stack) Addresses() []netip.Prefix {
	var out []netip.Prefix
	for _, pa := range st.s.AllAddresses()[nicID] {
		a := netipAddr(pa.AddressWithPrefix.Address)
		// gVisor lists the IPv4 broadcast address as its own.
		if a.IsValid() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			out = append(out, netip.PrefixFrom(a, pa.AddressWithPrefix.PrefixLen))
		}
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	return out
}

// AddAddress gives the stack the address p (with the prefix length of
// its subnet) at run time, as Config.Addrs does at start. Dials choose
// their source among the stack's addresses by route, so a new address is
// used by new connections to the destinations it suits. Routes do not
// change: give the new family a route with SetRoutes if it has none.
func (st *Stack) AddAddress(p netip.Prefix) error {
	if err := checkAddrPrefix(p); err != nil {
		return fmt.Errorf("ustack: AddAddress %s: %v", p, err)
	}
	if st.isClosed() {
		return fmt.Errorf("ustack: AddAddress %s: %w", p, closedErr{})
	}
	addrMu.Lock()
	defer addrMu.Unlock()
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpAddr(p.Addr()), PrefixLen: p.Bits()},
	}
	if p.Addr().Is6() {
		pa.Protocol = ipv6.ProtocolNumber
	}
	if terr := st.s.AddProtocolAddress(nicID, pa, gvstack.AddressProperties{}); terr != nil {
		if _, dup := terr.(*tcpip.ErrDuplicateAddress); dup {
			return fmt.Errorf("ustack: AddAddress %s: the stack already has %s: %w", p, p.Addr(), translate(terr))
		}
		return fmt.Errorf("ustack: AddAddress %s: %w", p, translate(terr))
	}
	st.refreshFamilies()
	return nil
}

// RemoveAddress takes the address a from the stack at run time. Every
// TCP connection using it as its local address is reset (an RST goes to
// the peer while the address still exists); its Read and Write then fail
// with an error matching syscall.ECONNABORTED. Listeners and UDP and ping
// sockets using a stay open but can no longer send (ENETUNREACH, as on
// Linux) or receive. New dials take another source.
func (st *Stack) RemoveAddress(a netip.Addr) error {
	a = a.Unmap()
	if !a.IsValid() {
		return fmt.Errorf("ustack: RemoveAddress: invalid address")
	}
	addrMu.Lock()
	defer addrMu.Unlock()
	have := st.Addresses()
	if !slices.ContainsFunc(have, func(p netip.Prefix) bool { return p.Addr() == a }) {
		return fmt.Errorf("ustack: RemoveAddress %s: not an address of the stack (it has %v)", a, have)
	}
	// Reset the connections first, so that their RSTs can still leave
	// from a.
	st.mu.Lock()
	var conns []*TCPConn
	for c := range st.open {
		// The endpoint's address, not laddr, which a dial still
		// connecting has not filled in.
		if tc, ok := c.(*TCPConn); ok {
			if la, terr := tc.ep.GetLocalAddress(); terr == nil && netipAddr(la.Addr) == a {
				conns = append(conns, tc)
			}
		}
	}
	st.mu.Unlock()
	for _, c := range conns {
		c.ep.Abort()
	}
	if terr := st.s.RemoveAddress(nicID, tcpAddr(a)); terr != nil {
		return fmt.Errorf("ustack: RemoveAddress %s: %w", a, translate(terr))
	}
	st.refreshFamilies()
	return nil
}

// refreshFamilies records which address families the stack has, and
// tells the echo replies' fast path the stack's addresses.
func (st *Stack) refreshFamilies() {
	var has4, has6 bool
	addrs := st.Addresses()
	st.echo.setLocal(addrs)
	for _, p := range addrs {
		if p.Addr().Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	st.has4.Store(has4)
	st.has6.Store(has6)
}

// Routes returns the destinations the stack reaches through its link, in
// the order it matches them (gVisor keeps the longest prefixes first).
func (st *Stack) Routes() []netip.Prefix {
	var out []netip.Prefix
	for _, r := range st.s.GetRouteTable() {
		a := netipAddr(r.Destination.ID())
		if a.IsValid() {
			out = append(out, netip.PrefixFrom(a, r.Destination.Prefix()))
		}
	}
	return out
}

// SetRoutes replaces the stack's routes at run time, as Config.Routes
// sets them at start: each prefix is a destination reached through the
// link, without host bits. An empty list leaves the stack without routes
// (only its own addresses answer). Connections already made keep the
// route they found; new dials use the new table and fail with
// ENETUNREACH where it has no route.
func (st *Stack) SetRoutes(routes []netip.Prefix) error {
	table := make([]tcpip.Route, 0, len(routes))
	for i, r := range routes {
		if !r.IsValid() {
			return fmt.Errorf("ustack: SetRoutes: routes[%d]: invalid prefix", i)
		}
		if r.Masked() != r {
			return fmt.Errorf("ustack: SetRoutes: routes[%d] %s: host bits are set; did you mean %s?", i, r, r.Masked())
		}
		if r.Addr().Is4In6() {
			return fmt.Errorf("ustack: SetRoutes: routes[%d] %s: IPv4-mapped prefix; give the IPv4 prefix instead", i, r)
		}
		table = append(table, tcpip.Route{Destination: subnetOf(r), NIC: nicID})
	}
	if st.isClosed() {
		return fmt.Errorf("ustack: SetRoutes: %w", closedErr{})
	}
	addrMu.Lock()
	defer addrMu.Unlock()
	st.s.SetRouteTable(table)
	return nil
}
