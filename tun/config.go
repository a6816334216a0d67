package tun

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
)

const (
	// DefaultMTU is the MTU used when Config.MTU is 0.
	DefaultMTU = 1500
	// MinMTU and MaxMTU bound Config.MTU: 68 is the smallest MTU IPv4
	// allows (RFC 791) and 65535 the largest a TUN device accepts.
	MinMTU = 68
	MaxMTU = 65535
	// MaxQueues is the kernel's limit on queues of a multi-queue TUN device.
	MaxQueues = 256
	// MaxTxQueueLen bounds Config.TxQueueLen. The kernel would take more,
	// but every packet in the queue holds its buffer (up to 64 KiB with
	// the offloads), and a queue this long already holds more than a
	// second of a busy link's packets.
	MaxTxQueueLen = 1 << 16
	// maxNameLen is IFNAMSIZ less the terminating NUL.
	maxNameLen = 15
)

// Config describes a TUN device to create. The zero value is valid: a
// device named by the kernel (tun0, tun1, ...) in the calling thread's
// namespace, MTU 1500, down, with no addresses.
type Config struct {
	// Name is the interface name, at most 15 bytes. It may contain one
	// "%d", which the kernel replaces with the lowest free number. Empty
	// means "tun%d". Open fails if the name is taken. With DriverFreeBSD a
	// name other than "tun%d" or tunN (N at most 32767) is given to a
	// fresh tunN by renaming it, and "%d" is allowed only in "tun%d".
	Name string

	// MTU is the MTU of the device and of its link endpoint: 0 means
	// DefaultMTU, otherwise MinMTU..MaxMTU (MinMTU..16384 with
	// DriverFreeBSD, see the package doc).
	MTU int

	// Addrs are assigned to the device in the kernel, such as 198.18.0.1/24:
	// they are the kernel's side of the link, not the stack's. Optional.
	Addrs []netip.Prefix

	// Routes are added in the kernel through the device. Each must be
	// masked (198.18.4.0/24, not 198.18.4.1/24). They need Up. Optional.
	Routes []netip.Prefix

	// Up sets the link up (after the addresses, before the routes).
	Up bool

	// NetNS, if not nil, is a network namespace file (netns.NS.File,
	// /proc/PID/ns/net, /run/netns/NAME) to create and configure the device
	// in. The descriptors stay with this process. Open does not keep or
	// close the file. Nil means the namespace of the calling thread.
	NetNS *os.File

	// MultiQueue creates the device with IFF_MULTI_QUEUE and opens Queues
	// descriptors on it, each with its own reader.
	MultiQueue bool

	// Queues is the number of queues when MultiQueue is set: 0 means
	// runtime.GOMAXPROCS(0), otherwise 1..MaxQueues. Without MultiQueue it
	// must be 0 or 1.
	Queues int

	// TxQueueLen is the length of the device's transmit queue in the
	// kernel (ip link's txqueuelen), in packets: what the kernel's side
	// sends waits there until this process reads it, and a packet sent to
	// a full queue is dropped (counted as a TX drop of the device). 0
	// keeps the kernel's default, 500 for a TUN device; otherwise
	// 1..MaxTxQueueLen. A queue longer than the default absorbs bursts
	// the reader cannot take at once, such as when this process waits for
	// a CPU. DriverFreeBSD refuses it: FreeBSD sets the queue's length
	// for every interface at boot (net.link.ifqmaxlen).
	TxQueueLen int

	// NoOffload opens the device without the kernel's offloads
	// (IFF_VNET_HDR with TUNSETOFFLOAD; see the package doc). Default
	// false: offloads on, and off without an error if the kernel refuses
	// them (Device.Offload tells which). The water driver never has them.
	NoOffload bool

	// RequireOffload makes Open fail, rather than run without them, if the
	// kernel refuses the offloads. The water driver cannot set
	// IFF_VNET_HDR, so it refuses RequireOffload, as it refuses
	// MultiQueue.
	RequireOffload bool

	// Driver chooses how the device is made: DriverDefault (empty) is
	// DriverKernel on Linux, DriverFreeBSD on FreeBSD and DriverWater
	// elsewhere.
	Driver Driver
}

// checked is a validated Config with its defaults filled in.
type checked struct {
	Config
	routes []netip.Prefix // masked
	driver Driver         // resolved: never DriverDefault
}

// check validates c and fills in defaults. Its errors name the field.
func (c Config) check() (checked, error) { return c.checkOn(runtime.GOOS) }

