package tun

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/ustacknet/ustack/internal/netns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestOffloadRefused makes TUNSETOFFLOAD fail: Open must fall back to a
// device without offloads that still carries traffic both ways.
func TestOffloadRefused(t *testing.T) {
	saved := setOffload
	setOffload = func(int) error { return unix.EINVAL }
	t.Cleanup(func() { setOffload = saved })

	ns := netns.NewT(t)
	d := openIn(t, ns, Config{MultiQueue: true, Queues: 2, Addrs: []netip.Prefix{kernel4}, Up: true})
	if d.Offload() {
		t.Fatal("Offload() = true after the kernel refused TUNSETOFFLOAD")
	}
	if names := linkNames(t, ns); len(names) != 2 { // lo and the device
		t.Errorf("links after the fallback: %v, want lo and one device", names)
	}
	s := newStack(t, d.LinkEndpoint(), stack4)
	l, err := ns.Listen("tcp", netip.AddrPortFrom(kernel4.Addr(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	stop := echo(t, l)
	defer stop()
	c := dialTCP(t, s, netip.MustParseAddrPort(l.Addr().String()))
	defer c.Close()
	exchange(t, c, 1<<20)
}

// TestCompleteChecksum checks the NEEDS_CSUM completion against a
// checksum computed from scratch, and that bad offsets are refused.
func TestCompleteChecksum(t *testing.T) {
	src, dst := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	payload := []byte("the quick brown fox jumps over the lazy dog!")
	pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+len(payload))
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: addr(src), DstAddr: addr(dst),
	})
	tcp := header.TCP(pkt[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 1, DstPort: 2, SeqNum: 3, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 1000})
	copy(pkt[header.IPv4MinimumSize+header.TCPMinimumSize:], payload)
	tcpLen := uint16(len(tcp))
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, addr(src), addr(dst), tcpLen)

	want := ^checksum.Checksum(tcp, pseudo)
	// What the kernel hands over: the pseudo-header sum in the field.
	tcp.SetChecksum(pseudo)
	var hdr [vnetHdrLen]byte
	hdr[0] = virtioNetHdrFNeedsCsum
	binary.LittleEndian.PutUint16(hdr[6:], header.IPv4MinimumSize)
	binary.LittleEndian.PutUint16(hdr[8:], header.TCPChecksumOffset)
	// Every split the reader can make: all in the head, the checksum field
	// in the head, and (with a long IP header) the field in the tail.
	for _, split := range []int{len(pkt), 40, 24, 20, 0} {
		tcp.SetChecksum(pseudo)
		if !completeChecksum(pkt[:split], pkt[split:], &hdr) {
			t.Fatalf("split %d: completeChecksum refused a valid header", split)
		}
		if got := tcp.Checksum(); got != want {
			t.Errorf("split %d: checksum %#04x, want %#04x", split, got, want)
		}
		if !tcp.IsChecksumValid(addr(src), addr(dst), checksum.Checksum(payload, 0), uint16(len(payload))) {
			t.Errorf("split %d: completed checksum does not verify", split)
		}
	}

	binary.LittleEndian.PutUint16(hdr[8:], uint16(len(pkt))) // past the end
	if completeChecksum(pkt[:40], pkt[40:], &hdr) {
		t.Error("completeChecksum accepted csum_offset past the end")
	}
}

func addr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }

// TestFromFDOffload hands a device's descriptor to FromFD, as the sandbox
// does: the new Device must find out from the descriptor whether it
// carries virtio headers, and carry traffic either way.
func TestFromFDOffload(t *testing.T) {
	for _, noOffload := range []bool{false, true} {
		t.Run(map[bool]string{false: "offload", true: "no offload"}[noOffload], func(t *testing.T) {
			ns := netns.NewT(t)
			orig := openIn(t, ns, Config{NoOffload: noOffload, Addrs: []netip.Prefix{kernel4}, Up: true})
			f, err := orig.DupFile()
			if err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Dup(int(f.Fd()))
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			d, err := FromFD(fd, orig.Name(), orig.MTU())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			if got, want := d.Offload(), !noOffload; got != want {
				t.Errorf("Offload() = %v, want %v", got, want)
			}
			s := newStack(t, d.LinkEndpoint(), stack4)
			l, err := ns.Listen("tcp", netip.AddrPortFrom(kernel4.Addr(), 0).String())
			if err != nil {
				t.Fatal(err)
			}
			stop := echo(t, l)
			defer stop()
			c := dialTCP(t, s, netip.MustParseAddrPort(l.Addr().String()))
			defer c.Close()
			exchange(t, c, 1<<20)
		})
	}
}
