package portalloc

import "fmt"

// Config configures an Allocator: one PoolConfig per protocol. The zero
// value gives every protocol the IANA range and the Sequential policy.
// ICMP configures the identifiers of ICMP echo (ping) sockets.
type Config struct {
	TCP, UDP, SCTP, ICMP PoolConfig
}

// Allocator holds one independent Pool per protocol.
type Allocator struct {
	pools [numProtocols]*Pool
}

// New returns an Allocator, or an error naming the invalid field.
func New(cfg Config) (*Allocator, error) {
	a := &Allocator{}
	for _, pc := range []struct {
		proto Protocol
		cfg   PoolConfig
	}{{TCP, cfg.TCP}, {UDP, cfg.UDP}, {SCTP, cfg.SCTP}, {ICMP, cfg.ICMP}} {
		p, err := NewPool(pc.proto, pc.cfg)
		if err != nil {
			return nil, fmt.Errorf("Config.%s: %w", upper(pc.proto), err)
		}
		a.pools[pc.proto] = p
	}
	return a, nil
}

func upper(p Protocol) string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case ICMP:
		return "ICMP"
	}
	return "SCTP"
}

// Pool returns the pool of proto, or nil for an unknown protocol.
func (a *Allocator) Pool(proto Protocol) *Pool {
	if proto >= numProtocols {
		return nil
	}
	return a.pools[proto]
}

// Snapshots returns a snapshot of every pool, in Protocols order.
func (a *Allocator) Snapshots() []Snapshot {
	out := make([]Snapshot, 0, numProtocols)
	for _, p := range a.pools {
		out = append(out, p.Snapshot())
	}
	return out
}
