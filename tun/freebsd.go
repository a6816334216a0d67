package tun

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The FreeBSD driver's facts about tun(4) and its commands, without build
// tags, so that they are tested wherever the tests run (device_freebsd.go
// uses them). Sources: FreeBSD's tun(4) and ifconfig(8) manuals,
// sys/net/if_tun.h, sys/net/if_tuntap.c and sys/sys/ioccom.h.

const (
	// afHeaderLen is the length of the header tun(4) puts before every
	// packet in TUNSIFHEAD mode, both ways: the packet's address family,
	// a 32-bit number in network byte order.
	afHeaderLen = 4
	// FreeBSD's AF_INET and AF_INET6 (sys/socket.h). AF_INET6 differs
	// between systems: 10 on Linux, 30 on macOS.
	freebsdAFInet  = 2
	freebsdAFInet6 = 28
	// freebsdMaxMTU bounds Config.MTU with DriverFreeBSD: tun(4) refuses
	// (EIO) a write of a packet longer than TUNMRU, 16384 bytes in older
	// releases (FreeBSD 14's sources have 65535), so a larger MTU would
	// lose the stack's largest packets there.
	freebsdMaxMTU = 16384
	// freebsdMaxUnit is IF_MAXUNIT, the largest unit number of an
	// interface (tunN).
	freebsdMaxUnit = 0x7fff
	// freebsdCloneDevice is tun(4)'s cloning device: each open makes a
	// new tunN (sysctl net.link.tun.devfs_cloning, on by default).
	freebsdCloneDevice = "/dev/tun"
)

// ioctl request numbers, as sys/sys/ioccom.h encodes them: the direction,
// the argument's size, a group letter and a number.
const (
	bsdIOCOut  = 0x40000000 // the kernel writes the argument (_IOR)
	bsdIOCIn   = 0x80000000 // the kernel reads the argument (_IOW)
	bsdIOCMask = 0x1fff     // IOCPARM_MASK: the size's bits
	bsdIfreq   = 32         // sizeof(struct ifreq)
	bsdInt     = 4          // sizeof(int)
)

func bsdIOC(dir uint32, group byte, num uint8, size uint32) uint32 {
	return dir | (size&bsdIOCMask)<<16 | uint32(group)<<8 | uint32(num)
}

var (
	// TUNSIFHEAD, _IOW('t', 96, int): with 1, every packet read or written
	// carries its address family first (afHeaderLen bytes), so that IPv6
	// can cross the device (without it tun(4) carries IPv4 only).
	tunSIFHEAD = bsdIOC(bsdIOCIn, 't', 96, bsdInt)
	// TUNSIFMODE, _IOW('t', 94, int): IFF_POINTOPOINT (the default) or
	// IFF_BROADCAST, each with IFF_MULTICAST or not; only while down.
	tunSIFMODE = bsdIOC(bsdIOCIn, 't', 94, bsdInt)
	// TUNGIFNAME, _IOR('t', 93, struct ifreq): the interface's name
	// (FreeBSD 13 and later).
	tunGIFNAME = bsdIOC(bsdIOCOut, 't', 93, bsdIfreq)
)

// afHeader returns the header that tun(4) expects before pkt in
// TUNSIFHEAD mode: the address family of the packet's IP version.
func afHeader(pkt []byte) ([afHeaderLen]byte, error) {
	var h [afHeaderLen]byte
	switch v := header.IPVersion(pkt); v {
	case header.IPv4Version:
		binary.BigEndian.PutUint32(h[:], freebsdAFInet)
	case header.IPv6Version:
		binary.BigEndian.PutUint32(h[:], freebsdAFInet6)
	case -1:
		return h, fmt.Errorf("tun: cannot write an empty packet to a FreeBSD tun device")
	default:
		return h, fmt.Errorf("tun: cannot write a packet of IP version %d to a FreeBSD tun device: want 4 or 6", v)
	}
	return h, nil
}

// parseAFHeader returns the network protocol of the address family in h,
// a header that tun(4) put before a packet in TUNSIFHEAD mode.
func parseAFHeader(h []byte) (tcpip.NetworkProtocolNumber, error) {
	if len(h) < afHeaderLen {
		return 0, fmt.Errorf("tun: packet header of %d bytes from a FreeBSD tun device: want %d", len(h), afHeaderLen)
	}
	switch af := binary.BigEndian.Uint32(h); af {
	case freebsdAFInet:
		return header.IPv4ProtocolNumber, nil
	case freebsdAFInet6:
		return header.IPv6ProtocolNumber, nil
	default:
		return 0, fmt.Errorf("tun: packet of address family %d from a FreeBSD tun device: want AF_INET (%d) or AF_INET6 (%d)", af, freebsdAFInet, freebsdAFInet6)
	}
}

