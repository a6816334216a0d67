//go:build linux

package sandbox

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Forward is one inbound port forward: the host listens on Host and each
// connection (or UDP flow) is carried to the guest's GuestPort.
type Forward struct {
	Proto     string         `json:"proto"` // "tcp" or "udp"
	Host      netip.AddrPort `json:"host"`
	GuestPort uint16         `json:"guest_port"`
}

func (f Forward) String() string {
	return fmt.Sprintf("%s:%d/%s", f.Host, f.GuestPort, f.Proto)
}

// ParseForward parses [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp], as
// slirp4netns and pasta users write it. HOSTADDR defaults to 127.0.0.1; an
// IPv6 HOSTADDR is written in brackets ([::1]:8080:80).
func ParseForward(s string) (Forward, error) {
	bad := func(why string) (Forward, error) {
		return Forward{}, fmt.Errorf("invalid port forward %q: %s; want [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp], such as 8080:80 or 127.0.0.1:5353:53/udp", s, why)
	}
	spec := strings.TrimSpace(s)
	f := Forward{Proto: "tcp"}
	if i := strings.LastIndex(spec, "/"); i >= 0 {
		switch p := strings.ToLower(spec[i+1:]); p {
		case "tcp", "udp":
			f.Proto = p
		default:
			return bad(fmt.Sprintf("protocol %q is not tcp or udp", spec[i+1:]))
		}
		spec = spec[:i]
	}
	host := "127.0.0.1"
	var hostPort, guestPort string
	if strings.HasPrefix(spec, "[") {
		end := strings.Index(spec, "]")
		if end < 0 {
			return bad("missing ] after the IPv6 address")
		}
		host = spec[1:end]
		rest := strings.Split(strings.TrimPrefix(spec[end+1:], ":"), ":")
		if len(rest) != 2 {
			return bad("want HOSTPORT:GUESTPORT after the address")
		}
		hostPort, guestPort = rest[0], rest[1]
	} else {
		parts := strings.Split(spec, ":")
		switch len(parts) {
		case 2:
			hostPort, guestPort = parts[0], parts[1]
		case 3:
			host, hostPort, guestPort = parts[0], parts[1], parts[2]
		default:
			return bad("want two or three fields separated by ':'")
		}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return bad(fmt.Sprintf("host address %q is not an IP address", host))
	}
	hp, err := parsePortField(hostPort)
	if err != nil {
		return bad("host port " + err.Error())
	}
	gp, err := parsePortField(guestPort)
	if err != nil {
		return bad("guest port " + err.Error())
	}
	f.Host = netip.AddrPortFrom(a.Unmap(), hp)
	f.GuestPort = gp
	return f, nil
}

func parsePortField(s string) (uint16, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("%d is outside 1-65535", n)
	}
	return uint16(n), nil
}

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
