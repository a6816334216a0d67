package tun

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// openWater makes the device with songgao/water, on a thread in the
// target namespace, and configures it over netlink as Open does.
//
// It works around what it can of water's Linux defects (see the package
// doc): water opens /dev/net/tun without O_CLOEXEC, so openWater holds
// syscall.ForkLock for reading from the open until it has set FD_CLOEXEC,
// as package syscall does around its own non-atomic close-on-exec, and no
// child started meanwhile can inherit the descriptor; water does not pass
// IFF_TUN_EXCL, so openWater first refuses a name that an interface
// already has. The check and the creation are two steps, so a device made
// under that name between them would be attached to, not created.
func openWater(c checked) (*Device, error) {
	var (
		ifce *water.Interface
		h    *netlink.Handle
	)
	create := func() (err error) {
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("tun: netlink socket: %w", err)
		}
		if c.Name != "" && !strings.Contains(c.Name, "%") {
			if _, err := h.LinkByName(c.Name); err == nil {
				h.Close()
				return createError(c.Name, syscall.EEXIST)
			}
		}
		syscall.ForkLock.RLock()
		ifce, err = water.New(water.Config{DeviceType: water.TUN, PlatformSpecificParams: water.PlatformSpecificParams{Name: c.Name}})
		if err == nil {
			if err = closeOnExec(ifce); err != nil {
				ifce.Close()
				err = &deviceError{msg: fmt.Sprintf("set FD_CLOEXEC on %q: %s", ifce.Name(), errnoString(err)), err: err}
			}
		} else {
			err = waterOpenError(c.Name, err)
		}
		syscall.ForkLock.RUnlock()
		if err != nil {
			h.Close()
		}
		return err
	}
	if err := inNamespace(c.NetNS, create); err != nil {
		return nil, err
	}
	defer h.Close()

	d := &Device{name: ifce.Name(), mtu: c.MTU, gone: make(chan struct{})}
	if err := d.configure(h, c); err != nil {
		ifce.Close() // deletes the device with its addresses and routes
		return nil, err
	}
	ep := newWaterEndpoint(ifce.ReadWriteCloser, uint32(c.MTU))
	ep.onGone = d.markGone
	d.inner = ep
	d.link = &linkEndpoint{LinkEndpoint: ep, d: d}
	return d, nil
}

// closeOnExec sets FD_CLOEXEC on the interface's descriptor without taking
// it out of Go's poller (os.File.Fd would make it blocking).
func closeOnExec(ifce *water.Interface) error {
	sc, ok := ifce.ReadWriteCloser.(syscall.Conn)
	if !ok {
		return fmt.Errorf("water's device is a %T, not a file", ifce.ReadWriteCloser)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		_, ferr = unix.FcntlInt(fd, unix.F_SETFD, unix.FD_CLOEXEC)
	}); err != nil {
		return err
	}
	return ferr
}

// waterOpenError explains a failure of water.New: its TUNSETIFF errors
// come as an *os.SyscallError "ioctl", its open errors bare.
func waterOpenError(name string, err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) && se.Syscall == "ioctl" {
		return createError(name, se.Err)
	}
	return openError("/dev/net/tun", err)
}
