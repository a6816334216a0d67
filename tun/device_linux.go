package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// devPath is the TUN clone device. Tests point it elsewhere.
var devPath = "/dev/net/tun"

// Device is an open TUN device and its gVisor link endpoint. Its methods
// are safe for concurrent use.
//
// With DriverWater, fds is empty and inner is a waterEndpoint, which owns
// the device.
type Device struct {
	name    string
	mtu     int
	fds     []int                // one per queue, non-blocking, close-on-exec
	offload bool                 // fds have IFF_VNET_HDR and the kernel's offloads
	tap     bool                 // a TAP device: Ethernet frames (fdbased, no offloads)
	inner   gvstack.LinkEndpoint // vnetEndpoint if offload, else fdbased, over fds; waterEndpoint for DriverWater (no fds)
	stops   []int                // the readers' stop eventfds, which fdbased never closes
	link    *linkEndpoint

	closeOnce sync.Once
	closeErr  error

	goneOnce sync.Once
	gone     chan struct{} // see Gone

	// LOCK ORDERING: attachMu > mu.

	// attachMu serializes attaching and detaching the endpoint, and
	// guards the fields below.
	attachMu sync.Mutex
	attached bool     // the endpoint has been attached (it can be, once)
	detached bool     // and detached again: its readers have stopped for good
	handoff  *handoff // set when attached

	// mu guards the fields below. Writers hold it for reading while they
	// use the descriptors, so that Close cannot close them underneath.
	mu      sync.RWMutex
	closed  bool
	onClose func() // the stack's action for when the endpoint goes away
}

// Open creates a TUN device as cfg describes, configures it and returns it.
// On failure nothing is left behind: no device and no descriptor.
//
// With Config.Up, Open returns only once the device is usable in both
// families: no IPv6 address of it, the link-local one the kernel adds
// included, is still tentative (duplicate address detection). It waits
// for the kernel's address events, at most ReadyTimeout, and fails with
// an error matching ErrNotReady past that.
//
// Errors name what failed and, for the common causes, what to do; errors.Is
// matches their errno (unix.EPERM, unix.EBUSY, ...) and the classes
// os.ErrNotExist (no /dev/net/tun), os.ErrPermission (missing
// CAP_NET_ADMIN or access to /dev/net/tun) and os.ErrExist (the name is
// taken).
//
// With Config.Driver set to DriverWater the device is made by songgao/water
// instead (see the package doc, "The water driver"): one queue, no
// offloads, configured over netlink all the same.
func Open(cfg Config) (*Device, error) {
	c, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if c.driver == DriverWater {
		return openWater(c)
	}

	// Create the device, and a netlink handle, on a thread in the target
	// namespace: a TUN device belongs to the namespace of the thread that
	// opened /dev/net/tun, and a netlink socket to the namespace of the
	// thread that made it.
	var (
		fds     []int
		name    string
		offload bool
		h       *netlink.Handle
		watch   *netns.AddrWatch // set when Up: Open waits for the addresses
	)
	create := func() (err error) {
		flags := uint16(unix.IFF_TUN)
		if c.MultiQueue {
			flags |= unix.IFF_MULTI_QUEUE
		}
		if fds, name, offload, err = openDevice(queueSpec{name: c.Name, n: c.Queues, flags: flags, create: true}, c.NoOffload); err != nil {
			return err
		}
		if c.RequireOffload && !offload {
			closeFDs(fds)
			return &deviceError{msg: fmt.Sprintf("create device %q: the kernel refused the offloads (IFF_VNET_HDR, TUNSETOFFLOAD) and Config.RequireOffload is set", name), err: errOffloadRefused}
		}
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			closeFDs(fds)
			return fmt.Errorf("tun: netlink socket: %w", err)
		}
		if c.Up {
			if watch, err = netns.NewAddrWatch(); err != nil {
				h.Close()
				closeFDs(fds)
				return &deviceError{msg: "subscribe to address events: " + errnoString(err), err: err}
			}
		}
		return nil
	}
	if err := inNamespace(c.NetNS, create); err != nil {
		return nil, err
	}
	defer h.Close()
	if watch != nil {
		defer watch.Close()
	}

	d := &Device{name: name, mtu: c.MTU, fds: fds, offload: offload, gone: make(chan struct{})}
	if err := d.configure(h, c); err != nil {
		closeFDs(fds) // deletes the device with its addresses and routes
		return nil, err
	}
	if watch != nil {
		link, err := h.LinkByName(name)
		if err == nil {
			err = waitReady(watch, h, link, ReadyTimeout)
		} else {
			err = configError("find link", name, err)
		}
		if err != nil {
			closeFDs(fds)
			return nil, err
		}
	}
	if err := d.newEndpoint(); err != nil {
		closeFDs(fds)
		return nil, err
	}
	return d, nil
}

