package portalloc

import (
	"fmt"
	"strings"
)

// Protocol names a transport protocol. Each protocol has its own pool: TCP
// port 50000 and UDP port 50000 are different ports. ICMP's "ports" are
// the identifiers of ICMP echo sockets (ping), which name a socket the way
// a port does.
type Protocol uint8

// The protocols with a pool in an Allocator.
const (
	TCP Protocol = iota
	UDP
	SCTP
	ICMP
	numProtocols
)

// Protocols lists every protocol an Allocator serves, in order.
var Protocols = []Protocol{TCP, UDP, SCTP, ICMP}

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	case ICMP:
		return "icmp"
	}
	return fmt.Sprintf("protocol(%d)", uint8(p))
}

// ParseProtocol parses "tcp", "udp", "sctp" or "icmp", in any case.
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "sctp":
		return SCTP, nil
	case "icmp":
		return ICMP, nil
	}
	return 0, fmt.Errorf("portalloc: unknown protocol %q; want tcp, udp, sctp or icmp", s)
}

// MarshalText implements encoding.TextMarshaler.
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Protocol) UnmarshalText(b []byte) error {
	v, err := ParseProtocol(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Policy selects how a pool chooses the next ephemeral port.
type Policy uint8

const (
	// Sequential hands out the port after the last one allocated (not the
	// last one released), skipping blocked ports and wrapping from Last to
	// First. It is the default. It is predictable: an observer who sees one
	// port can guess the next, which is the weakness RFC 6056 addresses.
	Sequential Policy = iota
	// Random picks uniformly among the free ports of the range. Unlike
	// random-start-then-scan, a port just after a busy block is no more
	// likely than any other.
	Random
	// Hash is RFC 6056 Algorithm 4 (double-hash port selection), hardened
	// as Linux did in 2022: ports toward one destination advance
	// sequentially from a secret per-destination offset, using a large
	// table of counters with small random increments and a secret that is
	// re-keyed periodically.
	Hash
)

// Policies lists the policy names ParsePolicy accepts.
var Policies = []string{"sequential", "random", "hash"}

func (p Policy) String() string {
	switch p {
	case Sequential:
		return "sequential"
	case Random:
		return "random"
	case Hash:
		return "hash"
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// ParsePolicy parses a policy name: sequential, random or hash.
func ParsePolicy(s string) (Policy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "sequential":
		return Sequential, nil
	case "random":
		return Random, nil
	case "hash":
		return Hash, nil
	}
	return 0, fmt.Errorf("portalloc: unknown policy %q; want one of %s", s, strings.Join(Policies, ", "))
}

// Set implements pflag.Value.
func (p *Policy) Set(s string) error {
	v, err := ParsePolicy(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Type implements pflag.Value.
func (p *Policy) Type() string { return "policy" }

// MarshalText implements encoding.TextMarshaler.
func (p Policy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Policy) UnmarshalText(b []byte) error { return p.Set(string(b)) }
