//go:build linux

package rawsys

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// NewEpoll makes an epoll set that waits in Go's network poller: its
// non-blocking, close-on-exec descriptor fd, that descriptor as f (named
// name; closing f closes the set and ends a wait in rc), and f's rc,
// whose Read waits until the set has events. Errors are
// *os.SyscallError.
func NewEpoll(name string) (fd int, f *os.File, rc syscall.RawConn, err error) {
	fd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return -1, nil, nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, nil, nil, os.NewSyscallError("fcntl", err)
	}
	f = os.NewFile(uintptr(fd), name)
	if rc, err = f.SyscallConn(); err != nil {
		f.Close()
		return -1, nil, nil, err
	}
	return fd, f, rc, nil
}
