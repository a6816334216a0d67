//go:build linux

package tcprelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// rawWorld is a relay whose link is a gVisor channel endpoint, with the
// test as the guest, segment by segment: it checks what the relay answers
// to segments a guest stack would rarely send on cue (probes, resets in
// the window, SYNs on a live tuple, fragments, odd options).
type rawWorld struct {
	*world
	t     *testing.T
	ch    *channel.Endpoint
	host  net.Listener
	dst   netip.AddrPort // the host listener, as the guest reaches it
	src   netip.AddrPort // the guest's end of the current flow
	seq   uint32         // the guest's next sequence number
	ack   uint32         // what it has received: the relay's next
	mu    sync.Mutex
	logs  strings.Builder
	guest netip.Addr
}

// fastTiming scales the relay's timers down for tests.
func fastTiming() *timing {
	return &timing{rto: time.Millisecond, maxRTO: 4 * time.Millisecond, synTimeout: 10 * time.Second, finTimeout: time.Minute}
}

func newRawWorld(t *testing.T, tm *timing, mod func(*Config, *fakeGateway)) *rawWorld {
	t.Helper()
	w := &rawWorld{t: t, ch: channel.New(512, 1500, ""), guest: guest4.Addr()}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.host = l
	w.dst = netip.AddrPortFrom(gateway4.Addr(), uint16(l.Addr().(*net.TCPAddr).Port))
	w.world = newGatewaySide(t, w.ch, func(c *Config, gw *fakeGateway) {
		c.timing, c.Logger = tm, slog.New(slog.NewTextHandler(w, nil))
		if mod != nil {
			mod(c, gw)
		}
	}, func() { l.Close(); w.ch.Close() })
	w.src = netip.AddrPortFrom(w.guest, 40000)
	return w
}

// Write collects the relay's logs.
func (w *rawWorld) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs.Write(p)
}

func (w *rawWorld) logged() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs.String()
}

// packet builds an IPv4 TCP segment from src to dst.
func packet(src, dst netip.AddrPort, flags header.TCPFlags, seq, ack uint32, wnd uint16, opts, payload []byte) []byte {
	tcpLen := header.TCPMinimumSize + (len(opts)+3)&^3
	b := make([]byte, header.IPv4MinimumSize+tcpLen+len(payload))
	ip := header.IPv4(b)
	sa, da := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: sa, DstAddr: da, Flags: header.IPv4FlagDontFragment})
	ip.SetChecksum(^ip.CalculateChecksum())
	t := header.TCP(b[header.IPv4MinimumSize:])
	t.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack, DataOffset: uint8(tcpLen), Flags: flags, WindowSize: wnd})
	copy(t[header.TCPMinimumSize:], opts)
	copy(b[header.IPv4MinimumSize+tcpLen:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, sa, da, uint16(tcpLen+len(payload)))
	t.SetChecksum(^checksum.Checksum(t, xsum))
	return b
}

// inject hands b (an IPv4 packet) to the relay as the link would.
func (w *rawWorld) inject(b []byte) {
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	w.ch.InjectInbound(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
}

// send sends a segment of the current flow.
func (w *rawWorld) send(flags header.TCPFlags, seq, ack uint32, wnd uint16, opts, payload []byte) {
	w.inject(packet(w.src, w.dst, flags, seq, ack, wnd, opts, payload))
}

// recv returns the next TCP segment the relay sends to the guest,
// failing the test if none comes within 10 seconds.
func (w *rawWorld) recv() header.TCP {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		pkt := w.ch.ReadContext(ctx)
		if pkt == nil {
			w.t.Fatalf("no segment from the relay in 10 s (flows %d)", w.r.Flows())
		}
		b := pkt.ToView().ToSlice()
		pkt.DecRef()
		if len(b) < header.IPv4MinimumSize || header.IPVersion(b) != header.IPv4Version {
			continue
		}
		ip := header.IPv4(b)
		if ip.Protocol() != uint8(header.TCPProtocolNumber) {
			continue
		}
		return header.TCP(ip.Payload())
	}
}

