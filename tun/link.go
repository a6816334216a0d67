package tun

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// linkEndpoint is the inner endpoint (fdbased, the offload endpoint or
// the water endpoint) of a Device, with its lifetime tied
// to the Device: it never touches the descriptors after Close, and never
// starts its readers twice.
type linkEndpoint struct {
	gvstack.LinkEndpoint // fdbased; what is not overridden passes through
	d                    *Device
}

var (
	_ gvstack.LinkEndpoint = (*linkEndpoint)(nil)
	_ gvstack.GSOEndpoint  = (*linkEndpoint)(nil)
)

// GSOMaxSize implements stack.GSOEndpoint, passing the inner endpoint's
// through: gVisor finds GSO by a type assertion on the NIC's endpoint.
func (e *linkEndpoint) GSOMaxSize() uint32 {
	if g, ok := e.LinkEndpoint.(gvstack.GSOEndpoint); ok {
		return g.GSOMaxSize()
	}
	return 0
}

// SupportedGSO implements stack.GSOEndpoint.
func (e *linkEndpoint) SupportedGSO() gvstack.SupportedGSO {
	if g, ok := e.LinkEndpoint.(gvstack.GSOEndpoint); ok {
		return g.SupportedGSO()
	}
	return gvstack.GSONotSupported
}

// Attach implements stack.LinkEndpoint. The first non-nil dispatcher starts
// the readers and the handoff workers that deliver their packets; nil (the
// NIC going away, with the stack's lock held) stops the readers and waits
// for them, and tells the workers to stop without waiting for them (they
// may be blocked on that lock; Device.Close waits for them). fdbased
// cannot restart its readers (its stop signal stays raised, and a second
// stop releases its buffers twice), so once detached, or once the device
// is closed, the endpoint ignores new dispatchers.
func (e *linkEndpoint) Attach(dispatcher gvstack.NetworkDispatcher) {
	d := e.d
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	if dispatcher == nil {
		if d.attached && !d.detached {
			d.detached = true
			e.LinkEndpoint.Attach(nil)
			d.handoff.stopWorkers()
		}
		return
	}
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	if d.attached || closed {
		return
	}
	d.attached = true
	d.handoff = startHandoff(dispatcher, max(1, len(d.fds)))
	e.LinkEndpoint.Attach(d.handoff)
}

// IsAttached implements stack.LinkEndpoint.
func (e *linkEndpoint) IsAttached() bool {
	d := e.d
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	return d.attached && !d.detached
}

// Wait implements stack.LinkEndpoint: it waits for the readers, which is
// what the stack needs before it lets go of the NIC. The handoff workers
// are waited for by Device.Close.
func (e *linkEndpoint) Wait() { e.LinkEndpoint.Wait() }

// WritePackets implements stack.LinkWriter. After the device is closed it
// writes nothing and returns tcpip.ErrClosedForSend.
func (e *linkEndpoint) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	d := e.d
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, &tcpip.ErrClosedForSend{}
	}
	return e.LinkEndpoint.WritePackets(pkts)
}

// SetOnCloseAction implements stack.LinkEndpoint. The stack sets an action
// that removes the NIC; Device.Close runs it.
func (e *linkEndpoint) SetOnCloseAction(action func()) {
	d := e.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.onClose = action
	}
}

// Close implements stack.LinkEndpoint; the stack calls it after removing the
// NIC. The readers have stopped by then (Attach(nil)); the device stays open
// until Device.Close.
func (e *linkEndpoint) Close() {}