// freebsdDevice returns the device file that makes the interface
// Config.Name asks for, and the name to give the interface afterwards
// (empty: keep the kernel's): "" and "tun%d" clone /dev/tun, "tunN" opens
// /dev/tunN, and any other name clones /dev/tun and renames the new tunN
// to it.
func freebsdDevice(name string) (path, rename string, err error) {
	if name == "" || name == "tun%d" {
		return freebsdCloneDevice, "", nil
	}
	if strings.Contains(name, "%") {
		return "", "", fmt.Errorf(`tun: invalid Config.Name %q with Config.Driver %q: FreeBSD numbers tun devices itself, so "%%d" is allowed only in "tun%%d"; use "tun%%d" or empty for the next free tunN, tunN for that unit, or a name without "%%d" to rename the new device to`, name, DriverFreeBSD)
	}
	if unit, ok := strings.CutPrefix(name, "tun"); ok && unit != "" && strings.Trim(unit, "0123456789") == "" {
		n, err := strconv.Atoi(unit)
		if err != nil || n > freebsdMaxUnit || strconv.Itoa(n) != unit {
			return "", "", fmt.Errorf("tun: invalid Config.Name %q with Config.Driver %q: a tun unit is a number 0..%d without leading zeros", name, DriverFreeBSD, freebsdMaxUnit)
		}
		return "/dev/" + name, "", nil
	}
	return freebsdCloneDevice, name, nil
}

// checkFreeBSD refuses what DriverFreeBSD cannot do, naming the field.
func (c Config) checkFreeBSD() error {
	if err := c.checkOneQueue(DriverFreeBSD, "freebsd"); err != nil {
		return err
	}
	if c.TxQueueLen != 0 {
		return fmt.Errorf("tun: Config.TxQueueLen is not supported with Config.Driver %q: FreeBSD sets the length of every interface's queue at boot (the loader tunable net.link.ifqmaxlen); leave it 0", DriverFreeBSD)
	}
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > freebsdMaxMTU) {
		return fmt.Errorf("tun: invalid Config.MTU %d with Config.Driver %q: want 0 (for %d) or %d..%d (older tun(4) refuses longer packets)", c.MTU, DriverFreeBSD, DefaultMTU, MinMTU, freebsdMaxMTU)
	}
	_, _, err := freebsdDevice(c.Name)
	return err
}

// freebsdCommands configures the new tun interface dev as c says, with
// ifconfig(8) and route(8). The device is in broadcast mode (TUNSIFMODE),
// so an address with a prefix routes its subnet to the interface, as on
// Linux; in the default point-to-point mode FreeBSD would instead demand
// a destination address and route only that one host. tun(4) sets the
// interface up when it gets an address, so without Config.Up the
// interface is set down again after the addresses.
func freebsdCommands(dev string, c checked) [][]string {
	name := dev
	var cmds [][]string
	if _, rename, _ := freebsdDevice(c.Name); rename != "" {
		cmds = append(cmds, []string{"ifconfig", dev, "name", rename})
		name = rename
	}
	cmds = append(cmds, []string{"ifconfig", name, "mtu", strconv.Itoa(c.MTU)})
	v6 := false
	for _, p := range c.Addrs {
		if p.Addr().Is4() {
			cmds = append(cmds, []string{"ifconfig", name, "inet", p.String(), "alias"})
			continue
		}
		if !v6 {
			// IPv6 may start disabled on a new interface
			// (ipv6_activate_all_interfaces); and a TUN link has nobody
			// else on it, so no duplicate address detection: the
			// addresses are usable at once, as on Linux (IFA_F_NODAD).
			cmds = append(cmds, []string{"ifconfig", name, "inet6", "-ifdisabled", "no_dad"})
			v6 = true
		}
		cmds = append(cmds, []string{"ifconfig", name, "inet6", p.String(), "alias"})
	}
	switch {
	case c.Up:
		cmds = append(cmds, []string{"ifconfig", name, "up"})
	case len(c.Addrs) > 0:
		cmds = append(cmds, []string{"ifconfig", name, "down"})
	}
	for _, r := range c.routes {
		cmds = append(cmds, []string{"route", "-q", "-n", "add", "-" + family(r.Addr()), r.String(), "-interface", name})
	}
	return cmds
}

// freebsdDestroyCommand deletes interface name. Closing a tun device only
// sets its interface down and removes its addresses and routes: the
// interface itself stays until destroyed.
func freebsdDestroyCommand(name string) []string {
	return []string{"ifconfig", name, "destroy"}
}
