package stack

import (
	"net/netip"
	"slices"
	"syscall"

	"github.com/ustacknet/ustack/internal/errno"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Address selection: the order of a name's destination addresses, RFC
// 6724 section 6, with the stack's own routes and addresses as the
// sources; the check of a local address a socket asks for (checkLocal);
// the source address toward a destination (sourceFor).

// policyEntry is a row of the default policy table, RFC 6724 section 2.1.
type policyEntry struct {
	prefix     netip.Prefix
	precedence int
	label      int
}

// defaultPolicy is RFC 6724's default policy table, longest prefixes
// first so that the first match is the longest.
var defaultPolicy = []policyEntry{
	{netip.MustParsePrefix("::1/128"), 50, 0},
	{netip.MustParsePrefix("::ffff:0:0/96"), 35, 4},
	{netip.MustParsePrefix("::/96"), 1, 3},
	{netip.MustParsePrefix("2001::/32"), 5, 5},
	{netip.MustParsePrefix("2002::/16"), 30, 2},
	{netip.MustParsePrefix("3ffe::/16"), 1, 12},
	{netip.MustParsePrefix("fec0::/10"), 1, 11},
	{netip.MustParsePrefix("fc00::/7"), 3, 13},
	{netip.MustParsePrefix("::/0"), 40, 1},
}

// policyOf returns the precedence and label of a, IPv4 addresses being
// looked up as IPv4-mapped IPv6 addresses.
func policyOf(a netip.Addr) (precedence, label int) {
	a16 := netip.AddrFrom16(a.As16())
	for _, e := range defaultPolicy {
		if e.prefix.Contains(a16) {
			return e.precedence, e.label
		}
	}
	return 40, 1
}

// Scopes, RFC 4007 and RFC 6724 section 3.1.
const (
	scopeInterfaceLocal = 0x1
	scopeLinkLocal      = 0x2
	scopeSiteLocal      = 0x5
	scopeGlobal         = 0xe
)

// scopeOf returns the scope of a. IPv4 loopback and link-local addresses
// are link-local, other IPv4 addresses (private ones too) global, RFC
// 6724 section 3.2.
func scopeOf(a netip.Addr) int {
	if a.Is4() {
		if a.IsLoopback() || a.IsLinkLocalUnicast() {
			return scopeLinkLocal
		}
		return scopeGlobal
	}
	switch {
	case a.IsMulticast():
		return int(a.As16()[1] & 0xf)
	case a.IsLoopback(), a.IsLinkLocalUnicast():
		return scopeLinkLocal
	case netip.MustParsePrefix("fec0::/10").Contains(a):
		return scopeSiteLocal
	}
	return scopeGlobal
}

// commonPrefixLen is the number of leading bits a and b share, up to the
// 64 bits of an IPv6 prefix (RFC 6724 section 2.2's CommonPrefixLen).
func commonPrefixLen(a, b netip.Addr) int {
	x, y := a.As16(), b.As16()
	n := 0
	for i := 0; i < 8; i++ {
		d := x[i] ^ y[i]
		if d == 0 {
			n += 8
			continue
		}
		for d&0x80 == 0 {
			n++
			d <<= 1
		}
		break
	}
	return n
}

// sortRFC6724 orders addrs by RFC 6724's destination address selection
// rules: 1 (unusable last: no route or no address of the family), 2
// (matching scope), 5 (matching label), 6 (higher precedence), 8 (smaller
// scope) and 9 (longest matching prefix, IPv6 only, as most systems
// apply it), then the order the server gave. Rules 3, 4 and 7 concern
// deprecated, home and tunnelled addresses, which the stack does not
// have.
func (st *Stack) sortRFC6724(addrs []netip.Addr) []netip.Addr {
	type cand struct {
		dst, src   netip.Addr
		usable     bool
		prec, lab  int
		srcLab     int
		scope      int
		matchScope bool
	}
	cs := make([]cand, len(addrs))
	for i, a := range addrs {
		c := cand{dst: a}
		c.prec, c.lab = policyOf(a)
		c.scope = scopeOf(a)
		if (a.Is4() && st.has4.Load()) || (a.Is6() && st.has6.Load()) {
			if src, err := st.sourceFor(a); err == nil && src.IsValid() {
				c.src, c.usable = src, true
				_, c.srcLab = policyOf(src)
				c.matchScope = scopeOf(src) == c.scope
			}
		}
		cs[i] = c
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		prefer := func(x, y bool) int { // -1 if only x holds
			switch {
			case x && !y:
				return -1
			case y && !x:
				return 1
			}
			return 0
		}
		if r := prefer(a.usable, b.usable); r != 0 || !a.usable {
			return r
		}
		if r := prefer(a.matchScope, b.matchScope); r != 0 {
			return r
		}
		if r := prefer(a.srcLab == a.lab, b.srcLab == b.lab); r != 0 {
			return r
		}
		if a.prec != b.prec {
			return b.prec - a.prec
		}
		if a.scope != b.scope {
			return a.scope - b.scope
		}
		if a.dst.Is6() && b.dst.Is6() {
			return commonPrefixLen(b.dst, b.src) - commonPrefixLen(a.dst, a.src)
		}
		return 0
	})
	out := make([]netip.Addr, len(cs))
	for i, c := range cs {
		out[i] = c.dst
	}
	return out
}

// checkLocal verifies that a requested local address belongs to the stack
// and matches the family of remote (if given).
func (st *Stack) checkLocal(local, remote netip.Addr) error {
	if !local.IsValid() || local.IsUnspecified() {
		if remote.IsValid() && ((remote.Is4() && !st.has4.Load()) || (remote.Is6() && !st.has6.Load())) {
			return errno.Of(syscall.ENETUNREACH)
		}
		return nil
	}
	if remote.IsValid() && local.Is4() != remote.Is4() {
		return errno.Of(syscall.EAFNOSUPPORT)
	}
	if st.s.CheckLocalAddress(0, netProtoOf(local), tcpAddr(local)) == 0 {
		return errno.Of(syscall.EADDRNOTAVAIL)
	}
	return nil
}

// sourceFor returns the local address the stack would use toward remote.
//
// A TCP endpoint bound to the unspecified address and then connected
// reserves its port under the unspecified address but, when it is cleaned
// up, releases it under the connected local address, so gVisor never lets
// go of the port. Binding to the route's source address up front keeps
// the two in step.
func (st *Stack) sourceFor(remote netip.Addr) (netip.Addr, error) {
	r, terr := st.s.FindRoute(0, tcpip.Address{}, tcpAddr(remote), netProtoOf(remote), false)
	if terr != nil {
		return netip.Addr{}, translate(terr)
	}
	defer r.Release()
	return netipAddr(r.LocalAddress()), nil
}
