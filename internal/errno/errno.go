// Package errno makes ustack's errors match the platform's own socket
// errors with errors.Is.
//
// ustack reports the errno the Linux kernel would (syscall.ECONNREFUSED,
// syscall.EADDRNOTAVAIL, ...). On Unix systems package net reports the
// same values. On Windows it does not: net reports Winsock errors
// (WSAECONNREFUSED, 10061), while syscall.ECONNREFUSED there is a number Go
// invented that no system call returns. So on Windows Of wraps the errno in
// an *Error that matches both the portable name and the Winsock error,
// and unwraps to the latter (errors.As finds the Winsock errno, as with
// package net). On other systems Of returns the errno itself.
package errno

import (
	"errors"
	"syscall"
)

// Error is a socket error on Windows: it matches (errors.Is) the portable
// syscall name Errno, and it unwraps to the Winsock error WSA.
type Error struct {
	Errno syscall.Errno // the portable name, such as syscall.ECONNREFUSED
	WSA   syscall.Errno // the Winsock error, such as WSAECONNREFUSED (10061)
}

// Error returns the Winsock error's message, as package net's errors on
// Windows say it.
func (e *Error) Error() string { return e.WSA.Error() }

// Unwrap returns the Winsock error.
func (e *Error) Unwrap() error { return e.WSA }

// Is matches the portable name.
func (e *Error) Is(target error) bool { return target == e.Errno }

// Of returns the error to report for e on this system: e itself, or on
// Windows an *Error for e and its Winsock error if it has one.
func Of(e syscall.Errno) error {
	if !useWSA {
		return e
	}
	return wrap(e)
}

// Is reports whether target is e's Winsock error on Windows (always false
// elsewhere). Error types that carry a portable errno use it in their Is
// methods so that errors.Is matches the Winsock form too.
func Is(target error, e syscall.Errno) bool {
	if !useWSA {
		return false
	}
	w, ok := winsock[e]
	return ok && target == w
}

// wrap returns an *Error for e if e has a Winsock counterpart, else e.
func wrap(e syscall.Errno) error {
	if w, ok := winsock[e]; ok {
		return &Error{Errno: e, WSA: w}
	}
	return e
}

// winsock maps the errnos ustack reports to the Winsock errors of the
// same meaning (values from winerror.h; errno_windows_test.go checks them
// against golang.org/x/sys/windows). EPIPE maps to WSAESHUTDOWN, which
// Windows returns for a send after the connection was shut down; EAGAIN
// to WSAEWOULDBLOCK.
var winsock = map[syscall.Errno]syscall.Errno{
	syscall.EACCES:        10013,
	syscall.EINVAL:        10022,
	syscall.EAGAIN:        10035,
	syscall.EALREADY:      10037,
	syscall.EDESTADDRREQ:  10039,
	syscall.EMSGSIZE:      10040,
	syscall.EOPNOTSUPP:    10045,
	syscall.EAFNOSUPPORT:  10047,
	syscall.EADDRINUSE:    10048,
	syscall.EADDRNOTAVAIL: 10049,
	syscall.ENETUNREACH:   10051,
	syscall.ECONNABORTED:  10053,
	syscall.ECONNRESET:    10054,
	syscall.ENOBUFS:       10055,
	syscall.EISCONN:       10056,
	syscall.ENOTCONN:      10057,
	syscall.EPIPE:         10058,
	syscall.ETIMEDOUT:     10060,
	syscall.ECONNREFUSED:  10061,
	syscall.EHOSTDOWN:     10064,
	syscall.EHOSTUNREACH:  10065,
}

// Matches reports whether err matches e (errors.Is) in its portable form
// or, on Windows, in its Winsock form, as package net reports it there.
func Matches(err error, e syscall.Errno) bool {
	if errors.Is(err, e) {
		return true
	}
	w, ok := winsock[e]
	return useWSA && ok && errors.Is(err, w)
}
