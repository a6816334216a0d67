package portalloc

import (
	"errors"
	"fmt"
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
}

func (e *ExhaustedError) Error() string {
	s := fmt.Sprintf("portalloc: %s ephemeral ports exhausted: range %s (%d ports), %d in use, %d excluded",
		e.Protocol, e.Range, e.Range.Size(), e.InUse, e.Excluded)
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
}

func (e *PortError) Error() string {
	msg := e.Err.Error()
	switch e.Err {
	case syscall.EADDRINUSE:
		msg = "port is already in use"
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
