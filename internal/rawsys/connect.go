//go:build linux

package rawsys

import (
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// ConnectTCP opens a non-blocking, close-on-exec TCP socket to addr, with
// TCP_NODELAY on (as Go's dialer: a relay passes on what it is given, at
// once), bound to local first if local is valid (with
// IP_BIND_ADDRESS_NO_PORT, so that the connect picks the port), and
// starts its connect; done reports that the connect finished at once.
// It is what a dial does, without the goroutine that waits: the caller
// waits for the socket to be writable. Errors are *os.SyscallError.
//
// To host loopback the handshake usually completes inside the connect
// call, which still says EINPROGRESS (the SYN-ACK is processed as the call
// releases the socket); a second connect tells, for the price of one
// system call instead of a wake-up of the poller for the socket's
// EPOLLOUT edge.
func ConnectTCP(addr netip.AddrPort, local netip.Addr) (fd int, done bool, err error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	family := unix.AF_INET6
	if addr.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, os.NewSyscallError("socket", err)
	}
	SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if local.IsValid() {
		// Best effort: without it the bind picks the port.
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, sockaddrOf(netip.AddrPortFrom(local, 0))); err != nil {
			unix.Close(fd)
			return -1, false, fmt.Errorf("bind %v: %w", local, os.NewSyscallError("bind", err))
		}
	}
	for {
		err = Connect(fd, addr)
		switch err {
		case nil:
			return fd, true, nil
		case unix.EINPROGRESS:
			// The second connect says 0 once the handshake is done,
			// EALREADY while it is not, or why it failed.
			switch err := Connect(fd, addr); err {
			case nil, unix.EISCONN:
				return fd, true, nil
			case unix.EALREADY, unix.EINPROGRESS, unix.EINTR:
				return fd, false, nil
			default:
				Close(fd)
				return -1, false, os.NewSyscallError("connect", err)
			}
		case unix.EALREADY:
			return fd, false, nil
		case unix.EINTR:
			continue
		}
		unix.Close(fd)
		return -1, false, os.NewSyscallError("connect", err)
	}
}

func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr(); a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// ConnectUDP opens a non-blocking, close-on-exec UDP socket connected to
// addr, bound to local first if local is valid. Errors are
// *os.SyscallError.
func ConnectUDP(addr netip.AddrPort, local netip.Addr) (int, error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	family := unix.AF_INET6
	if addr.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if local.IsValid() {
		if err := unix.Bind(fd, sockaddrOf(netip.AddrPortFrom(local, 0))); err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError("bind", err)
		}
	}
	if err := unix.Connect(fd, sockaddrOf(addr)); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}
