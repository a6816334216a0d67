package tun

import (
	"errors"
	"fmt"
	"net"
	"path"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openFreeBSD makes a tun(4) device for DriverFreeBSD: it opens the
// device file with O_CLOEXEC, learns the interface's name (TUNGIFNAME),
// puts the device in broadcast mode (TUNSIFMODE) and in address family
// header mode (TUNSIFHEAD, so that IPv6 crosses it too), and configures
// the interface with ifconfig and route (freebsdCommands). On failure it
// destroys the interface it made and leaves nothing open.
func openFreeBSD(c checked) (*Device, error) {
	file, rename, err := freebsdDevice(c.Name)
	if err != nil {
		return nil, err
	}
	// Opening /dev/tunN of an existing interface attaches to it, where
	// Open promises a new one; and renaming onto a taken name fails only
	// after the device is made. Both are checked first (a device made
	// under that name in between would still win).
	var names []string
	if file != freebsdCloneDevice {
		names = append(names, path.Base(file))
	}
	if rename != "" {
		names = append(names, rename)
	}
	for _, name := range names {
		if _, err := net.InterfaceByName(name); err == nil {
			return nil, createError(name, syscall.EEXIST)
		}
	}
	fd, err := unix.Open(file, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, freebsdOpenError(file, err)
	}
	name, err := tunName(fd)
	if err != nil {
		unix.Close(fd)
		err = &deviceError{msg: fmt.Sprintf("TUNGIFNAME on %s: %s: FreeBSD 13 or later is needed", file, errnoString(err)), err: err}
		if file != freebsdCloneDevice {
			err = errors.Join(err, destroyInterface(path.Base(file)))
		}
		return nil, err
	}
	// fail undoes what was made and returns err, with the error of the
	// undoing if that failed too (the interface is then left behind).
	fail := func(err error) (*Device, error) {
		if cur, nerr := tunName(fd); nerr == nil {
			name = cur
		}
		unix.Close(fd)
		return nil, errors.Join(err, destroyInterface(name))
	}
	if err := unix.IoctlSetPointerInt(fd, uint(tunSIFMODE), unix.IFF_BROADCAST|unix.IFF_MULTICAST); err != nil {
		return fail(configError("set broadcast mode (TUNSIFMODE)", name, err))
	}
	if err := unix.IoctlSetPointerInt(fd, uint(tunSIFHEAD), 1); err != nil {
		return fail(configError("set address family headers (TUNSIFHEAD)", name, err))
	}
	t, err := newBSDTun(fd, name) // closes fd on failure
	if err != nil {
		return nil, errors.Join(err, destroyInterface(name))
	}
	t.ifname, t.destroy = tunName, destroyInterface
	if err := runCommands(name, freebsdCommands(name, c)); err != nil {
		return nil, errors.Join(err, t.Close())
	}
	t.name = t.currentName()
	d := &Device{name: t.name, mtu: c.MTU, gone: make(chan struct{})}
	ep := newWaterEndpoint(t, uint32(c.MTU))
	ep.onGone = d.markGone
	d.inner = ep
	d.link = &linkEndpoint{LinkEndpoint: ep, d: d}
	return d, nil
}

// tunName asks tun(4) for the name of the interface of descriptor fd.
func tunName(fd int) (string, error) {
	var ifr [bsdIfreq]byte // struct ifreq: the name comes first
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(tunGIFNAME), uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return "", e
	}
	n := 0
	for n < unix.IFNAMSIZ && ifr[n] != 0 {
		n++
	}
	return string(ifr[:n]), nil
}

// destroyInterface deletes interface name (freebsdDestroyCommand).
func destroyInterface(name string) error {
	return runCommands(name, [][]string{freebsdDestroyCommand(name)})
}

// freebsdOpenError explains a failure to open a tun device file.
func freebsdOpenError(file string, err error) error {
	e := &deviceError{err: err}
	switch {
	case errors.Is(err, syscall.ENOENT) && file == freebsdCloneDevice:
		e.msg = fmt.Sprintf("%s does not exist: load tun(4) (kldload if_tuntap), check that sysctl net.link.tun.devfs_cloning is 1, and run as root (cloning a device needs the privilege to create interfaces)", file)
	case errors.Is(err, syscall.ENOENT):
		e.msg = fmt.Sprintf("%s does not exist: load tun(4) (kldload if_tuntap) and run as root (creating a device needs the privilege to create interfaces)", file)
	case errors.Is(err, syscall.EBUSY):
		e.exist = true
		e.msg = fmt.Sprintf("open %s: %s: another process has that device open: choose another Config.Name, or leave it empty for the next free tunN", file, errnoString(err))
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		e.msg = fmt.Sprintf("open %s: %s: run as root", file, errnoString(err))
	default:
		e.msg = fmt.Sprintf("open %s: %s", file, errnoString(err))
	}
	return e
}
