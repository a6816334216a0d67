// Package rawsys makes the socket system calls of ustack's packet paths
// (the sandbox's TCP and UDP relays) as raw system calls, on
// non-blocking descriptors. Linux only.
//
// None of these calls waits, but one on loopback runs the peer's side of
// TCP in the kernel too (a connect runs the whole handshake) and can take
// tens of microseconds. Made through Go's syscall.Syscall, a call that
// long lets the runtime's monitor thread take the P away and hand it to
// another thread, and keeps the monitor waking every 20 us; with
// connections at 10,000 a second that monitor was 15% of the relay's CPU.
// A raw call keeps its P, as gVisor's link writes do.
//
// The calls return the bare unix.Errno of a failure (nil on success), so
// that callers compare it with unix.EAGAIN and the like.
package rawsys