// checkOn is check on system goos (a GOOS value), so that the rules of
// every system are tested wherever the tests run.
func (c Config) checkOn(goos string) (checked, error) {
	k := checked{Config: c}
	var err error
	if k.driver, err = c.Driver.resolveOn(goos); err != nil {
		return k, err
	}
	if err := checkName(c.Name); err != nil {
		return k, err
	}
	switch k.driver {
	case DriverWater:
		if err := c.checkOneQueue(k.driver, goos); err != nil {
			return k, err
		}
	case DriverFreeBSD:
		if err := c.checkFreeBSD(); err != nil {
			return k, err
		}
	}
	if c.RequireOffload && c.NoOffload {
		return k, fmt.Errorf("tun: Config.RequireOffload and Config.NoOffload contradict each other: set one")
	}
	switch {
	case c.MTU == 0:
		k.MTU = DefaultMTU
	case c.MTU < MinMTU || c.MTU > MaxMTU:
		return k, fmt.Errorf("tun: invalid Config.MTU %d: want 0 (for %d) or %d..%d", c.MTU, DefaultMTU, MinMTU, MaxMTU)
	}
	switch {
	case !c.MultiQueue && c.Queues > 1:
		return k, fmt.Errorf("tun: invalid Config.Queues %d: more than one queue needs Config.MultiQueue", c.Queues)
	case c.Queues < 0 || c.Queues > MaxQueues:
		return k, fmt.Errorf("tun: invalid Config.Queues %d: want 0 (for GOMAXPROCS) or 1..%d", c.Queues, MaxQueues)
	case !c.MultiQueue:
		k.Queues = 1
	case c.Queues == 0:
		k.Queues = min(runtime.GOMAXPROCS(0), MaxQueues)
	}
	if c.TxQueueLen < 0 || c.TxQueueLen > MaxTxQueueLen {
		return k, fmt.Errorf("tun: invalid Config.TxQueueLen %d: want 0 (the kernel's default) or 1..%d packets", c.TxQueueLen, MaxTxQueueLen)
	}
	for i, p := range c.Addrs {
		if err := checkPrefix(p); err != nil {
			return k, fmt.Errorf("tun: invalid Config.Addrs[%d] %v: %v", i, p, err)
		}
	}
	if len(c.Routes) > 0 && !c.Up {
		return k, fmt.Errorf("tun: Config.Routes needs Config.Up: the kernel adds no route through a device that is down")
	}
	for i, p := range c.Routes {
		if err := checkPrefix(p); err != nil {
			return k, fmt.Errorf("tun: invalid Config.Routes[%d] %v: %v", i, p, err)
		}
		if m := p.Masked(); m != p {
			return k, fmt.Errorf("tun: invalid Config.Routes[%d] %v: host bits set, want %v", i, p, m)
		}
		k.routes = append(k.routes, p)
	}
	return k, nil
}

// checkOneQueue refuses what the drivers with one queue and no offloads
// (water, freebsd) cannot do, naming the field.
func (c Config) checkOneQueue(d Driver, goos string) error {
	switch {
	case c.MultiQueue || c.Queues > 1:
		return fmt.Errorf("tun: Config.MultiQueue is not supported with Config.Driver %q, which opens one queue: use Config.Driver %q (Linux) for several", d, DriverKernel)
	case c.RequireOffload:
		return fmt.Errorf("tun: Config.RequireOffload is not supported with Config.Driver %q, which cannot set IFF_VNET_HDR: use Config.Driver %q (Linux) for the offloads", d, DriverKernel)
	case c.NetNS != nil && goos != "linux":
		return fmt.Errorf("tun: Config.NetNS is Linux-only")
	}
	return nil
}

func checkPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("not a valid prefix")
	case p.Addr().Is4In6():
		return fmt.Errorf("IPv4-mapped IPv6 address, use the IPv4 form")
	case p.Addr().Zone() != "":
		return fmt.Errorf("zones are not allowed")
	}
	return nil
}

// checkName applies the kernel's rules for interface names
// (dev_valid_name, dev_alloc_name) so that a bad name gets a clear error.
func checkName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("tun: invalid Config.Name %q: %s", name, why)
	}
	switch {
	case name == "":
		return nil
	case len(name) > maxNameLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxNameLen))
	case name == "." || name == "..":
		return bad(`"." and ".." are not allowed`)
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return bad("contains '/', ':' or white space")
	}
	if i := strings.IndexByte(name, '%'); i >= 0 {
		if !strings.HasPrefix(name[i:], "%d") || strings.IndexByte(name[i+2:], '%') >= 0 {
			return bad(`'%' is allowed only once, as "%d"`)
		}
	}
	return nil
}

// Validate reports the first invalid field of c, naming it, without
// creating anything.
func (c Config) Validate() error {
	_, err := c.check()
	return err
}
