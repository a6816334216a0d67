package portalloc

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/ustacknet/ustack/internal/errno"
)

var (
	// ErrExhausted is matched (errors.Is) by the error a pool returns when
	// no port in its range can be allocated. That error also matches
	// syscall.EADDRNOTAVAIL, which is what the kernel returns in this case.
	ErrExhausted = errors.New("no free ephemeral port")
	// ErrNotHeld is matched by the error Release returns for a port that
	// is not held.
	ErrNotHeld = errors.New("port is not held")
	// ErrInvalidPort is matched by errors for port 0.
	ErrInvalidPort = errors.New("port 0 is not a valid port")
)

// ExhaustedError reports that a pool has no port it could hand out. It
// matches ErrExhausted and syscall.EADDRNOTAVAIL with errors.Is.
//
// Creating it is constant-time; the message is formatted only when Error
// is called. A pool may return the same *ExhaustedError to consecutive
// failed calls that would report the same fields; it never modifies an
// error it has returned.
type ExhaustedError struct {
	Protocol Protocol
	Range    Range
	InUse    int // ports held in the pool, in and out of the range
	Excluded int // ports of the range excluded from automatic allocation
	Vetoed   int // free ports the caller's veto refused in this call
	// Destination is the remote endpoint a per-destination pool had no
	// port for (ports are exhausted toward it only), and HeldToward the
	// number of ports held toward it. Destination is the zero AddrPort
	// when the pool had no port for every destination.
	Destination netip.AddrPort
	HeldToward  int
}

func (e *ExhaustedError) Error() string {
	var s string
	if e.Destination.IsValid() {
		s = fmt.Sprintf("portalloc: %s ephemeral ports exhausted toward %s: range %s (%d ports), %d held toward it, %d in use, %d excluded",
			e.Protocol, e.Destination, e.Range, e.Range.Size(), e.HeldToward, e.InUse, e.Excluded)
	} else {
		s = fmt.Sprintf("portalloc: %s ephemeral ports exhausted: range %s (%d ports), %d in use, %d excluded",
			e.Protocol, e.Range, e.Range.Size(), e.InUse, e.Excluded)
	}
	if e.Vetoed > 0 {
		s += fmt.Sprintf(", %d free but refused by the caller (e.g. in TIME_WAIT)", e.Vetoed)
	}
	return s
}

// Is makes errors.Is match ErrExhausted and syscall.EADDRNOTAVAIL (and on
// Windows WSAEADDRNOTAVAIL, as package net reports it there).
func (e *ExhaustedError) Is(target error) bool {
	return target == ErrExhausted || target == syscall.EADDRNOTAVAIL || errno.Is(target, syscall.EADDRNOTAVAIL)
}

// PortError is returned by Reserve, Release, Exclude and Unexclude. Err is
// syscall.EADDRINUSE (Reserve of a held port), ErrNotHeld (Release of a
// port not held) or ErrInvalidPort.
type PortError struct {
	Op       string // "reserve", "release", "exclude", ...
	Protocol Protocol
	Port     uint16
	Err      error
	// Destination is the remote endpoint of a ReleaseTo, if any.
	Destination netip.AddrPort
}

func (e *PortError) Error() string {
	msg := e.Err.Error()
	switch e.Err {
	case syscall.EADDRINUSE:
		msg = "port is already in use"
	}
	if e.Destination.IsValid() {
		return fmt.Sprintf("portalloc: %s %s port %d toward %s: %s", e.Op, e.Protocol, e.Port, e.Destination, msg)
	}
	return fmt.Sprintf("portalloc: %s %s port %d: %s", e.Op, e.Protocol, e.Port, msg)
}

func (e *PortError) Unwrap() error { return e.Err }

// Is matches, on Windows, the Winsock form of an errno in Err
// (WSAEADDRINUSE for syscall.EADDRINUSE), as package net reports it there.
func (e *PortError) Is(target error) bool {
	en, ok := e.Err.(syscall.Errno)
	return ok && errno.Is(target, en)
}
