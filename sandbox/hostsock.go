//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/ustacknet/ustack/internal/rawsys"
	"golang.org/x/sys/unix"
)

// socket opens a non-blocking TCP socket to addr, from the outbound
// address if one is set, and starts its connect; done reports that the
// connect finished at once (rawsys.ConnectTCP). It is what dial does for
// the TCP relay, without the goroutine that waits.
func (d hostDialer) socket(addr netip.AddrPort) (fd int, done bool, err error) {
	return rawsys.ConnectTCP(addr, d.local(addr.Addr().Unmap()))
}

// socketOf takes the descriptor of a connection Config.Dial returned for
// the TCP relay: a non-blocking duplicate, after which c is closed.
func socketOf(c net.Conn) (int, error) {
	fd, err := dupSocket(c)
	if errors.Is(err, errNoSocket) {
		return -1, fmt.Errorf("Config.Dial returned a %T; the TCP relay needs a socket (a syscall.Conn such as *net.TCPConn), or set NoTCPRelay", c)
	}
	return fd, err
}

// errNoSocket is dupSocket's error for a connection with no descriptor
// under it.
var errNoSocket = errors.New("not a syscall.Conn")

// dupSocket takes the descriptor of a connection Config.Dial returned, for
// the TCP relay and the UDP carrier: a non-blocking, close-on-exec
// duplicate, after which c is closed.
func dupSocket(c net.Conn) (int, error) {
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errNoSocket
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}