// handshake opens a flow from port with MSS and window-scale options
// opts (nil: MSS 1460, no scaling) and returns the host's end.
func (w *rawWorld) handshake(port uint16, opts []byte) net.Conn {
	w.t.Helper()
	w.src = netip.AddrPortFrom(w.guest, port)
	if opts == nil {
		opts = make([]byte, 4)
		header.EncodeMSSOption(1460, opts)
	}
	w.seq = 1000
	w.send(header.TCPFlagSyn, w.seq, 0, 65535, opts, nil)
	sa := w.recv()
	if sa.Flags() != header.TCPFlagSyn|header.TCPFlagAck || sa.AckNumber() != w.seq+1 {
		w.t.Fatalf("answer to the SYN: flags %s ack %d, want SYN-ACK %d", sa.Flags(), sa.AckNumber(), w.seq+1)
	}
	w.seq++
	w.ack = sa.SequenceNumber() + 1
	w.send(header.TCPFlagAck, w.seq, w.ack, 65535, nil, nil)
	w.host.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := w.host.Accept()
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	return c
}

// A guest's keepalive probe (a bare segment one below what the relay
// expects) is answered with an ACK, every time (RFC 9293 3.10.7.4).
func TestRelayKeepaliveProbe(t *testing.T) {
	w := newRawWorld(t, nil, nil)
	w.handshake(40001, nil)
	for i := range 3 {
		w.send(header.TCPFlagAck, w.seq-1, w.ack, 65535, nil, nil)
		a := w.recv()
		if a.Flags() != header.TCPFlagAck || a.AckNumber() != w.seq || a.SequenceNumber() != w.ack {
			t.Fatalf("probe %d: answer %s seq %d ack %d, want ACK seq %d ack %d", i, a.Flags(), a.SequenceNumber(), a.AckNumber(), w.ack, w.seq)
		}
	}
	if n := w.r.Flows(); n != 1 {
		t.Errorf("%d flows after the probes, want 1", n)
	}
}

// A guest that holds its window at zero and answers every probe keeps
// the flow, however many probes that takes (more than relayRetries);
// once it opens the window, the data comes, intact.
func TestRelayZeroWindowPersist(t *testing.T) {
	w := newRawWorld(t, fastTiming(), nil)
	hc := w.handshake(40002, nil)
	w.send(header.TCPFlagAck, w.seq, w.ack, 0, nil, nil) // the window closes
	msg := []byte("held until the window opens")
	if _, err := hc.Write(msg); err != nil {
		t.Fatal(err)
	}
	const probes = 3 * relayRetries
	for i := range probes {
		p := w.recv()
		if p.Flags()&header.TCPFlagRst != 0 {
			t.Fatalf("probe %d: the relay reset a flow whose guest answers its probes", i)
		}
		if len(p.Payload()) != 0 || p.SequenceNumber() != w.ack-1 {
			t.Fatalf("probe %d: seq %d with %d bytes, want a bare probe at %d (nothing beyond a zero window)", i, p.SequenceNumber(), len(p.Payload()), w.ack-1)
		}
		w.send(header.TCPFlagAck, w.seq, w.ack, 0, nil, nil)
	}
	w.send(header.TCPFlagAck, w.seq, w.ack, 65535, nil, nil) // open
	var got []byte
	for len(got) < len(msg) {
		d := w.recv()
		if d.SequenceNumber() == w.ack-1 && len(d.Payload()) == 0 {
			continue // a probe sent before the window opened
		}
		if d.SequenceNumber() != w.ack {
			t.Fatalf("data at seq %d, want %d", d.SequenceNumber(), w.ack)
		}
		got = append(got, d.Payload()...)
		w.ack += uint32(len(d.Payload()))
		w.send(header.TCPFlagAck, w.seq, w.ack, 65535, nil, nil)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("guest got %q, want %q", got, msg)
	}
}

