// Package portalloc allocates ephemeral ports for ustack.
//
// An Allocator has one Pool per transport protocol (TCP, UDP, SCTP, and
// ICMP, whose pool hands out the identifiers of echo sockets); the pools
// are independent name spaces, so TCP 50000 and UDP 50000 may be held at
// once. Each pool has its own Range and Policy, both changeable at
// run time. The package imports nothing from gVisor: the stack asks it for
// every ephemeral port and binds gVisor endpoints explicitly, so gVisor's
// own picker is never used.
//
// # Policies and their trade-off
//
// Sequential, the default, hands out the port after the last one
// allocated, skips ports that are held or excluded, and wraps from the end
// of the range to its start. It makes port reuse as late as possible,
// which is gentle on peers that still remember an old connection, and its
// behaviour is easy to reason about. It is also predictable: anyone who
// sees one of our source ports can guess the next one, which helps blind
// spoofing and connection hijacking. RFC 6056 was written for that reason.
//
// Random picks uniformly among the free ports (RFC 6056 Algorithm 1 in
// spirit, but exactly uniform: a random start followed by a linear scan,
// as many stacks do, favours the first free port after a busy block).
//
// Hash is RFC 6056 Algorithm 4 (double-hash port selection). Ports toward
// one destination advance through the range from a secret offset, while
// connections to other destinations reveal nothing about it. Following the
// Linux changes after the 2022 device-tracking research (Klein and
// Pinkas), the counter table is large (65536 entries), each allocation
// adds a small random increment, and the secrets are re-keyed periodically
// (PoolConfig.RekeyInterval).
//
// # Per-destination ports
//
// With PoolConfig.Sharing PerDestination a port is held per remote endpoint, as
// Linux, gVisor's own picker and every peer allow, since a connection is
// a 4-tuple: Allocate with a Request.Remote holds a port toward that
// endpoint only, so one port can serve a connection to each destination,
// and ReleaseTo gives it back. The sequential cursor is shared: it skips
// a port only when that port is held toward this destination, reserved,
// excluded, or held for every destination. Reserve and Allocate without
// a Remote (listeners, explicit binds) hold a port for every destination
// and cannot take a port that connections hold. Exhaustion is per
// destination and its error names the destination. Snapshots report the
// ports in use, the connections and the destinations.
//
// A per-destination allocate+release takes about twice the CPU time of
// an exclusive one (70-90 ns against 35-40 ns in the benchmarks), at any
// number of held connections. The pool grows by 264 KiB (a second bitmap
// and a count of connections per port), and each destination with
// connections costs about 0.2 KiB plus 0.5 KiB per group of 4096 ports
// in which it holds one; up to 256 idle destinations are kept for reuse.
//
// # Cost
//
// Each pool tracks all 65535 ports in a three-level bitmap of about 8.4
// KiB, with free-port counts per 512 and 4096 ports, so Allocate, Release
// and Reserve take a bounded number of steps at any occupancy, and a full
// range is reported without a scan. A pool takes under 10 KiB in all. The
// Hash policy adds a 128 KiB counter table, allocated on first use.
// docs/BENCHMARKS.md has the figures, beside gVisor's port manager.
//
// # Errors
//
// Exhaustion is an *ExhaustedError, which matches ErrExhausted and
// syscall.EADDRNOTAVAIL under errors.Is. Reserving a held port gives a
// *PortError matching syscall.EADDRINUSE; releasing a port that is not
// held gives one matching ErrNotHeld.
package portalloc