// queueSpec says what openDevice opens: n queues of the device name,
// with the type flags (IFF_TUN or IFF_TAP, IFF_MULTI_QUEUE), creating it
// (never attaching to an existing device of that name) or attaching to an
// existing one.
type queueSpec struct {
	name   string
	n      int
	flags  uint16
	create bool
}

// openDevice opens s's queues, with the offloads unless noOffload. If the
// kernel refuses IFF_VNET_HDR or TUNSETOFFLOAD on any queue, it closes
// what it opened (which deletes a device it created) and opens them again
// without. It reports whether the offloads are on.
func openDevice(s queueSpec, noOffload bool) (fds []int, name string, offload bool, err error) {
	if !noOffload {
		fds, name, err = openQueues(s, true)
		if err == nil {
			return fds, name, true, nil
		}
		if !offloadRefused(err) {
			return nil, "", false, err
		}
	}
	fds, name, err = openQueues(s, false)
	return fds, name, false, err
}

// errOffloadRefused is the cause of Open's error when Config.RequireOffload
// is set and the kernel refuses the offloads.
var errOffloadRefused = errors.New("offloads refused")

// offloadError is a refusal of IFF_VNET_HDR or TUNSETOFFLOAD, after which
// openDevice falls back to a device without offloads.
type offloadError struct{ err error }

func (e *offloadError) Error() string { return "tun: offloads refused: " + e.err.Error() }
func (e *offloadError) Unwrap() error { return e.err }

func offloadRefused(err error) bool {
	_, ok := err.(*offloadError)
	return ok
}

// openQueues opens s.n descriptors on /dev/net/tun and attaches them as
// queues of the device s.name, with IFF_VNET_HDR and the offloads if vnet.
// It returns the descriptors and the device's name; a refusal of the
// offloads is an *offloadError.
func openQueues(s queueSpec, vnet bool) ([]int, string, error) {
	flags := s.flags | unix.IFF_NO_PI
	if vnet {
		flags |= unix.IFF_VNET_HDR
	}
	var fds []int
	got := s.name
	for i := range s.n {
		// Close-on-exec so that a child process cannot keep the device
		// alive; non-blocking as fdbased needs.
		fd, err := unix.Open(devPath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			closeFDs(fds)
			return nil, "", openError(devPath, err)
		}
		f := flags
		if i == 0 && s.create {
			// Create, never attach to an existing device of that name.
			f |= unix.IFF_TUN_EXCL
		}
		got, err = setIFF(fd, got, f)
		if err == nil && vnet {
			if err = setOffload(fd); err != nil {
				unix.Close(fd)
				closeFDs(fds)
				return nil, "", &offloadError{err}
			}
		}
		if err != nil {
			unix.Close(fd)
			closeFDs(fds)
			if vnet && i == 0 && err == unix.EINVAL {
				// An old kernel without IFF_VNET_HDR.
				return nil, "", &offloadError{err}
			}
			if i == 0 && s.create {
				return nil, "", createError(s.name, err)
			}
			return nil, "", &deviceError{msg: fmt.Sprintf("attach queue %d to %q: %s", i, got, errnoString(err)), err: err}
		}
		fds = append(fds, fd)
	}
	return fds, got, nil
}