// A guest that sends a SYN and never completes the handshake loses the
// flow at the SYN timeout, with a reset, and the host connection is
// closed. Until its handshake completes, the flow counts against
// MaxSYNs, even with the host's connect done.
func TestRelaySynTimeout(t *testing.T) {
	tm := fastTiming()
	tm.rto, tm.maxRTO, tm.synTimeout = 20*time.Millisecond, 20*time.Millisecond, 100*time.Millisecond
	w := newRawWorld(t, tm, func(c *Config, _ *fakeGateway) { c.MaxSYNs = 1 })
	mss := make([]byte, 4)
	header.EncodeMSSOption(1460, mss)
	w.src = netip.AddrPortFrom(w.guest, 40003)
	w.send(header.TCPFlagSyn, 1000, 0, 65535, mss, nil)
	if sa := w.recv(); sa.Flags() != header.TCPFlagSyn|header.TCPFlagAck {
		t.Fatalf("answer to the SYN: %s, want SYN-ACK", sa.Flags())
	}
	// The host's connect is done (the SYN-ACK came after it), the
	// guest's handshake is not: a second SYN is over MaxSYNs.
	first := w.src
	w.src = netip.AddrPortFrom(w.guest, 40004)
	w.send(header.TCPFlagSyn, 5000, 0, 65535, mss, nil)
	for {
		s := w.recv()
		if header.TCP(s).DestinationPort() == 40004 {
			if s.Flags()&header.TCPFlagRst == 0 {
				t.Fatalf("a second SYN with MaxSYNs 1 and a handshake pending: %s, want a reset", s.Flags())
			}
			break
		}
	}
	hc, err := w.host.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	// No ACK from the guest: SYN-ACKs again, then a reset.
	w.src = first
	for {
		s := w.recv()
		if s.Flags()&header.TCPFlagRst != 0 {
			break
		}
		if s.Flags() != header.TCPFlagSyn|header.TCPFlagAck {
			t.Fatalf("before the timeout: %s, want SYN-ACKs", s.Flags())
		}
	}
	if n, syns := w.r.Flows(), w.r.syns.Load(); n != 0 || syns != 0 {
		t.Errorf("after the SYN timeout: %d flows, %d handshakes counted; want 0 and 0", n, syns)
	}
	hc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := hc.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) && err != io.EOF {
		t.Errorf("host read after the SYN timeout: %v, want the connection closed", err)
	}
	// The slot is free again.
	w.handshake(40005, nil)
}

// A half-closed flow (the guest's FIN taken, the host silent) ends at
// the FIN timeout, and an idle one at the idle timeout when one is set:
// with a reset to the guest and the host socket closed.
func TestRelayFinAndIdleTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		fin  bool
	}{{"half-closed", true}, {"idle", false}} {
		t.Run(tc.name, func(t *testing.T) {
			tm := fastTiming()
			tm.finTimeout, tm.idleTimeout = 100*time.Millisecond, 0
			if !tc.fin {
				tm.finTimeout, tm.idleTimeout = time.Minute, 100*time.Millisecond
			}
			w := newRawWorld(t, tm, nil)
			hc := w.handshake(40006, nil)
			if tc.fin {
				w.send(header.TCPFlagFin|header.TCPFlagAck, w.seq, w.ack, 65535, nil, nil)
				w.seq++
			}
			for {
				s := w.recv()
				if s.Flags()&header.TCPFlagRst != 0 {
					break
				}
			}
			if n := w.r.Flows(); n != 0 {
				t.Errorf("%d flows after the timeout, want 0", n)
			}
			hc.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.ReadAll(hc)
			if tc.fin && err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("host read: %v", err)
			}
			if !tc.fin && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("host read after the idle timeout: %v, want ECONNRESET", err)
			}
		})
	}
}

// RFC 5961: a reset inside the window but not at the next sequence
// number, and a SYN on a live tuple, draw challenge ACKs and leave the
// flow; a reset at exactly the next sequence number ends it. An ACK of
// data never sent is answered with an ACK, and its data dropped.
func TestRelayChallengeACK(t *testing.T) {
	w := newRawWorld(t, nil, nil)
	hc := w.handshake(40007, nil)
	challenge := func(what string) {
		t.Helper()
		a := w.recv()
		if a.Flags() != header.TCPFlagAck || a.AckNumber() != w.seq {
			t.Fatalf("%s: answer %s ack %d, want a challenge ACK of %d", what, a.Flags(), a.AckNumber(), w.seq)
		}
		if n := w.r.Flows(); n != 1 {
			t.Fatalf("%s: %d flows, want the flow kept", what, n)
		}
	}
	w.send(header.TCPFlagRst, w.seq+100, 0, 0, nil, nil)
	challenge("a reset in the window")
	w.send(header.TCPFlagSyn, w.seq+12345, 0, 65535, nil, nil)
	challenge("a SYN on a live tuple")
	w.send(header.TCPFlagAck|header.TCPFlagPsh, w.seq, w.ack+1000, 65535, nil, []byte("never"))
	challenge("an ACK of data never sent")
	w.send(header.TCPFlagAck|header.TCPFlagPsh, w.seq, w.ack, 65535, nil, []byte("taken"))
	hc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 5)
	if _, err := io.ReadFull(hc, b); err != nil || string(b) != "taken" {
		t.Fatalf("host read %q, %v: want \"taken\" (and not the data of the bad ACK)", b, err)
	}
	w.seq += 5
	w.send(header.TCPFlagRst, w.seq, 0, 0, nil, nil)
	if _, err := io.ReadAll(hc); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("host read after the guest's exact reset: %v, want ECONNRESET", err)
	}
	if n := w.r.Flows(); n != 0 {
		t.Errorf("%d flows after an exact reset, want 0", n)
	}
}

