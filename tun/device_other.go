//go:build !linux

package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/songgao/water"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Device is an open TUN device and its gVisor link endpoint. Its methods
// are safe for concurrent use. Off Linux it is a FreeBSD tun(4) device
// (DriverFreeBSD) or a water device.
type Device struct {
	name  string
	mtu   int
	fds   []int                // always empty: one water queue
	inner gvstack.LinkEndpoint // the waterEndpoint, which owns the device (for DriverFreeBSD too)
	link  *linkEndpoint

	closeOnce sync.Once
	closeErr  error

	goneOnce sync.Once
	gone     chan struct{} // see Gone

	// LOCK ORDERING: attachMu > mu.

	// attachMu serializes attaching and detaching the endpoint, and
	// guards the fields below.
	attachMu sync.Mutex
	attached bool
	detached bool
	handoff  *handoff

	// mu guards the fields below. Writers hold it for reading while they
	// write, so that Close cannot close the device underneath.
	mu      sync.RWMutex
	closed  bool
	onClose func()
}

// Open creates a TUN device with the FreeBSD driver (on FreeBSD) or the
// water driver (elsewhere) as cfg describes, configures the system's side
// of it with the system's commands (see ifconfig.go and freebsd.go) and
// returns it. On failure nothing is left open.
func Open(cfg Config) (*Device, error) {
	c, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if c.driver == DriverFreeBSD {
		return openFreeBSD(c)
	}
	wc, err := waterConfig(c)
	if err != nil {
		return nil, err
	}
	ifce, err := water.New(wc)
	if err != nil {
		return nil, &deviceError{msg: fmt.Sprintf("create device with songgao/water: %v%s", err, waterHint), err: err}
	}
	d := &Device{name: ifce.Name(), mtu: c.MTU, gone: make(chan struct{})}
	if err := runCommands(d.name, configCommands(d.name, c)); err != nil {
		ifce.Close()
		return nil, err
	}
	ep := newWaterEndpoint(ifce.ReadWriteCloser, uint32(c.MTU))
	ep.onGone = d.markGone
	d.inner = ep
	d.link = &linkEndpoint{LinkEndpoint: ep, d: d}
	return d, nil
}

// Gone is closed when the device failed under an attached endpoint (its
// reader got an error it did not ask for). Close does not close it.
func (d *Device) Gone() <-chan struct{} { return d.gone }

func (d *Device) markGone() { d.goneOnce.Do(func() { close(d.gone) }) }

// Name returns the interface name, such as "utun4" or "tun0".
func (d *Device) Name() string { return d.name }

// MTU returns the device's MTU.
func (d *Device) MTU() int { return d.mtu }

// Offload reports false: the water and FreeBSD drivers have no offloads.
func (d *Device) Offload() bool { return false }

// Stats counts the packets the device's reader dropped before gVisor; the
// water and FreeBSD drivers drop none (gVisor checks every checksum and counts its
// own drops).
type Stats struct {
	ChecksumErrors uint64
	BadVnetHeaders uint64
}

// Stats returns the device's counters.
func (d *Device) Stats() Stats { return Stats{} }

// LinkEndpoint returns the device's link endpoint, for stack.CreateNIC.
// It can be attached to one NIC, once. Writes after Close fail with
// tcpip.ErrClosedForSend.
func (d *Device) LinkEndpoint() gvstack.LinkEndpoint { return d.link }

// Close removes the device's NIC from its stack (if attached), stops the
// reader and waits for it, and closes the device; with DriverFreeBSD it
// then destroys the interface, which tun(4) keeps after the close. It is
// idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		onClose := d.onClose
		d.onClose = nil
		d.mu.Unlock()
		if onClose != nil {
			onClose()
		}
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.link.Attach(nil)
		d.inner.Wait()
		d.attachMu.Lock()
		h := d.handoff
		d.attachMu.Unlock()
		if h != nil {
			h.wait()
		}
		if err := d.inner.(*waterEndpoint).close(); err != nil && !errors.Is(err, os.ErrClosed) {
			d.closeErr = fmt.Errorf("tun: close %s: %w", d.name, err)
		}
	})
	return d.closeErr
}
