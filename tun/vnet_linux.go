package tun

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The offload path: a TUN descriptor opened with IFF_VNET_HDR carries a
// struct virtio_net_hdr (linux/virtio_net.h) before every packet, in both
// directions. It tells the kernel that a packet we write is one TCP
// segment of up to 64 KiB to be cut at gso_size (GSO), and that its
// checksum is still to be completed; and, once TUNSETOFFLOAD has allowed
// it, the kernel hands us its own TCP segments unsplit, up to 64 KiB per
// read, with partial checksums (the receive half, which plays the part of
// GRO: the segments were never split). Either way a 64 KiB stream of
// data crosses the TUN in one system call instead of 44 at MTU 1500.
//
// link/fdbased cannot do this on a TUN descriptor: it enables its host GSO
// path only for sockets (a TUN descriptor is not one), its receive-side GRO
// only in its recvmmsg dispatcher (sockets only), and it puts csum_start
// after an Ethernet header that a TUN device does not have. So this file
// is a small link endpoint of its own for that path.

const (
	// vnetHdrLen is sizeof(struct virtio_net_hdr), the kernel's default
	// header size for IFF_VNET_HDR (TUNSETVNETHDRSZ is not used).
	vnetHdrLen = 10

	virtioNetHdrFNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	virtioNetHdrFDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID
	virtioNetHdrGSOTCPv4   = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	virtioNetHdrGSOTCPv6   = 4 // VIRTIO_NET_HDR_GSO_TCPV6

	// TUNSETOFFLOAD flags (linux/if_tun.h; x/sys/unix lacks them).
	tunFCsum = 0x01 // TUN_F_CSUM: we accept partial checksums
	tunFTSO4 = 0x02 // TUN_F_TSO4: and unsplit TCP/IPv4 segments
	tunFTSO6 = 0x04 // TUN_F_TSO6: and unsplit TCP/IPv6 segments

	// offloadFlags are what Open asks for. TSO needs CSUM. ECN and UDP
	// offloads are left to the kernel (it splits those packets itself).
	offloadFlags = tunFCsum | tunFTSO4 | tunFTSO6

	// gsoMaxSize is what the endpoint offers gVisor's TCP as the largest
	// GSO packet. gVisor fills up to gsoMaxSize-61 bytes of payload; with
	// an IPv4 header and 60 bytes of TCP header that stays within
	// IPv4's 65535-byte total length.
	gsoMaxSize = 65535 - 19

	// readBufSize holds the largest frame the kernel hands over, whatever
	// the MTU: an IPv6 packet with the largest payload (65535 bytes after
	// its 40-byte header) behind a TAP device's Ethernet header. A read
	// longer than the buffer would come back cut short. (The tail view
	// stays within gVisor's 64 KiB buffer class.)
	readBufSize = 65535 + 40 + 14

	// headBufSize is how much of a packet the reader puts in its first
	// view: room for the IP and TCP headers with options. Even, so that a
	// checksum can carry on over the next view.
	headBufSize = 128

	// copyBreak: a packet whose remainder after the head is up to this
	// size has it copied into a right-sized view, so that a 64 KiB buffer
	// is not held by a small packet waiting in a socket's queue; a larger
	// one keeps the read buffer and the reader takes a new one.
	copyBreak = 4096
)

// setOffload asks the kernel for offloadFlags on a descriptor opened with
// IFF_VNET_HDR. Tests replace it to simulate a refusal.
var setOffload = func(fd int) error {
	return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloadFlags)
}

// vnetEndpoint is the link endpoint over TUN descriptors opened with
// IFF_VNET_HDR: one reader per descriptor (queue), writes on the
// descriptor chosen by the packet's hash. It follows fdbased's lifetime:
// Attach(d) starts the readers, Attach(nil) stops them and waits. The
// descriptors belong to the Device, which calls release once the readers
// are done.
//
// The readers wait in Go's network poller, not in a blocking system call
// as fdbased's do: each reads through an *os.File over a duplicate of its
// queue's descriptor. A goroutine parked in the poller holds no thread
// and no P; one blocked in ppoll makes the runtime hand its P to another
// thread and take it back on every packet, which on the sandbox's
// connection-rate benchmark (a few small packets per connection) cost
// context switches on both cores.
type vnetEndpoint struct {
	fds   []int
	files []*os.File // a duplicate of each descriptor, for its reader

	wg sync.WaitGroup // the readers

	// onGone, if set, is called when a reader stops because the device
	// went away (not when stopped).
	onGone func()

	// eth: the descriptors are a TAP device's, whose frames start with an
	// Ethernet header (14 bytes, after the virtio header); mac is this
	// side's address. The Device puts gVisor's ethernet endpoint on top,
	// which adds and strips the header; this endpoint passes it through.
	eth bool
	mac tcpip.LinkAddress

	// Packets the readers dropped (see Stats).
	checksumErrors atomic.Uint64
	badVnetHeaders atomic.Uint64

	mu         sync.RWMutex // guards the fields below; a leaf (Attach waits for the readers with it let go)
	mtu        uint32
	dispatcher gvstack.NetworkDispatcher
	started    bool // the readers were started (they cannot be restarted)
	stopped    bool
	released   bool
}

