package tun

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// OpenTAP attaches to an existing persistent TAP device (one made with
// "ip tuntap add NAME mode tap", as rootlesskit makes them for
// slirp4netns), in the network namespace open as netNS (nil: the calling
// thread's). The device keeps its configuration; Open's Config fields do
// not apply. Frames carry Ethernet headers, so the stack on it needs ARP
// (stack.New adds it for such links). The offloads are as Open's (the
// kernel's checksum and segmentation offloads through virtio headers, off
// if it refuses them). Close detaches, and the device stays, as it was
// made persistent.
//
// The error matches os.ErrNotExist if there is no device of that name, and
// says so if the device is not a TAP device.
//
// mtu is the MTU of the Device's side (the largest frame payload it sends
// and expects), as slirp4netns takes it from --mtu whatever the device's
// own MTU is at the time; 0 means the device's current MTU.
func OpenTAP(name string, mtu int, netNS *os.File) (*Device, error) {
	if err := checkName(name); err != nil || name == "" || strings.Contains(name, "%") {
		return nil, fmt.Errorf("tun: OpenTAP: invalid name %q", name)
	}
	var (
		fds     []int
		offload bool
	)
	attach := func() error {
		link, err := netlink.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return fmt.Errorf("tun: no device %q: %w", name, os.ErrNotExist)
			}
			return fmt.Errorf("tun: %s: %w", name, err)
		}
		tt, ok := link.(*netlink.Tuntap)
		if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
			return fmt.Errorf("tun: %s is a %s device, not a TAP device", name, link.Type())
		}
		if mtu == 0 {
			mtu = link.Attrs().MTU
		}
		// With virtio headers and the kernel's offloads, as Open's TUN
		// devices; without, if the kernel refuses them.
		fds, _, offload, err = openDevice(queueSpec{name: name, n: 1, flags: unix.IFF_TAP}, false)
		return err
	}
	if err := inNamespace(netNS, attach); err != nil {
		return nil, err
	}
	return fromTAPFD(fds[0], name, mtu, offload)
}

// fromTAPFD makes a Device over a TAP descriptor, with or without virtio
// headers (offload).
func fromTAPFD(fd int, name string, mtu int, offload bool) (*Device, error) {
	if mtu < MinMTU || mtu > MaxMTU {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: TAP device %s: MTU %d outside %d..%d", name, mtu, MinMTU, MaxMTU)
	}
	d := &Device{name: name, mtu: mtu, fds: []int{fd}, tap: true, offload: offload, gone: make(chan struct{})}
	if err := d.newEndpoint(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return d, nil
}

// TAP reports whether the device is a TAP device (Ethernet frames).
func (d *Device) TAP() bool { return d.tap }

// randomMAC returns a random locally administered unicast MAC address.
func randomMAC() tcpip.LinkAddress {
	var b [6]byte
	rand.Read(b[:])
	b[0] = b[0]&^1 | 2
	return tcpip.LinkAddress(b[:])
}
