//go:build linux

package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// threadNSPath names the network namespace of the calling thread.
const threadNSPath = "/proc/thread-self/ns/net"

// NS is a handle to a network namespace made by New. Its methods are safe for
// concurrent use.
type NS struct {
	f *os.File        // the namespace (nsfs) file; closing it drops our reference
	h *netlink.Handle // rtnetlink socket inside the namespace

	mu       sync.RWMutex // guards the fields below; held for reading while entering the namespace. LOCK ORDERING: mu > whatever Do's fn takes; Close takes it alone
	closed   bool
	closeErr error
}

// errClosed is returned by Do and its helpers after Close.
var errClosed = fmt.Errorf("netns: namespace handle is closed: %w", os.ErrClosed)

// New creates a fresh, unnamed network namespace with its loopback
// interface up, and returns a handle to it. The calling goroutine stays in
// its namespace. The namespace is empty apart from lo: no other interfaces,
// no routes out.
func New() (*NS, error) {
	ns := &NS{}
	err := onThread(
		func() error { return unix.Unshare(unix.CLONE_NEWNET) },
		func() error {
			fd, err := unix.Open(threadNSPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open %s: %w", threadNSPath, err)
			}
			ns.f = os.NewFile(uintptr(fd), "netns")
			// Sockets are bound to the namespace of the thread that
			// makes them, so this handle configures the new namespace
			// from any goroutine.
			if ns.h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
				return fmt.Errorf("netlink handle: %w", err)
			}
			lo, err := ns.h.LinkByName("lo")
			if err != nil {
				return fmt.Errorf("find lo: %w", err)
			}
			if err := ns.h.LinkSetUp(lo); err != nil {
				return fmt.Errorf("set lo up: %w", err)
			}
			return nil
		})
	if err != nil {
		if ns.h != nil {
			ns.h.Close()
		}
		if ns.f != nil {
			ns.f.Close()
		}
		return nil, fmt.Errorf("netns: new namespace: %w", err)
	}
	return ns, nil
}

// File returns the namespace's nsfs file, for APIs that take a namespace as
// a file (such as tun.Config.NetNS) or a file descriptor (setns). It is owned
// by ns and valid until Close.
func (ns *NS) File() *os.File { return ns.f }

// Handle returns a netlink handle whose sockets live in the namespace, for
// configuring links, addresses and routes there from any goroutine. It is
// owned by ns: do not close it. It is valid until Close, and must not be
// used after: a closed netlink.Handle does not fail, it silently falls back
// to the calling thread's namespace, usually the host's.
func (ns *NS) Handle() *netlink.Handle { return ns.h }

// Do runs fn on an OS thread switched into the namespace, waits for it and
// returns its error; see DoIn for the rules fn must follow. After Close, Do
// returns an error matching os.ErrClosed without running fn.
func (ns *NS) Do(fn func() error) error {
	return onThread(func() error {
		ns.mu.RLock()
		defer ns.mu.RUnlock()
		if ns.closed {
			return errClosed
		}
		return setns(ns.f)
	}, fn)
}

// Listen is net.Listen inside the namespace. The listener stays in the
// namespace; use it from any goroutine. Use literal addresses: name lookups
// would also run inside the namespace, which has no route out.
func (ns *NS) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// ListenPacket is net.ListenPacket inside the namespace; see Listen.
func (ns *NS) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// Dial is net.Dial from inside the namespace; see Listen.
func (ns *NS) Dial(network, address string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.Dial(network, address)
		return err
	})
	return c, err
}

// Close drops ns's references to the namespace: its file and its netlink
// handle. The namespace itself lives on while sockets, devices or threads
// still refer to it, and vanishes after the last one. Close is idempotent;
// later calls return the first call's result. Do, and the helpers built on
// it, fail with an error matching os.ErrClosed after Close.
func (ns *NS) Close() error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if !ns.closed {
		ns.closed = true
		ns.h.Close()
		ns.closeErr = ns.f.Close()
	}
	return ns.closeErr
}

// DoIn runs fn on a fresh goroutine whose OS thread is switched into the
// network namespace open as nsFile (an nsfs file, such as NS.File or
// /proc/PID/ns/net), waits for it and returns its error. A panic in fn is
// re-raised in the caller. The caller's own thread never changes namespace.
//
// fn must not start goroutines that expect to be in the namespace (they will
// not be), nor unlock the thread, nor change other per-thread state that
// outlives it. After fn, the thread is switched back; if that fails the
// thread is discarded and DoIn returns an error saying so.
func DoIn(nsFile *os.File, fn func() error) error {
	return onThread(func() error { return setns(nsFile) }, fn)
}

// setns switches the calling thread into the network namespace open as f.
func setns(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	var serr error
	// Control keeps the descriptor from being closed under us.
	if err := rc.Control(func(fd uintptr) {
		serr = unix.Setns(int(fd), unix.CLONE_NEWNET)
	}); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("netns: setns: %w", serr)
	}
	return nil
}

// errGoexit is reported when fn ends its goroutine with runtime.Goexit (for
// example t.FailNow) instead of returning.
var errGoexit = errors.New("netns: function called runtime.Goexit")

// onThread runs enter and then fn on a fresh goroutine locked to its OS
// thread. enter moves the thread into another network namespace; afterwards
// the thread is moved back to the namespace it started in and unlocked. If
// moving back fails, the goroutine exits still locked so that the runtime
// terminates the thread instead of handing it to other goroutines.
func onThread(enter, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		res := result{err: errGoexit}
		restored := false
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			}
			// Otherwise the goroutine ends locked: the thread dies with it.
			done <- res
		}()

		origin, err := unix.Open(threadNSPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			restored = true // nothing changed yet
			res.err = fmt.Errorf("netns: open %s: %w", threadNSPath, err)
			return
		}
		defer unix.Close(origin)
		if err := enter(); err != nil {
			// A failed unshare or setns leaves the thread where it was.
			restored = true
			res.err = err
			return
		}
		defer func() {
			if err := unix.Setns(origin, unix.CLONE_NEWNET); err != nil {
				res.err = errors.Join(res.err, fmt.Errorf("netns: switching the thread back failed, discarding it: %w", err))
				return
			}
			restored = true
		}()
		defer func() {
			if p := recover(); p != nil {
				res.panicked, res.panicVal, res.err = true, p, nil
			}
		}()
		res.err = fn()
	}()
	res := <-done
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}