var (
	_ gvstack.LinkEndpoint = (*vnetEndpoint)(nil)
	_ gvstack.GSOEndpoint  = (*vnetEndpoint)(nil)
)

// newVnetEndpoint makes the endpoint over fds, which must be non-blocking.
func newVnetEndpoint(fds []int, mtu uint32) (*vnetEndpoint, error) {
	e := &vnetEndpoint{fds: fds, mtu: mtu}
	for _, fd := range fds {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			e.release()
			return nil, fmt.Errorf("duplicating the descriptor for its reader: %w", err)
		}
		// A non-blocking descriptor gives a File that waits in the
		// poller; one that cannot wait there could not be stopped.
		f := os.NewFile(uintptr(dup), "tun")
		e.files = append(e.files, f)
		if err := f.SetReadDeadline(time.Time{}); err != nil {
			e.release()
			return nil, fmt.Errorf("the descriptor cannot wait in Go's poller (is it non-blocking?): %w", err)
		}
	}
	return e, nil
}

// release closes the readers' descriptors. The Device calls it once the
// readers have stopped (or never started).
func (e *vnetEndpoint) release() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.released {
		return
	}
	e.released = true
	for _, f := range e.files {
		f.Close()
	}
}

// Attach implements stack.LinkEndpoint.
func (e *vnetEndpoint) Attach(dispatcher gvstack.NetworkDispatcher) {
	e.mu.Lock()
	if dispatcher == nil {
		e.dispatcher = nil
		stop := e.started && !e.stopped
		e.stopped = true
		e.mu.Unlock()
		if stop {
			// A deadline in the past wakes a reader parked in the
			// poller, and fails its next read.
			for _, f := range e.files {
				f.SetReadDeadline(time.Unix(1, 0))
			}
			e.wg.Wait()
		}
		return
	}
	e.dispatcher = dispatcher
	start := !e.started && !e.stopped
	e.started = true
	e.mu.Unlock()
	if start {
		for i := range e.fds {
			e.wg.Add(1)
			go e.read(i, dispatcher)
		}
	}
}

// IsAttached implements stack.LinkEndpoint.
func (e *vnetEndpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint: it waits for the readers.
func (e *vnetEndpoint) Wait() { e.wg.Wait() }

// MTU implements stack.LinkEndpoint.
func (e *vnetEndpoint) MTU() uint32 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.eth {
		// The frame's: the ethernet endpoint on top takes the header off.
		return e.mtu + header.EthernetMinimumSize
	}
	return e.mtu
}

// SetMTU implements stack.LinkEndpoint.
func (e *vnetEndpoint) SetMTU(mtu uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.eth {
		mtu -= header.EthernetMinimumSize
	}
	e.mtu = mtu
}

