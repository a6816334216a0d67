//go:build freebsd || linux

package tun

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bsdTun is built on Linux too, where no tun(4) exists, so that its
// framing, deadlines and lifetime are tested there over a SOCK_SEQPACKET
// socket pair, which keeps packet boundaries as tun(4) does.

// bsdTun is an open tun(4) device in TUNSIFHEAD mode, read and written one
// IP packet per call, without the header: Read strips it, Write adds it.
// Read waits in Go's poller and obeys SetReadDeadline. Read is for one
// goroutine; Write is safe for concurrent use. Close closes the device
// and destroys its interface.
type bsdTun struct {
	f    *os.File
	rc   syscall.RawConn
	name string // the interface's name when opened

	// ifname asks the device for its interface's current name; destroy
	// deletes an interface. Nil (in tests) skips them.
	ifname  func(fd int) (string, error)
	destroy func(name string) error

	rd vecCall // the reader's

	wmu sync.Mutex // guards wr; a leaf
	wr  vecCall

	closed    atomic.Bool // set before the descriptor is closed
	closeOnce sync.Once
	closeErr  error
}

var (
	_ io.ReadWriteCloser = (*bsdTun)(nil)
	_ deadliner          = (*bsdTun)(nil)
)

// newBSDTun takes fd, a non-blocking descriptor of interface name's
// device, into Go's poller (kqueue on FreeBSD). On failure fd is closed.
func newBSDTun(fd int, name string) (*bsdTun, error) {
	f := os.NewFile(uintptr(fd), "/dev/"+name)
	// The reader waits in the poller and is stopped by a read deadline; a
	// descriptor the poller cannot take has no deadlines.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, &deviceError{msg: fmt.Sprintf("%s cannot wait in Go's poller: %v", f.Name(), err), err: err}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, &deviceError{msg: fmt.Sprintf("%s: %v", f.Name(), err), err: err}
	}
	t := &bsdTun{f: f, rc: rc, name: name}
	t.rd.init(unix.SYS_READV)
	t.wr.init(unix.SYS_WRITEV)
	return t, nil
}

// errTunDown is what Write returns when tun(4) discards a packet without
// an error, as it does while its interface is down.
var errTunDown = fmt.Errorf("tun: packet discarded: the interface is down: %w", syscall.ENETDOWN)

// Read reads the next IP packet into b, whose length bounds the packet
// (tun(4) drops what does not fit). It skips what is neither IPv4 nor
// IPv6.
func (t *bsdTun) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r := &t.rd
	for {
		r.buf = b
		err := t.rc.Read(r.fn)
		r.buf = nil
		if err == nil && r.err != nil {
			err = os.NewSyscallError("readv", r.err)
		}
		if err != nil {
			return 0, t.closedError(err)
		}
		if r.n == 0 {
			return 0, io.EOF // tun(4) never reads nothing; a socket at its end does
		}
		if r.n <= afHeaderLen {
			continue // an empty packet: nothing to deliver
		}
		if _, err := parseAFHeader(r.hdr[:]); err != nil {
			continue // not IP: gVisor has no use for it
		}
		return r.n - afHeaderLen, nil
	}
}

// Write writes the IP packet b with its address family header in one
// system call.
func (t *bsdTun) Write(b []byte) (int, error) {
	h, err := afHeader(b)
	if err != nil {
		return 0, err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	w := &t.wr
	w.hdr, w.buf = h, b
	err = t.rc.Write(w.fn)
	w.buf = nil
	if err == nil && w.err != nil {
		err = os.NewSyscallError("writev", w.err)
	}
	switch {
	case err != nil:
		return 0, t.closedError(err)
	case w.n == 0:
		return 0, errTunDown
	case w.n != afHeaderLen+len(b):
		return max(0, w.n-afHeaderLen), io.ErrShortWrite
	}
	return len(b), nil
}

// vecCall is one direction's readv or writev of a header and a packet,
// run by the poller through fn, which is made once so that a call
// allocates nothing: the other fields are the call's arguments and
// results.
type vecCall struct {
	trap uintptr // unix.SYS_READV or unix.SYS_WRITEV
	hdr  [afHeaderLen]byte
	buf  []byte
	n    int
	err  error
	fn   func(fd uintptr) (done bool)
}

func (c *vecCall) init(trap uintptr) {
	c.trap = trap
	c.fn = func(fd uintptr) bool {
		for {
			c.n, c.err = rawVector(c.trap, fd, c.hdr[:], c.buf)
			if c.err != syscall.EINTR {
				return c.err != syscall.EAGAIN // else wait in the poller
			}
		}
	}
}

// closedError returns os.ErrClosed for an error after Close, which the
// descriptor's raw calls report as poll's own "use of closed file", and
// err otherwise.
func (t *bsdTun) closedError(err error) error {
	if t.closed.Load() {
		return os.ErrClosed
	}
	return err
}

// SetReadDeadline sets the deadline of Read; a time in the past wakes it.
func (t *bsdTun) SetReadDeadline(tm time.Time) error { return t.f.SetReadDeadline(tm) }

// currentName returns the interface's name now (it may have been
// renamed), or the name it had when opened.
func (t *bsdTun) currentName() string {
	name := t.name
	if t.ifname != nil {
		_ = t.rc.Control(func(fd uintptr) {
			if n, err := t.ifname(int(fd)); err == nil {
				name = n
			}
		})
	}
	return name
}

// Close closes the device, which sets its interface down and removes its
// addresses and routes, then destroys the interface. It is idempotent.
func (t *bsdTun) Close() error {
	t.closeOnce.Do(func() {
		name := t.currentName()
		t.closed.Store(true)
		t.closeErr = t.f.Close()
		if t.destroy != nil {
			t.closeErr = errors.Join(t.closeErr, t.destroy(name))
		}
	})
	return t.closeErr
}

// rawVector is readv or writev (trap) of a and b on fd, as one raw system
// call: the descriptor is non-blocking, and tun(4) never blocks a writer.
func rawVector(trap, fd uintptr, a, b []byte) (int, error) {
	iov := [2]unix.Iovec{{Base: &a[0]}, {Base: &b[0]}}
	iov[0].SetLen(len(a))
	iov[1].SetLen(len(b))
	n, _, e := unix.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
