package tun

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// waterEndpoint is the link endpoint of the water driver: a gVisor link
// endpoint over a songgao/water interface (any io.ReadWriteCloser that
// reads and writes one IP packet per call). water's API offers no batching,
// so each packet costs one Read or Write; WritePackets writes a list in one
// call under one lock. There are no offloads: gVisor computes and checks
// every checksum, and TCP segments are at most the MTU.
//
// One reader goroutine runs between Attach(d) and Attach(nil). It stops
// through a read deadline in the past where the interface has one (an
// *os.File that Go's poller serves: water's Linux device, and the FreeBSD
// driver's bsdTun, which this endpoint also serves) and otherwise by
// closing the interface (macOS utun, Windows TAP), after which the device
// is gone for good.
type waterEndpoint struct {
	rw  io.ReadWriteCloser
	mtu atomic.Uint32

	closeOnce sync.Once
	closeErr  error

	// onGone is called when a read fails while not stopping: the device
	// went away underneath.
	onGone func()

	mu         sync.Mutex // guards the fields below; a leaf
	dispatcher gvstack.NetworkDispatcher
	stopping   bool
	wg         sync.WaitGroup // the reader

	wmu  sync.Mutex // serializes writes (water's Windows and macOS writers are not concurrent-safe) and guards wbuf; a leaf, never held with mu
	wbuf []byte
}

var _ gvstack.LinkEndpoint = (*waterEndpoint)(nil)

// deadliner is what an *os.File offers to stop a blocked Read.
type deadliner interface{ SetReadDeadline(time.Time) error }

func newWaterEndpoint(rw io.ReadWriteCloser, mtu uint32) *waterEndpoint {
	e := &waterEndpoint{rw: rw}
	e.mtu.Store(mtu)
	return e
}

// MTU implements stack.LinkEndpoint.
func (e *waterEndpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint. The device's MTU is set when it is
// opened; this changes only what the stack is told.
func (e *waterEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint: a TUN device has no link
// header.
func (*waterEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint.
func (*waterEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (*waterEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint: none, so gVisor computes and
// verifies checksums itself.
func (*waterEndpoint) Capabilities() gvstack.LinkEndpointCapabilities { return 0 }

// ARPHardwareType implements stack.LinkEndpoint.
func (*waterEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (*waterEndpoint) AddHeader(*gvstack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (*waterEndpoint) ParseHeader(*gvstack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint; the device is closed by its owner.
func (*waterEndpoint) Close() {}

// SetOnCloseAction implements stack.LinkEndpoint; the Device's wrapper
// keeps the action.
func (*waterEndpoint) SetOnCloseAction(func()) {}

// Attach implements stack.LinkEndpoint. A dispatcher starts the reader
// (once); nil stops it and waits for it.
func (e *waterEndpoint) Attach(d gvstack.NetworkDispatcher) {
	e.mu.Lock()
	if d == nil {
		started := e.dispatcher != nil && !e.stopping
		e.stopping = true
		e.mu.Unlock()
		if started {
			e.stopReader()
			e.wg.Wait()
		}
		return
	}
	if e.dispatcher != nil || e.stopping {
		e.mu.Unlock()
		return
	}
	e.dispatcher = d
	e.wg.Add(1)
	e.mu.Unlock()
	go e.read(d)
}

// stopReader wakes the reader out of its Read.
func (e *waterEndpoint) stopReader() {
	if f, ok := e.rw.(deadliner); ok && f.SetReadDeadline(time.Unix(1, 0)) == nil {
		return
	}
	e.close()
}

// close closes the interface, once.
func (e *waterEndpoint) close() error {
	e.closeOnce.Do(func() { e.closeErr = e.rw.Close() })
	return e.closeErr
}

// IsAttached implements stack.LinkEndpoint.
func (e *waterEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil && !e.stopping
}

// Wait implements stack.LinkEndpoint: it waits for the reader.
func (e *waterEndpoint) Wait() { e.wg.Wait() }

// read delivers packets until stopped or the device fails.
func (e *waterEndpoint) read(d gvstack.NetworkDispatcher) {
	defer e.wg.Done()
	// Room for a packet of the largest MTU a TUN device takes, whatever the
	// MTU, so that a packet is never cut short.
	buf := make([]byte, MaxMTU)
	for {
		n, err := e.rw.Read(buf)
		if err != nil {
			e.mu.Lock()
			stopping := e.stopping
			e.mu.Unlock()
			if stopping {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if e.onGone != nil {
				e.onGone()
			}
			return
		}
		if n <= 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch header.IPVersion(buf[:n]) {
		case header.IPv4Version:
			proto = header.IPv4ProtocolNumber
		case header.IPv6Version:
			proto = header.IPv6ProtocolNumber
		default:
			continue // not IP
		}
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(buf[:n])})
		d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
	}
}

// WritePackets implements stack.LinkWriter: one Write per packet.
func (e *waterEndpoint) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	n := 0
	for _, pkt := range pkts.AsSlice() {
		b := e.wbuf[:0]
		for _, s := range pkt.AsSlices() {
			b = append(b, s...)
		}
		e.wbuf = b
		if _, err := e.rw.Write(b); err != nil {
			if n == 0 {
				if errors.Is(err, os.ErrClosed) {
					return 0, &tcpip.ErrClosedForSend{}
				}
				return 0, &tcpip.ErrAborted{}
			}
			break
		}
		n++
	}
	return n, nil
}
