// Package portfwd describes inbound port forwards, the "-p 8080:80" of a
// sandbox: the Forward value, its textual spec and parser, the Manager
// contract that a gateway implements, and the errors a Manager returns.
//
// It is pure Go and builds on every system, so that the control API's
// client (package api) and the sandbox (Linux only) share one definition:
// a spec the sandbox refuses is refused with the same message everywhere.
package portfwd

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrExists and ErrNotFound are matched (errors.Is) by the errors of
// Manager.AddForward and Manager.RemoveForward, and by the control API
// client's errors for the same cases.
var (
	ErrExists   = errors.New("forward already exists")
	ErrNotFound = errors.New("no such forward")
)

// Manager adds, removes and lists the forwards of a running sandbox. A
// sandbox gateway implements it; the control API server and the
// slirp4netns-compatible socket both go through it.
type Manager interface {
	// Forwards lists the active forwards, sorted by String.
	Forwards() []Forward
	// AddForward starts f. An error matches ErrExists if f is active
	// already, and syscall.EADDRINUSE if its host address is taken.
	AddForward(f Forward) error
	// RemoveForward stops f and closes its connections. An error
	// matches ErrNotFound if f is not active.
	RemoveForward(f Forward) error
}

// Forward is one inbound port forward: the host listens on Host and each
// connection (or UDP flow) is carried to the guest's GuestPort.
type Forward struct {
	Proto     string         `json:"proto"` // "tcp" or "udp"
	Host      netip.AddrPort `json:"host"`
	GuestPort uint16         `json:"guest_port"`
}

// String returns f as a spec that Parse reads back:
// HOSTADDR:HOSTPORT:GUESTPORT/PROTO, with an IPv6 HOSTADDR in brackets.
func (f Forward) String() string {
	return fmt.Sprintf("%s:%d/%s", f.Host, f.GuestPort, f.Proto)
}

// Syntax is the spec's grammar, as error messages name it.
const Syntax = "[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]"

// Parse parses [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp], as slirp4netns
// and pasta users write it. HOSTADDR defaults to 127.0.0.1; an IPv6
// HOSTADDR is written in brackets ([::1]:8080:80). The error names what
// is wrong and the syntax.
func Parse(s string) (Forward, error) {
	bad := func(why string) (Forward, error) {
		return Forward{}, fmt.Errorf("invalid port forward %q: %s; want "+Syntax+", such as 8080:80 or 127.0.0.1:5353:53/udp", s, why)
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