// MaxHeaderLength implements stack.LinkEndpoint: the virtio header is not
// part of the packet buffer, so no room is reserved for it.
func (*vnetEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: a TUN device has none.
func (e *vnetEndpoint) LinkAddress() tcpip.LinkAddress { return e.mac }

// SetLinkAddress implements stack.LinkEndpoint; it does nothing.
func (*vnetEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint. Inbound checksums are the
// reader's business (see rxcsum.go), so gVisor does not sum them again;
// outbound ones gVisor fills, except on GSO packets, whose checksum the
// kernel completes.
func (*vnetEndpoint) Capabilities() gvstack.LinkEndpointCapabilities {
	return gvstack.CapabilityRXChecksumOffload
}

// ARPHardwareType implements stack.LinkEndpoint.
func (*vnetEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint: there is no link header.
func (*vnetEndpoint) AddHeader(*gvstack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint: there is no link header.
func (*vnetEndpoint) ParseHeader(*gvstack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint; the Device closes the descriptors.
func (*vnetEndpoint) Close() {}

// SetOnCloseAction implements stack.LinkEndpoint; the Device keeps it.
func (*vnetEndpoint) SetOnCloseAction(func()) {}

// GSOMaxSize implements stack.GSOEndpoint.
func (*vnetEndpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// SupportedGSO implements stack.GSOEndpoint: the kernel segments.
func (*vnetEndpoint) SupportedGSO() gvstack.SupportedGSO { return gvstack.HostGSOSupported }

// WritePackets implements stack.LinkWriter: one writev per packet, the
// virtio header first. A TUN write does not block (the kernel queues the
// packet or drops it), so the descriptor's non-blocking mode never
// refuses one.
func (e *vnetEndpoint) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if err := e.writePacket(pkt); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// maxWriteIovecs is how many iovecs writePacket keeps on its stack; a
// packet in more pieces than that (rare) costs an allocation.
const maxWriteIovecs = 16

func (e *vnetEndpoint) writePacket(pkt *gvstack.PacketBuffer) tcpip.Error {
	fd := e.fds[0]
	if len(e.fds) > 1 {
		fd = e.fds[pkt.Hash%uint32(len(e.fds))]
	}
	var hdr [vnetHdrLen]byte
	if gso := pkt.GSOOptions; gso.Type != gvstack.GSONone {
		binary.LittleEndian.PutUint16(hdr[2:], uint16(pkt.HeaderSize())) // hdr_len
		if gso.NeedsCsum {
			// gVisor put the pseudo-header sum in the checksum field;
			// the kernel sums from csum_start on and stores the result
			// csum_offset further. L3 starts after the link header (none
			// on a TUN device, Ethernet's on a TAP device).
			hdr[0] = virtioNetHdrFNeedsCsum
			binary.LittleEndian.PutUint16(hdr[6:], gso.L3HdrLen+uint16(len(pkt.LinkHeader().Slice())))
			binary.LittleEndian.PutUint16(hdr[8:], gso.CsumOffset)
		}
		if pkt.Data().Size() > int(gso.MSS) {
			switch gso.Type {
			case gvstack.GSOTCPv4:
				hdr[1] = virtioNetHdrGSOTCPv4
			case gvstack.GSOTCPv6:
				hdr[1] = virtioNetHdrGSOTCPv6
			default:
				return &tcpip.ErrNotSupported{}
			}
			binary.LittleEndian.PutUint16(hdr[4:], gso.MSS) // gso_size
		}
	}
	views, off := pkt.AsViewList()
	// On the stack: no allocation per packet (append would move it to
	// the heap, so the slots are filled by index).
	var iovs [maxWriteIovecs]unix.Iovec
	iovs[0] = rawfile.IovecFromBytes(hdr[:])
	n := 1
	for v := views.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		b, off = b[off:], 0
		if n == len(iovs) {
			return e.writeLong(fd, hdr, pkt)
		}
		iovs[n] = rawfile.IovecFromBytes(b)
		n++
	}
	if errno := rawfile.NonBlockingWriteIovec(fd, iovs[:n]); errno != 0 {
		return tcpip.TranslateErrno(errno)
	}
	return nil
}

// writeLong writes a packet in more than maxWriteIovecs-1 pieces.
func (e *vnetEndpoint) writeLong(fd int, hdr [vnetHdrLen]byte, pkt *gvstack.PacketBuffer) tcpip.Error {
	slices := pkt.AsSlices()
	iovs := make([]unix.Iovec, 0, 1+len(slices))
	iovs = append(iovs, rawfile.IovecFromBytes(hdr[:]))
	for _, b := range slices {
		if len(b) > 0 {
			iovs = append(iovs, rawfile.IovecFromBytes(b))
		}
	}
	if len(iovs) > rawfile.MaxIovs {
		return &tcpip.ErrMessageTooLong{}
	}
	if errno := rawfile.NonBlockingWriteIovec(fd, iovs); errno != 0 {
		return tcpip.TranslateErrno(errno)
	}
	return nil
}

// read is the reader of queue i: it delivers each packet to dispatcher
// until stopped.
//
// It reads each packet into two views, as fdbased does: the first
// headBufSize bytes (the headers) into a small one and the rest into a
// large one. gVisor copies a view that is shared when it pulls headers out
// of it, and packets are shared on their way through the stack; with one
// 64 KiB view, every such pull would copy the whole segment.
func (e *vnetEndpoint) read(i int, dispatcher gvstack.NetworkDispatcher) {
	defer e.wg.Done()
	rc, err := e.files[i].SyscallConn()
	if err != nil {
		return
	}
	var hdr [vnetHdrLen]byte
	head := buffer.NewViewSize(headBufSize)
	tail := buffer.NewViewSize(readBufSize - headBufSize)
	defer func() {
		head.Release()
		tail.Release()
	}()
	var (
		iovs  [3]unix.Iovec
		n     int
		errno unix.Errno
	)
	// preadv2 with RWF_NOWAIT never blocks, even if someone has turned
	// O_NONBLOCK off on the descriptor's shared status flags (through a
	// DupFile duplicate, say): a blocking read could not be woken to stop.
	// Kernels without it for TUN get readv.
	nowait := true
	readv := func(fd uintptr) bool {
		iov := uintptr(unsafe.Pointer(&iovs[0]))
		if nowait {
			// Raw: it never blocks, and an ordinary system call
			// wakes the runtime's monitor thread whenever every P
			// was idle, which then polls every 20 us for a while:
			// on a busy link, most reads (see internal/rawsys).
			r, _, e := unix.RawSyscall6(unix.SYS_PREADV2, fd, iov, uintptr(len(iovs)), ^uintptr(0), ^uintptr(0), unix.RWF_NOWAIT)
			if e != unix.EOPNOTSUPP && e != unix.ENOSYS && e != unix.EINVAL {
				n, errno = int(r), e
				return errno != unix.EAGAIN // false: wait in the poller, then call again
			}
			nowait = false
		}
		r, _, e := unix.Syscall(unix.SYS_READV, fd, iov, uintptr(len(iovs)))
		n, errno = int(r), e
		return errno != unix.EAGAIN
	}
	for {
		iovs[0] = rawfile.IovecFromBytes(hdr[:])
		iovs[1] = rawfile.IovecFromBytes(head.AsSlice())
		iovs[2] = rawfile.IovecFromBytes(tail.AsSlice())
		if err := rc.Read(readv); err != nil {
			return // stopped (the deadline) or released
		}
		if errno != 0 {
			if errno == unix.EINTR {
				continue
			}
			if e.onGone != nil {
				e.onGone() // the device is gone
			}
			return
		}
		n -= vnetHdrLen
		if n <= 0 {
			continue
		}
		hn := min(n, headBufSize)
		tn := n - hn
		h, t := head.AsSlice()[:hn], tail.AsSlice()[:tn]
		// ip is the frame from its IP header on: all of it on a TUN
		// device, after the Ethernet header on a TAP device.
		ip := h
		var proto tcpip.NetworkProtocolNumber
		if e.eth {
			if hn < header.EthernetMinimumSize {
				continue
			}
			proto = header.Ethernet(h).Type()
			ip = h[header.EthernetMinimumSize:]
			if proto != header.IPv4ProtocolNumber && proto != header.IPv6ProtocolNumber {
				// ARP and the like: no checksums of ours to check.
				e.deliver(dispatcher, &head, &tail, hn, tn, t, proto)
				continue
			}
		}
		switch {
		case hdr[0]&virtioNetHdrFNeedsCsum != 0:
			// Built by the kernel, checksum left partial: nothing to
			// verify, but the offsets must fit the packet.
			start := int(binary.LittleEndian.Uint16(hdr[6:]))
			if start+int(binary.LittleEndian.Uint16(hdr[8:]))+2 > n {
				e.badVnetHeaders.Add(1)
				continue
			}
		case hdr[0]&virtioNetHdrFDataValid != 0:
			// Verified by the kernel.
		default:
			if !verifyChecksums(ip, t) {
				e.checksumErrors.Add(1)
				continue
			}
		}
		if !e.eth {
			switch header.IPVersion(h) {
			case header.IPv4Version:
				proto = header.IPv4ProtocolNumber
			case header.IPv6Version:
				proto = header.IPv6ProtocolNumber
			default:
				continue // not IP
			}
		}
		e.deliver(dispatcher, &head, &tail, hn, tn, t, proto)
	}
}

// deliver hands the frame read into head (hn bytes) and tail (tn bytes,
// t) to dispatcher, and gives the reader fresh views for what the packet
// keeps.
func (e *vnetEndpoint) deliver(dispatcher gvstack.NetworkDispatcher, head, tail **buffer.View, hn, tn int, t []byte, proto tcpip.NetworkProtocolNumber) {
	(*head).CapLength(hn)
	payload := buffer.MakeWithView(*head)
	*head = buffer.NewViewSize(headBufSize)
	switch {
	case tn == 0:
	case tn <= copyBreak:
		payload.Append(buffer.NewViewWithData(t))
	default:
		(*tail).CapLength(tn)
		payload.Append(*tail)
		*tail = buffer.NewViewSize(readBufSize - headBufSize)
	}
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: payload})
	dispatcher.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}