// The guest's MSS option is floored at 48 (gVisor's option parser does
// it, as Linux's tcp_min_snd_mss): an MSS of 1 does not make the relay
// send a segment per byte.
func TestRelayMSSFloor(t *testing.T) {
	w := newRawWorld(t, nil, nil)
	opts := make([]byte, 4)
	header.EncodeMSSOption(1, opts)
	hc := w.handshake(40008, opts)
	msg := bytes.Repeat([]byte("m"), 1000)
	hc.Write(msg)
	d := w.recv()
	if n := len(d.Payload()); n != header.TCPMinimumSendMSS {
		t.Errorf("first data segment with MSS 1: %d bytes, want %d", n, header.TCPMinimumSendMSS)
	}
}

// The window is taken only from segments no older than the one it last
// came from (SND.WL1): after an out-of-order segment opened it, a bare
// ACK from before that segment, delivered late, does not close it.
func TestRelayWindowUpdateRule(t *testing.T) {
	w := newRawWorld(t, nil, nil)
	hc := w.handshake(40009, nil)
	w.send(header.TCPFlagAck|header.TCPFlagPsh, w.seq+10, w.ack, 65535, nil, []byte("later")) // out of order, in the window
	if a := w.recv(); a.AckNumber() != w.seq {
		t.Fatalf("ACK of an out-of-order segment: %d, want %d", a.AckNumber(), w.seq)
	}
	w.send(header.TCPFlagAck, w.seq, w.ack, 0, nil, nil) // sent before it, arriving after
	hc.Write([]byte("data"))
	for {
		d := w.recv()
		if len(d.Payload()) > 0 {
			if string(d.Payload()) != "data" {
				t.Fatalf("got %q", d.Payload())
			}
			return
		}
		if d.SequenceNumber() == w.ack-1 {
			t.Fatal("the relay probes a zero window: an older segment closed it")
		}
	}
}

// Fragments of a relay flow are dropped without a reset; an IPv6 segment
// behind extension headers is carried.
func TestRelayFragmentsAndExtHeaders(t *testing.T) {
	w := newRawWorld(t, nil, nil)
	hc := w.handshake(40010, nil)
	resets := w.st.GVisor().Stats().TCP.ResetsSent.Value()
	b := packet(w.src, w.dst, header.TCPFlagAck|header.TCPFlagPsh, w.seq, w.ack, 65535, nil, []byte("fragment"))
	ip := header.IPv4(b)
	ip.SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	w.inject(b)
	// The next segment the guest gets is the answer to a probe, not a
	// reset of gVisor's.
	w.send(header.TCPFlagAck, w.seq-1, w.ack, 65535, nil, nil)
	if a := w.recv(); a.Flags() != header.TCPFlagAck {
		t.Fatalf("after a first fragment: %s, want the probe's ACK", a.Flags())
	}
	if n := w.st.GVisor().Stats().TCP.ResetsSent.Value(); n != resets || w.r.Flows() != 1 {
		t.Errorf("after a fragment: gVisor sent %d resets, %d flows; want none and the flow kept", n-resets, w.r.Flows())
	}
	w.send(header.TCPFlagAck|header.TCPFlagPsh, w.seq, w.ack, 65535, nil, []byte("whole"))
	hc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 5)
	if _, err := io.ReadFull(hc, got); err != nil || string(got) != "whole" {
		t.Fatalf("host read %q %v, want \"whole\" (the fragment's data dropped)", got, err)
	}
}