// inNamespace runs fn on a locked thread in the network namespace open as
// netNS, or in the calling thread's if netNS is nil: a TUN device belongs
// to the namespace of the thread that opened /dev/net/tun, and a netlink
// socket to the namespace of the thread that made it.
func inNamespace(netNS *os.File, fn func() error) error {
	if netNS != nil {
		return netns.DoIn(netNS, fn)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return fn()
}

// setIFF issues TUNSETIFF on fd and returns the name the kernel chose.
func setIFF(fd int, name string, flags uint16) (string, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return "", err
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return "", err
	}
	return ifr.Name(), nil
}

// configure applies c's MTU, addresses, link state and routes to the
// device through h.
func (d *Device) configure(h *netlink.Handle, c checked) error {
	link, err := h.LinkByName(d.name)
	if err != nil {
		return configError("find link", d.name, err)
	}
	if err := h.LinkSetMTU(link, c.MTU); err != nil {
		return configError(fmt.Sprintf("set MTU %d", c.MTU), d.name, err)
	}
	if c.TxQueueLen > 0 {
		// The kernel resizes the device's queue of packets for the
		// reader to match (tun_queue_resize).
		if err := h.LinkSetTxQLen(link, c.TxQueueLen); err != nil {
			return configError(fmt.Sprintf("set txqueuelen %d", c.TxQueueLen), d.name, err)
		}
	}
	for _, p := range c.Addrs {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// A TUN link has nobody else on it: skip duplicate address
			// detection, so the address is usable (bindable) at once
			// instead of tentative for a second or two.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil {
			return configError("add address "+p.String(), d.name, err)
		}
	}
	if c.Up {
		if err := h.LinkSetUp(link); err != nil {
			return configError("set link up", d.name, err)
		}
	}
	for _, p := range c.routes {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(p)}
		if p.Addr().Is4() {
			r.Scope = netlink.SCOPE_LINK // as "ip route add P dev D" does
		}
		if err := h.RouteAdd(r); err != nil {
			return configError("add route "+p.String(), d.name, err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

// newEndpoint builds the link endpoint over d's descriptors: the offload
// endpoint (vnet_linux.go) if they carry virtio headers, else fdbased.
func (d *Device) newEndpoint() error {
	if d.offload {
		ep, err := newVnetEndpoint(d.fds, uint32(d.mtu))
		if err != nil {
			return &deviceError{msg: fmt.Sprintf("link endpoint for %q: %v", d.name, err), err: err}
		}
		ep.onGone = d.markGone
		d.inner = ep
		if d.tap {
			// gVisor's ethernet endpoint adds and strips the Ethernet
			// header; the offload endpoint carries the frames.
			ep.eth, ep.mac = true, randomMAC()
			d.link = &linkEndpoint{LinkEndpoint: ethernet.New(ep), d: d}
			return nil
		}
		d.link = &linkEndpoint{LinkEndpoint: ep, d: d}
		return nil
	}
	opts := &fdbased.Options{
		// Called when a reader stops: with nil when stopped, with the
		// read's error when the device went away.
		ClosedFunc: func(err tcpip.Error) {
			if err != nil {
				d.markGone()
			}
		},
		FDs:            d.fds,
		MTU:            uint32(d.mtu),
		EthernetHeader: false,
		// recvmmsg (fdbased.RecvMMsg) works on sockets only; on a TUN
		// descriptor fdbased reads with readv whatever the mode.
		PacketDispatchMode: fdbased.Readv,
		// fdbased's processors hand packets to goroutines that it starts
		// in New, stops only after an Attach, and never waits for. With
		// one, it delivers inline on the reader, which here delivers to
		// the handoff (see handoff.go), whose workers are ours to wait for.
		ProcessorsPerChannel: 1,
	}
	if d.tap {
		opts.EthernetHeader = true
		opts.Address = randomMAC()
	}
	ep, err := fdbased.New(opts)
	if err != nil {
		return &deviceError{msg: fmt.Sprintf("link endpoint for %q: %v", d.name, err), err: err}
	}
	d.inner = ep
	d.stops = fdbasedStopFDs(ep)
	d.link = &linkEndpoint{LinkEndpoint: ep, d: d}
	return nil
}

// Gone is closed when the device was deleted in the kernel (ip link del)
// while attached and open: its readers have stopped. Close does not close
// it. (The device's descriptors keep its network namespace alive, so the
// namespace cannot end under it.)
func (d *Device) Gone() <-chan struct{} { return d.gone }

func (d *Device) markGone() { d.goneOnce.Do(func() { close(d.gone) }) }

// Name returns the interface name, such as "tun0".
func (d *Device) Name() string { return d.name }

// MTU returns the device's MTU.
func (d *Device) MTU() int { return d.mtu }

// Offload reports whether the device runs with the kernel's offloads
// (IFF_VNET_HDR, TUNSETOFFLOAD): TCP segments of up to 64 KiB cross it in
// one read or write. It is false with Config.NoOffload, when the kernel
// refused them, for a FromFD descriptor opened without IFF_VNET_HDR, and
// with the water driver.
func (d *Device) Offload() bool { return d.offload }

// Stats counts the packets the device's readers dropped before they
// reached gVisor (whose own counters, in stack.Stack.Stats, count the
// malformed packets it drops after).
type Stats struct {
	// ChecksumErrors counts inbound packets with a wrong IPv4 header, TCP
	// or UDP checksum. On the offload path the reader verifies the
	// checksums the kernel has not vouched for, and gVisor does not sum
	// inbound packets again; without offloads gVisor does it all and
	// counts them itself (this stays 0).
	ChecksumErrors uint64
	// BadVnetHeaders counts inbound packets whose virtio header asked for
	// a checksum at offsets outside the packet (offload path only).
	BadVnetHeaders uint64
}

// Stats returns the device's counters.
func (d *Device) Stats() Stats {
	if v, ok := d.inner.(*vnetEndpoint); ok {
		return Stats{
			ChecksumErrors: v.checksumErrors.Load(),
			BadVnetHeaders: v.badVnetHeaders.Load(),
		}
	}
	return Stats{}
}

// LinkEndpoint returns the device's link endpoint, for stack.CreateNIC.
// There is one per device, and it can be attached to one NIC, once: after
// its NIC is removed it stays stopped. Writes after Close fail with
// tcpip.ErrClosedForSend.
func (d *Device) LinkEndpoint() gvstack.LinkEndpoint { return d.link }

// Close removes the device's NIC from its stack (if it is attached to one),
// stops the endpoint's goroutines and waits for them, and closes the
// descriptors, which makes the kernel delete the device along with its
// addresses and routes. Close is idempotent: later calls wait for the first
// and return its result.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		onClose := d.onClose
		d.onClose = nil
		d.mu.Unlock()
		if onClose != nil {
			onClose() // Stack.RemoveNIC: detaches the endpoint
		}

		d.mu.Lock()
		d.closed = true // no new writes; the last one has finished
		d.mu.Unlock()

		d.link.Attach(nil) // in case the stack did not: stop the readers
		d.inner.Wait()
		d.attachMu.Lock()
		h := d.handoff
		d.attachMu.Unlock()
		if h != nil {
			h.wait()
		}

		if v, ok := d.inner.(*vnetEndpoint); ok {
			v.release()
		}
		var errs []error
		if w, ok := d.inner.(*waterEndpoint); ok {
			if err := w.close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, fmt.Errorf("tun: close %s: %w", d.name, err))
			}
		}
		for _, fd := range d.stops {
			errs = append(errs, closeFD("close stop eventfd", fd))
		}
		for _, fd := range d.fds {
			errs = append(errs, closeFD("close "+d.name, fd))
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

func closeFD(what string, fd int) error {
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("tun: %s: %w", what, err)
	}
	return nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
