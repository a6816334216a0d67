//go:build linux

package ustacktest

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/tun"
)

// The addresses of every bed. Each bed has its own namespace and its own
// stack, so beds running at once use the same addresses without meeting.
// They are in the benchmarking range 198.18.0.0/15 and the unique local
// range fd00::/8, and the namespace has no route out.
var (
	kernel4 = netip.MustParsePrefix("198.18.0.1/24")
	stack4  = netip.MustParsePrefix("198.18.0.2/24")
	kernel6 = netip.MustParsePrefix("fd00:18::1/64")
	stack6  = netip.MustParsePrefix("fd00:18::2/64")
)

// Options configures a Bed. The zero value is usable: the IANA range
// (49152-65535) with the sequential policy for TCP and UDP, a 60 s
// TIME_WAIT without reuse, MTU 1500, and a capture of every packet.
type Options struct {
	// Range is the stack's ephemeral port range for TCP and UDP, such as
	// {40000, 40015} for 16 ports. The zero Range means the IANA range
	// (portalloc.IANA). Valid: 1 <= First <= Last <= 65535.
	Range portalloc.Range

	// Policy picks ports from Range: portalloc.Sequential (the default;
	// ports in order, so a test can predict them), Random or Hash.
	Policy portalloc.Policy

	// TimeWait is how long a TCP connection the stack closed first keeps
	// its port. 0 means 60 s; otherwise 1 ms to 10 min.
	TimeWait time.Duration

	// TimeWaitReuse lets a dial take a port still in TIME_WAIT on the
	// stack's side when the range has no other free port.
	TimeWaitReuse bool

	// MTU of the TUN device and the stack: 0 means 1500, otherwise
	// 1280-65535 (IPv6 needs 1280).
	MTU int

	// NoCapture turns the packet capture off (Capture then fails), for
	// beds that carry much traffic. SeenPorts works either way.
	NoCapture bool
}

// maxCapture bounds the bytes of packets a bed keeps for Capture; packets
// past it are counted and left out.
const maxCapture = 128 << 20

// Validate reports the first invalid field of o, naming it and what it
// allows.
func (o *Options) Validate() error {
	if o.Range != (portalloc.Range{}) {
		if err := o.Range.Validate(); err != nil {
			return fmt.Errorf("ustacktest: Options.Range %d-%d: want 1 <= First <= Last <= 65535, or the zero Range for %s", o.Range.First, o.Range.Last, portalloc.IANA)
		}
	}
	switch o.Policy {
	case portalloc.Sequential, portalloc.Random, portalloc.Hash:
	default:
		return fmt.Errorf("ustacktest: Options.Policy %d is unknown: want portalloc.Sequential, Random or Hash", uint8(o.Policy))
	}
	if o.TimeWait != 0 && (o.TimeWait < time.Millisecond || o.TimeWait > 10*time.Minute) {
		return fmt.Errorf("ustacktest: Options.TimeWait %v: want 0 (for 60s) or 1ms to 10m", o.TimeWait)
	}
	if o.MTU != 0 && (o.MTU < 1280 || o.MTU > tun.MaxMTU) {
		return fmt.Errorf("ustacktest: Options.MTU %d: want 0 (for %d) or 1280-%d", o.MTU, tun.DefaultMTU, tun.MaxMTU)
	}
	return nil
}