// IPv6: a segment behind hop-by-hop and destination options headers is
// the relay's, data and all.
func TestRelayIPv6ExtHeaders(t *testing.T) {
	w := newRawWorld(t, nil, nil)
	l6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer l6.Close()
	src := netip.MustParseAddrPort("[fd00::100]:40011")
	dst := netip.AddrPortFrom(netip.MustParseAddr("fd00::2"), uint16(l6.Addr().(*net.TCPAddr).Port))
	send := func(flags header.TCPFlags, seq, ack uint32, payload []byte) {
		ext := make([]byte, 16) // hop-by-hop (8) then destination options (8), PadN-filled
		ext[0], ext[1] = uint8(header.IPv6DestinationOptionsExtHdrIdentifier), 0
		ext[2], ext[3] = 1, 4
		ext[8], ext[9] = uint8(header.TCPProtocolNumber), 0
		ext[10], ext[11] = 1, 4
		tcpLen := header.TCPMinimumSize
		b := make([]byte, header.IPv6MinimumSize+len(ext)+tcpLen+len(payload))
		sa, da := tcpip.AddrFrom16(src.Addr().As16()), tcpip.AddrFrom16(dst.Addr().As16())
		header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(len(b) - header.IPv6MinimumSize), TransportProtocol: 0 /* hop-by-hop */, HopLimit: 64, SrcAddr: sa, DstAddr: da})
		copy(b[header.IPv6MinimumSize:], ext)
		t := header.TCP(b[header.IPv6MinimumSize+len(ext):])
		t.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack, DataOffset: uint8(tcpLen), Flags: flags, WindowSize: 65535})
		copy(t[tcpLen:], payload)
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, sa, da, uint16(tcpLen+len(payload)))
		t.SetChecksum(^checksum.Checksum(t, xsum))
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		w.ch.InjectInbound(header.IPv6ProtocolNumber, pkt)
		pkt.DecRef()
	}
	recv := func() header.TCP {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			pkt := w.ch.ReadContext(ctx)
			if pkt == nil {
				t.Fatal("no IPv6 segment from the relay in 10 s")
			}
			b := pkt.ToView().ToSlice()
			pkt.DecRef()
			if len(b) >= header.IPv6MinimumSize && header.IPVersion(b) == header.IPv6Version && header.IPv6(b).NextHeader() == uint8(header.TCPProtocolNumber) {
				return header.TCP(b[header.IPv6MinimumSize:])
			}
		}
	}
	send(header.TCPFlagSyn, 7000, 0, nil)
	sa := recv()
	if sa.Flags() != header.TCPFlagSyn|header.TCPFlagAck {
		t.Fatalf("SYN behind extension headers: %s, want SYN-ACK", sa.Flags())
	}
	send(header.TCPFlagAck|header.TCPFlagPsh, 7001, sa.SequenceNumber()+1, []byte("v6 ext"))
	l6.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	hc, err := l6.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 6)
	if _, err := io.ReadFull(hc, got); err != nil || string(got) != "v6 ext" {
		t.Fatalf("host read %q %v", got, err)
	}
}

// When the host poller stops, the relay logs it once, resets its flows
// and refuses new ones with a reset.
func TestRelayPollerFailure(t *testing.T) {
	w := newRawWorld(t, nil, nil)
	hc := w.handshake(40016, nil)
	w.r.poll.ep.Close() // as if epoll_wait had failed
	if rst := w.recv(); rst.Flags()&header.TCPFlagRst == 0 {
		t.Fatalf("live flow after the poller stopped: %s, want a reset", rst.Flags())
	}
	hc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(hc); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("host read: %v, want ECONNRESET", err)
	}
	for i, port := range []uint16{40017, 40018} {
		before := w.stats().Refused
		w.src = netip.AddrPortFrom(w.guest, port)
		w.send(header.TCPFlagSyn, 1, 0, 65535, nil, nil)
		if s := w.recv(); s.Flags()&header.TCPFlagRst == 0 {
			t.Fatalf("SYN %d after the poller stopped: %s, want a reset", i, s.Flags())
		}
		if got := w.stats().Refused; got != before+1 {
			t.Errorf("refused %d, want %d", got, before+1)
		}
	}
	if n := strings.Count(w.logged(), "host poller stopped"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, w.logged())
	}
}

