package tun

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Hints appended to errors that have a known remedy.
const (
	hintNoTun    = "load the tun module (modprobe tun) or run with /dev/net/tun available"
	hintNeedsCap = "needs CAP_NET_ADMIN: run as root or in a user namespace that owns the network namespace"
	hintAccess   = "run as root, or make /dev/net/tun readable and writable (mode 0666, as most distributions ship it)"
)

// deviceError is a failure to open or configure a device. errors.Is matches
// its cause (a syscall.Errno such as syscall.EPERM) and, through the errno,
// the os.ErrNotExist and os.ErrPermission classes; a name clash also
// matches os.ErrExist.
type deviceError struct {
	msg   string // the message after "tun: "
	err   error  // the cause, usually a syscall.Errno
	exist bool   // the error means that the name is taken
}

func (e *deviceError) Error() string { return "tun: " + e.msg }
func (e *deviceError) Unwrap() error { return e.err }
func (e *deviceError) Is(target error) bool {
	return e.exist && target == os.ErrExist
}

// errnoString is like "operation not permitted (EPERM)".
func errnoString(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := errnoName(errno); name != "" {
			return fmt.Sprintf("%v (%s)", err, name)
		}
	}
	return err.Error()
}

// openError explains a failure to open the clone device at path.
func openError(path string, err error) error {
	var msg string
	switch {
	case errors.Is(err, syscall.ENOENT):
		msg = fmt.Sprintf("%s does not exist: %s", path, hintNoTun)
	case errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		msg = fmt.Sprintf("%s has no driver, %s: %s", path, errnoString(err), hintNoTun)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		msg = fmt.Sprintf("open %s: %s: %s", path, errnoString(err), hintAccess)
	default:
		msg = fmt.Sprintf("open %s: %s", path, errnoString(err))
	}
	return &deviceError{msg: msg, err: err}
}

// createError explains a failed TUNSETIFF for the requested name.
func createError(name string, err error) error {
	if name == "" {
		name = "tun%d"
	}
	e := &deviceError{err: err}
	switch {
	case errors.Is(err, syscall.EBUSY), errors.Is(err, syscall.EEXIST):
		// With IFF_TUN_EXCL the kernel answers EBUSY for any existing
		// interface of that name: another TUN device, whoever holds it,
		// or any other kind of interface.
		e.exist = true
		e.msg = fmt.Sprintf("create device %q: a device named %q already exists, %s: choose another Config.Name, or leave it empty for the kernel to pick one", name, name, errnoString(err))
	case errors.Is(err, syscall.EPERM):
		e.msg = fmt.Sprintf("create device %q: %s: %s", name, errnoString(err), hintNeedsCap)
	default:
		e.msg = fmt.Sprintf("create device %q: %s", name, errnoString(err))
	}
	return e
}

// configError explains a failed configuration step (what) on device name.
func configError(what, name string, err error) error {
	e := &deviceError{err: err, msg: fmt.Sprintf("%s on %q: %s", what, name, errnoString(err))}
	if errors.Is(err, syscall.EPERM) {
		e.msg += ": " + hintNeedsCap
	}
	return e
}
