package stack

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// ErrStackClosed is matched (errors.Is), together with net.ErrClosed, by
// errors from a Stack that has been closed.
var ErrStackClosed = errors.New("ustack: stack closed")

// closedErr matches both net.ErrClosed and ErrStackClosed.
type closedErr struct{}

func (closedErr) Error() string { return "use of closed network connection" }
func (closedErr) Is(target error) bool {
	return target == net.ErrClosed || target == ErrStackClosed
}

// GVisorError carries a gVisor error that has no errno of its own.
type GVisorError struct{ Err tcpip.Error }

func (e *GVisorError) Error() string { return "netstack: " + e.Err.String() }

// translate converts a gVisor error into a Go error at the one boundary
// where that happens. Errors with a Linux equivalent become the
// syscall.Errno the kernel would return, so errors.Is works as with the
// net package; end of stream is io.EOF.
func translate(err tcpip.Error) error {
	switch err.(type) {
	case nil:
		return nil
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrPortInUse, *tcpip.ErrDuplicateAddress:
		return syscall.EADDRINUSE
	case *tcpip.ErrNoPortAvailable, *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrHostDown:
		return syscall.EHOSTDOWN
	case *tcpip.ErrNotConnected:
		return syscall.ENOTCONN
	case *tcpip.ErrAlreadyConnected:
		return syscall.EISCONN
	case *tcpip.ErrAlreadyConnecting, *tcpip.ErrAlreadyBound:
		return syscall.EALREADY
	case *tcpip.ErrMessageTooLong:
		return syscall.EMSGSIZE
	case *tcpip.ErrInvalidEndpointState, *tcpip.ErrInvalidOptionValue, *tcpip.ErrBadAddress:
		return syscall.EINVAL
	case *tcpip.ErrClosedForSend:
		return syscall.EPIPE
	case *tcpip.ErrClosedForReceive:
		return syscall.ENOTCONN
	case *tcpip.ErrWouldBlock:
		return syscall.EAGAIN
	case *tcpip.ErrNoBufferSpace, *tcpip.ErrQueueSizeNotSupported:
		return syscall.ENOBUFS
	case *tcpip.ErrAddressFamilyNotSupported:
		return syscall.EAFNOSUPPORT
	case *tcpip.ErrNotSupported, *tcpip.ErrNotPermitted:
		return syscall.EOPNOTSUPP
	case *tcpip.ErrBroadcastDisabled:
		return syscall.EACCES
	}
	return &GVisorError{err}
}

// opError builds a *net.OpError in the form package net uses.
func opError(op, network string, src, dst netip.AddrPort, err error) *net.OpError {
	oe := &net.OpError{Op: op, Net: network, Err: err}
	if src.IsValid() {
		oe.Source = addrOf(network, src)
	}
	if dst.IsValid() {
		oe.Addr = addrOf(network, dst)
	}
	return oe
}

func addrOf(network string, ap netip.AddrPort) net.Addr {
	if isUDP(network) {
		return net.UDPAddrFromAddrPort(ap)
	}
	return net.TCPAddrFromAddrPort(ap)
}

func isUDP(network string) bool {
	return network == "udp" || network == "udp4" || network == "udp6"
}

// timeoutErr is what operations return past their deadline: it is
// os.ErrDeadlineExceeded, so errors.Is and net.Error.Timeout both work.
var timeoutErr error = os.ErrDeadlineExceeded
