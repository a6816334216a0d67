package stack

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/ustacknet/ustack/internal/errno"
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
		return errno.Of(syscall.ECONNREFUSED)
	case *tcpip.ErrConnectionReset:
		return errno.Of(syscall.ECONNRESET)
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		return errno.Of(syscall.ECONNABORTED)
	case *tcpip.ErrTimeout:
		return errno.Of(syscall.ETIMEDOUT)
	case *tcpip.ErrPortInUse, *tcpip.ErrDuplicateAddress:
		return errno.Of(syscall.EADDRINUSE)
	case *tcpip.ErrNoPortAvailable, *tcpip.ErrBadLocalAddress:
		return errno.Of(syscall.EADDRNOTAVAIL)
	case *tcpip.ErrNetworkUnreachable:
		return errno.Of(syscall.ENETUNREACH)
	case *tcpip.ErrHostUnreachable:
		return errno.Of(syscall.EHOSTUNREACH)
	case *tcpip.ErrHostDown:
		return errno.Of(syscall.EHOSTDOWN)
	case *tcpip.ErrNotConnected:
		return errno.Of(syscall.ENOTCONN)
	case *tcpip.ErrAlreadyConnected:
		return errno.Of(syscall.EISCONN)
	case *tcpip.ErrAlreadyConnecting, *tcpip.ErrAlreadyBound:
		return errno.Of(syscall.EALREADY)
	case *tcpip.ErrMessageTooLong:
		return errno.Of(syscall.EMSGSIZE)
	case *tcpip.ErrInvalidEndpointState, *tcpip.ErrInvalidOptionValue, *tcpip.ErrBadAddress:
		return errno.Of(syscall.EINVAL)
	case *tcpip.ErrClosedForSend:
		return errno.Of(syscall.EPIPE)
	case *tcpip.ErrClosedForReceive:
		return errno.Of(syscall.ENOTCONN)
	case *tcpip.ErrWouldBlock:
		return errno.Of(syscall.EAGAIN)
	case *tcpip.ErrNoBufferSpace, *tcpip.ErrQueueSizeNotSupported:
		return errno.Of(syscall.ENOBUFS)
	case *tcpip.ErrAddressFamilyNotSupported:
		return errno.Of(syscall.EAFNOSUPPORT)
	case *tcpip.ErrNotSupported, *tcpip.ErrNotPermitted:
		return errno.Of(syscall.EOPNOTSUPP)
	case *tcpip.ErrBroadcastDisabled:
		return errno.Of(syscall.EACCES)
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
