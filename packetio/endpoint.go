package packetio

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// endpoint is the stack side of a Link: an IP link without a link-layer
// header, no link addresses and no offloads beyond Config.TrustChecksums.
type endpoint struct{ l *Link }

var _ gvstack.LinkEndpoint = (*endpoint)(nil)

// WritePackets implements stack.LinkWriter: it queues the stack's packets
// for ReadPackets, waiting for room as the package doc describes.
func (e *endpoint) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	return e.l.send(pkts)
}

// MTU implements stack.NetworkLinkEndpoint.
func (e *endpoint) MTU() uint32 { return e.l.mtu.Load() }

// SetMTU implements stack.NetworkLinkEndpoint.
func (e *endpoint) SetMTU(mtu uint32) { e.l.mtu.Store(mtu) }

// MaxHeaderLength implements stack.NetworkLinkEndpoint: there is no link
// header.
func (*endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.NetworkLinkEndpoint: there is none.
func (*endpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.NetworkLinkEndpoint; it does nothing.
func (*endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.NetworkLinkEndpoint.
func (e *endpoint) Capabilities() gvstack.LinkEndpointCapabilities { return e.l.caps }

// Attach implements stack.NetworkLinkEndpoint. Inbound packets are
// delivered to the last dispatcher attached; nil detaches, after which
// WritePackets drops them. A delivery already under way when the stack
// detaches finishes (gVisor tolerates that, as with its channel link):
// holding a lock across deliveries could deadlock against the stack's
// own lock, which the stack holds while it detaches.
func (e *endpoint) Attach(d gvstack.NetworkDispatcher) {
	if d == nil {
		e.l.disp.Store(nil)
		return
	}
	e.l.disp.Store(&dispatcher{d})
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (e *endpoint) IsAttached() bool { return e.l.disp.Load() != nil }

// Wait implements stack.NetworkLinkEndpoint: the link has no goroutines.
func (*endpoint) Wait() {}

// ARPHardwareType implements stack.NetworkLinkEndpoint.
func (*endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.NetworkLinkEndpoint: there is no link header.
func (*endpoint) AddHeader(*gvstack.PacketBuffer) {}

// ParseHeader implements stack.NetworkLinkEndpoint: there is no link
// header.
func (*endpoint) ParseHeader(*gvstack.PacketBuffer) bool { return true }

// Close implements stack.NetworkLinkEndpoint. The stack calls it when it
// removes the link; it closes the Link, so that the packet side sees
// ErrClosed.
func (e *endpoint) Close() { e.l.Close() }

// SetOnCloseAction implements stack.NetworkLinkEndpoint. The stack sets an
// action that removes the link from it; Link.Close runs it.
func (e *endpoint) SetOnCloseAction(action func()) {
	l := e.l
	l.actMu.Lock()
	defer l.actMu.Unlock()
	if !l.isClosed() {
		l.onClose = action
	}
}