// SYNs with malformed or extreme TCP options neither crash nor hang the
// relay, nor leave a flow behind; a normal connection works after them.
func TestRelayOptionGarbage(t *testing.T) {
	w := newRawWorld(t, nil, nil)
	mss := func(v uint16) []byte { b := []byte{2, 4, 0, 0}; binary.BigEndian.PutUint16(b[2:], v); return b }
	cases := map[string][]byte{
		"MSS 0":                   mss(0),
		"MSS 1":                   mss(1),
		"MSS 65535":               mss(65535),
		"window scale 15":         {3, 3, 15, 1},
		"window scale 255":        {3, 3, 255, 1},
		"SACK-permitted length 3": {4, 3, 0, 1},
		"SACK-permitted length 1": {4, 1, 1, 1},
		"truncated MSS":           {2, 4, 5},
		"length 0":                {2, 0, 0, 0},
		"past the header":         {1, 1, 2, 40},
		"length 255":              {8, 255, 0, 0},
		"only NOPs":               {1, 1, 1, 1},
		"end then junk":           {0, 2, 4, 1},
		"timestamps too short":    {8, 6, 0, 0, 0, 0, 1, 1},
	}
	port := uint16(41000)
	for name, opts := range cases {
		port++
		w.src = netip.AddrPortFrom(w.guest, port)
		w.send(header.TCPFlagSyn, 1, 0, 65535, opts, nil)
		s := w.recv()
		if s.Flags()&header.TCPFlagSyn != 0 {
			if name == "window scale 255" || name == "window scale 15" {
				w.r.mu.Lock()
				f := w.r.flows[relayKey{w.src, w.dst}]
				w.r.mu.Unlock()
				f.mu.Lock()
				ws := f.guestWS
				f.mu.Unlock()
				if ws > header.MaxWndScale {
					t.Errorf("%s: taken as %d, want at most %d", name, ws, header.MaxWndScale)
				}
			}
			// Accepted: complete it and reset it, to leave nothing.
			w.send(header.TCPFlagAck, 2, s.SequenceNumber()+1, 65535, nil, nil)
			w.send(header.TCPFlagRst, 2, 0, 0, nil, nil)
		} else if s.Flags()&header.TCPFlagRst == 0 {
			t.Errorf("%s: answer %s, want a SYN-ACK or a reset", name, s.Flags())
		}
	}
	// Each flow was answered only after its host connect was done, and
	// ended by the exact reset: nothing is left.
	if n := w.r.Flows(); n != 0 {
		t.Errorf("%d flows left after the garbage, want 0", n)
	}
	w.handshake(42000, nil)
}

// TestRelayAdmission: a SYN that Gateway.Admit refuses for its source
// (ErrSource) gets no answer and takes no flow, not even gVisor's; one
// refused for its destination gets a reset; the relay counts both as
// denied.
func TestRelayAdmission(t *testing.T) {
	w := newRawWorld(t, nil, nil)
	resets := w.st.GVisor().Stats().TCP.ResetsSent.Value()
	for i, src := range []string{"192.0.2.1:40012", "10.0.3.7:40013", "10.0.2.2:40014"} {
		w.inject(packet(netip.MustParseAddrPort(src), w.dst, header.TCPFlagSyn, 1, 0, 65535, nil, nil))
		if s := w.stats(); s.Denied != uint64(i+1) || s.Live != 0 || w.r.Flows() != 0 {
			t.Errorf("SYN from %s: stats %+v, relay flows %d; want it denied and no flow", src, s, w.r.Flows())
		}
	}
	w.src = netip.AddrPortFrom(w.guest, 40019)
	w.inject(packet(w.src, netip.MustParseAddrPort("198.18.0.1:80"), header.TCPFlagSyn, 7, 0, 65535, nil, nil))
	rst := w.recv()
	if rst.Flags() != header.TCPFlagRst|header.TCPFlagAck || rst.AckNumber() != 8 || rst.DestinationPort() != 40019 {
		t.Fatalf("answer to a SYN to a denied destination: %s ack %d to port %d, want RST|ACK 8 to 40019", rst.Flags(), rst.AckNumber(), rst.DestinationPort())
	}
	if s := w.stats(); s.Denied != 4 || s.Live != 0 || w.r.Flows() != 0 {
		t.Errorf("after a denied destination: stats %+v, relay flows %d; want 4 denied and no flow", s, w.r.Flows())
	}
	if n := w.st.GVisor().Stats().TCP.ResetsSent.Value(); n != resets {
		t.Errorf("gVisor sent %d resets: the refused SYNs reached it", n-resets)
	}
	// The next segment to the guest is this SYN-ACK: nothing answered
	// the foreign SYNs.
	w.handshake(40015, nil)
}
