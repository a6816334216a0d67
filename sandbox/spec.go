//go:build linux

package sandbox

import "net/netip"

// Policy decides which destinations the guest may reach.
type Policy struct {
	// AllowHostLoopback maps the gateway address to the host's loopback
	// (127.0.0.1, ::1). Off by default.
	AllowHostLoopback bool
	// Allow, if not empty, lists the only destinations the guest may
	// reach (besides the DNS address). Deny lists destinations it may not
	// reach; Deny wins over Allow.
	Allow, Deny []netip.Prefix
}

// verdict says why a destination is refused; "" means allowed.
func (p *Policy) verdict(dst netip.Addr) string {
	for _, d := range p.Deny {
		if d.Contains(dst) {
			return "denied by Policy.Deny " + d.String()
		}
	}
	if len(p.Allow) > 0 {
		for _, a := range p.Allow {
			if a.Contains(dst) {
				return ""
			}
		}
		return "not in any Policy.Allow prefix"
	}
	return ""
}

// forbidden reports destinations that must never be dialled on the host
// whatever the policy: the host's own loopback and unspecified, multicast
// and link-local addresses, which a guest can only reach by crafting
// packets.
func forbidden(a netip.Addr) bool {
	return a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a == netip.IPv4Unspecified() ||
		(a.Is4() && a.As4()[0] == 0) || a == netip.AddrFrom4([4]byte{255, 255, 255, 255})
}
