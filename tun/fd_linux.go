package tun

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FromFD makes a Device from a TUN descriptor opened elsewhere, such as
// one received from a process in another network namespace over a unix
// socket (the sandbox does this). The Device takes ownership of fd: Close
// closes it. name and mtu describe the device; the kernel side is not
// touched, so it must already be configured. mtu 0 means DefaultMTU. If
// the descriptor was opened with IFF_VNET_HDR, the Device uses the offload
// path with whatever offloads its opener set (see Device.Offload). A TAP
// descriptor gives a TAP Device, as OpenTAP does.
func FromFD(fd int, name string, mtu int) (*Device, error) {
	if fd < 0 {
		return nil, fmt.Errorf("tun: invalid descriptor %d", fd)
	}
	switch {
	case mtu == 0:
		mtu = DefaultMTU
	case mtu < MinMTU || mtu > MaxMTU:
		unix.Close(fd)
		return nil, fmt.Errorf("tun: invalid MTU %d: want 0 (for %d) or %d..%d", mtu, DefaultMTU, MinMTU, MaxMTU)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: descriptor %d: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	flags := iffFlags(fd)
	if flags&unix.IFF_TAP != 0 {
		return fromTAPFD(fd, name, mtu, flags&unix.IFF_VNET_HDR != 0)
	}
	d := &Device{name: name, mtu: mtu, fds: []int{fd}, offload: flags&unix.IFF_VNET_HDR != 0, gone: make(chan struct{})}
	if err := d.newEndpoint(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return d, nil
}

// DupFile returns a duplicate of the device's first queue descriptor, for
// handing the device to another process (with os/exec ExtraFiles or
// SCM_RIGHTS). The caller closes the file; the Device keeps its own. The
// kernel deletes the device only once every descriptor, duplicates
// included, is closed, so Close no longer does so while one is open. The
// duplicate shares the descriptor's status flags; the Device's readers do
// not depend on O_NONBLOCK staying set.
func (d *Device) DupFile() (*os.File, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, fmt.Errorf("tun: %s: %w", d.name, os.ErrClosed)
	}
	fd, err := unix.FcntlInt(uintptr(d.fds[0]), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tun: dup %s: %w", d.name, err)
	}
	return os.NewFile(uintptr(fd), d.name), nil
}

// iffFlags returns the descriptor's TUNGETIFF flags, 0 if it has none.
func iffFlags(fd int) uint16 {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return 0
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return 0
	}
	return ifr.Uint16()
}
