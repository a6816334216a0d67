//go:build linux

package tcprelay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// relayModes are the relay's two ways of holding host data the guest has
// not acknowledged: in the host socket, peeked at (Linux 6.9 and later), and
// read into the relay's budget (earlier kernels).
var relayModes = []struct {
	name string
	mod  func(*Config, *fakeGateway)
}{
	{"peek", nil},
	{"read", func(c *Config, _ *fakeGateway) { c.noPeek = true }},
}

// TestRelayCarries: a guest connection goes through the relay (not a
// gVisor endpoint), and the flow is gone once both sides closed.
func TestRelayCarries(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			l, dst := hostListen(t, network)
			w := newWorldLink(t, 0, nil, nil)
			testnet.Serve(t, l, func(c net.Conn) { io.Copy(c, c) })
			c, err := w.guest.Dial("tcp", dst)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if n := w.r.Flows(); n != 1 {
				t.Errorf("relay holds %d flows, want 1", n)
			}
			if n := w.st.GVisor().Stats().TCP.CurrentEstablished.Value(); n != 0 {
				t.Errorf("gVisor has %d established TCP endpoints, want 0", n)
			}
			for i := range 3 {
				msg := fmt.Sprintf("ping %d", i)
				c.Write([]byte(msg))
				b := make([]byte, len(msg))
				if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
					t.Fatalf("echo %d: %q %v", i, b, err)
				}
			}
			c.Close()
			waitFor(t, "the flow to end", func() bool { return w.r.Flows() == 0 && w.stats().Live == 0 })
			if s := w.stats(); s.TCPFlows != 1 {
				t.Errorf("TCPFlows = %d, want 1", s.TCPFlows)
			}
		})
	}
}

// segRecorder records the TCP segments crossing a link, both ways.
type segRecorder struct {
	nested.Endpoint
	mu   sync.Mutex
	segs []recSeg
}

type recSeg struct {
	toGuest  bool
	flags    header.TCPFlags
	seq, ack uint32
	n        int
}

func newSegRecorder(link gvstack.LinkEndpoint) *segRecorder {
	r := &segRecorder{}
	r.Endpoint.Init(link, r)
	return r
}

func (r *segRecorder) note(toGuest bool, pkt *gvstack.PacketBuffer) {
	b := pkt.ToView().ToSlice()
	if len(b) < header.IPv4MinimumSize || header.IPVersion(b) != header.IPv4Version {
		return
	}
	ip := header.IPv4(b)
	if ip.Protocol() != uint8(header.TCPProtocolNumber) {
		return
	}
	t := header.TCP(ip.Payload())
	r.mu.Lock()
	r.segs = append(r.segs, recSeg{toGuest, t.Flags(), t.SequenceNumber(), t.AckNumber(), len(t.Payload())})
	r.mu.Unlock()
}

func (r *segRecorder) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	r.note(false, pkt)
	r.Endpoint.DeliverNetworkPacket(proto, pkt)
}

func (r *segRecorder) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for _, p := range pkts.AsSlice() {
		r.note(true, p)
	}
	return r.Endpoint.WritePackets(pkts)
}

// TestRelayCloseOrder: whichever side closes first, the guest's FIN is
// acknowledged before the flow is dropped (a flow dropped first leaves
// the guest resending its FIN, to be answered by a reset), each FIN is
// sent once, and nothing is reset.
func TestRelayCloseOrder(t *testing.T) {
	for _, hostFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("hostFirst=%v", hostFirst), func(t *testing.T) {
			l, dst := hostListen(t, "tcp4")
			var rec *segRecorder
			w := newWorldLink(t, 0, func(e gvstack.LinkEndpoint) gvstack.LinkEndpoint {
				rec = newSegRecorder(e)
				return rec
			}, nil)
			testnet.Serve(t, l, func(c net.Conn) {
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				c.Write(b)
				if !hostFirst {
					io.Copy(io.Discard, c) // until the guest's FIN
				}
			})
			c, err := w.guest.Dial("tcp", dst)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("x"))
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			if hostFirst {
				if _, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("guest read after the host's close: %v, want EOF", err)
				}
			}
			c.Close()
			waitFor(t, "the flow to end", func() bool { return w.r.Flows() == 0 })
			rec.mu.Lock()
			defer rec.mu.Unlock()
			var guestFins, relayFins int
			var finSeq uint32
			acked := false
			for _, s := range rec.segs {
				switch {
				case s.flags&header.TCPFlagRst != 0:
					t.Errorf("a reset (to guest: %v)", s.toGuest)
				case s.flags&header.TCPFlagFin != 0 && !s.toGuest:
					guestFins++
					finSeq = s.seq + uint32(s.n)
				case s.flags&header.TCPFlagFin != 0:
					relayFins++
				}
				if s.toGuest && guestFins > 0 && s.ack == finSeq+1 {
					acked = true
				}
			}
			if guestFins != 1 || relayFins != 1 {
				t.Errorf("FINs: %d from the guest, %d from the relay; want one each", guestFins, relayFins)
			}
			if !acked {
				t.Errorf("the relay dropped the flow without acknowledging the guest's FIN; segments: %+v", rec.segs)
			}
		})
	}
}

// transfer sends size random bytes each way at once between a guest
// connection and the host side, and checks both by hash.
func transfer(t *testing.T, w *world, l net.Listener, dst string, size int) {
	t.Helper()
	up, down := make([]byte, size), make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range up {
		up[i], down[i] = byte(rng.Uint32()), byte(rng.Uint32())
	}
	hostGot := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			hostGot <- nil
			return
		}
		defer c.Close()
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			if err := writeProgress(c, down); err != nil {
				t.Errorf("host write (download): %v", err)
			}
			c.(*net.TCPConn).CloseWrite()
		}()
		b, err := readProgress(c)
		if err != nil {
			t.Errorf("host read (upload) after %d bytes: %v", len(b), err)
		}
		<-wrote
		hostGot <- b
	}()
	c, err := w.guest.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if err := writeProgress(c, up); err != nil {
			t.Errorf("guest write (upload): %v", err)
		}
		c.(*stack.TCPConn).CloseWrite()
	}()
	defer func() { <-wrote }() // before c.Close, which would cut the upload short
	got, err := readProgress(c)
	if err != nil {
		if f := oneFlow(w.r); f != nil {
			f.mu.Lock()
			t.Logf("flow: state %d una %d nxt %d max %d wnd %d qLen %d skip %d peekPos %d readable %v hostEOF %v finSent %v timerOn %v rto %v retries %d", f.state, f.iss.Size(f.sndUna), f.iss.Size(f.sndNxt), f.iss.Size(f.sndMax), f.sndWnd, f.qLen, f.skip, f.peekPos, f.readable, f.hostEOF, f.finSent, f.timerOn, f.rto, f.retries)
			f.mu.Unlock()
		}
		t.Fatalf("guest read after %d bytes: %v", len(got), err)
	}
	if sha256.Sum256(got) != sha256.Sum256(down) {
		t.Errorf("download: %d bytes, hash differs (want %d)", len(got), size)
	}
	hg := <-hostGot
	if sha256.Sum256(hg) != sha256.Sum256(up) {
		t.Errorf("upload: %d bytes, hash differs (want %d)", len(hg), size)
	}
}

// readProgress reads c to its end through testnet.Progress: it fails only
// on a stall.
func readProgress(c net.Conn) ([]byte, error) { return io.ReadAll(testnet.Progress(c)) }

// writeProgress writes p to c through testnet.Progress.
func writeProgress(c net.Conn, p []byte) error {
	_, err := testnet.Progress(c).Write(p)
	return err
}

func TestRelayBulk(t *testing.T) {
	for _, mtu := range []int{0, 1500} {
		for _, network := range []string{"tcp4", "tcp6"} {
			for _, mode := range relayModes {
				if mode.name == "read" && (mtu != 0 || network != "tcp4") {
					continue // one case: the modes share all but where host data waits
				}
				t.Run(fmt.Sprintf("mtu%d/%s/%s", mtu, network, mode.name), func(t *testing.T) {
					l, dst := hostListen(t, network)
					w := newWorldLink(t, mtu, nil, mode.mod)
					transfer(t, w, l, dst, 16<<20)
					waitFor(t, "the flow to end", func() bool { return w.r.Flows() == 0 })
				})
			}
		}
	}
}

// lossy drops or corrupts every nth packet each way.
type lossy struct {
	nested.Endpoint
	nth                 uint64
	corrupt             bool
	in, out             atomic.Uint64
	inHarmed, outHarmed atomic.Uint64
}

func newLossy(link gvstack.LinkEndpoint, nth uint64, corrupt bool) *lossy {
	l := &lossy{nth: nth, corrupt: corrupt}
	l.Endpoint.Init(link, l)
	return l
}

func (l *lossy) harm(pkt *gvstack.PacketBuffer) *gvstack.PacketBuffer {
	if !l.corrupt {
		return nil
	}
	// Flip a byte of the TCP payload (past a 20-byte IPv4 or 40-byte
	// IPv6 header and a 20-byte TCP header) in a copy.
	b := pkt.ToView().ToSlice()
	if len(b) <= 100 {
		return nil
	}
	b[len(b)-1] ^= 0x5a
	return gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
}

func (l *lossy) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if l.in.Add(1)%l.nth == 0 {
		l.inHarmed.Add(1)
		if c := l.harm(pkt); c != nil {
			l.Endpoint.DeliverNetworkPacket(proto, c)
			c.DecRef()
		}
		return
	}
	l.Endpoint.DeliverNetworkPacket(proto, pkt)
}

func (l *lossy) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	var keep gvstack.PacketBufferList
	for _, p := range pkts.AsSlice() {
		if l.out.Add(1)%l.nth == 0 {
			l.outHarmed.Add(1)
			continue
		}
		keep.PushBack(p)
	}
	return l.Endpoint.WritePackets(keep)
}

// TestRelayLossy: data survives a link that drops every 101st packet each
// way, or corrupts them (the relay must check the checksum and drop).
func TestRelayLossy(t *testing.T) {
	for _, corrupt := range []bool{false, true} {
		t.Run(fmt.Sprintf("corrupt=%v", corrupt), func(t *testing.T) {
			l, dst := hostListen(t, "tcp4")
			var lk *lossy
			w := newWorldLink(t, 1500, func(e gvstack.LinkEndpoint) gvstack.LinkEndpoint {
				lk = newLossy(e, 101, corrupt)
				return lk
			}, nil)
			// Small: the relay keeps no out-of-order segments, so a
			// guest without SACK resends the rest of its window after
			// each loss, and at this loss rate that takes a while.
			transfer(t, w, l, dst, 1<<20)
			if lk.inHarmed.Load() == 0 || lk.outHarmed.Load() == 0 {
				t.Errorf("harmed %d in, %d out: the test did not test", lk.inHarmed.Load(), lk.outHarmed.Load())
			}
			waitFor(t, "the flow to end", func() bool { return w.r.Flows() == 0 })
		})
	}
}

// TestRelayBackpressure: a host that does not read, and a guest that does
// not read, stop the other side within the relay's bounds; nothing is
// lost once they read again.
func TestRelayBackpressure(t *testing.T) {
	const size = 24 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	t.Run("host not reading", func(t *testing.T) {
		l, dst := hostListen(t, "tcp4")
		w := newWorldLink(t, 0, nil, nil)
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				accepted <- c
			}
		}()
		c, err := w.guest.Dial("tcp", dst)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wrote := make(chan error, 1)
		go func() {
			err := writeProgress(c, data)
			c.(*stack.TCPConn).CloseWrite()
			wrote <- err
		}()
		hc := <-accepted
		defer hc.Close()
		// The guest stalls: the host's buffers, then the relay's, fill,
		// until the relay takes no more.
		var pend int
		waitFor(t, "the relay to take no more", func() bool {
			f := oneFlow(w.r)
			if f == nil {
				return false
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			pend = int(f.pend.Size())
			// It takes no more: the window it offers is zero (a room
			// of a few bytes scales to zero too).
			return pend > 0 && f.lastWnd == 0
		})
		if pend > relayWindow {
			t.Errorf("relay holds %d bytes for a stalled host, more than its window %d", pend, relayWindow)
		}
		select {
		case err := <-wrote:
			t.Fatalf("the guest's write ended while the host read nothing: %v", err)
		default:
		}
		got, err := readProgress(hc)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("host read %d bytes (want %d), equal %v, %v", len(got), len(data), bytes.Equal(got, data), err)
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
	})
	for _, mode := range relayModes {
		t.Run("guest not reading/"+mode.name, func(t *testing.T) {
			l, dst := hostListen(t, "tcp4")
			w := newWorldLink(t, 0, nil, mode.mod)
			wrote := make(chan error, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					wrote <- err
					return
				}
				defer c.Close()
				wrote <- writeProgress(c, data)
			}()
			c, err := w.guest.Dial("tcp", dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var held, kept int
			var peek bool
			waitFor(t, "the relay to stop reading the host", func() bool {
				f := oneFlow(w.r)
				if f == nil {
					return false
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				held, peek = f.qLen, f.peek
				kept = 0
				for _, v := range f.q {
					kept += v.Size()
				}
				// The guest's window is closed and the relay has taken
				// all it may ahead of it: read into q, or left in the
				// socket.
				if f.peek {
					return f.sndWnd == 0 && f.unsent() && f.sndUna == f.sndNxt
				}
				return f.sndWnd == 0 && f.qLen > 0 && f.readRoom() <= 0
			})
			if peek != (mode.name == "peek") {
				t.Fatalf("flow peeks %v in mode %s", peek, mode.name)
			}
			if peek && kept != 0 {
				t.Errorf("a peek flow holds %d bytes of host data in user space", kept)
			}
			if held > relaySendMax {
				t.Errorf("relay holds %d bytes for a stalled guest, more than %d", held, relaySendMax)
			}
			got, err := readProgress(c)
			if n := len(got); err != nil || !bytes.Equal(got, data) {
				if f := oneFlow(w.r); f != nil {
					f.mu.Lock()
					t.Logf("read %d; flow: state %d una %d nxt %d max %d wnd %d qLen %d skip %d hostEOF %v finSent %v timerOn %v", n, f.state, f.iss.Size(f.sndUna), f.iss.Size(f.sndNxt), f.iss.Size(f.sndMax), f.sndWnd, f.qLen, f.skip, f.hostEOF, f.finSent, f.timerOn)
					f.mu.Unlock()
				}
				t.Fatalf("guest read: equal %v, %v", bytes.Equal(got, data), err)
			}
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func oneFlow(r *Relay) *rflow {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.flows {
		return f
	}
	return nil
}

// TestRelayResets: a reset from either side reaches the other as a reset,
// and a dial that fails reaches the guest as a refusal.
func TestRelayResets(t *testing.T) {
	l, dst := hostListen(t, "tcp4")
	w := newWorldLink(t, 0, nil, nil)
	hostErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			hostErr <- err
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(c)
		hostErr <- err
	}()
	c, err := w.guest.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	c.(*stack.TCPConn).Abort()
	if err := <-hostErr; !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("host read after the guest's reset: %v, want ECONNRESET", err)
	}
	waitFor(t, "the flow to end", func() bool { return w.r.Flows() == 0 && w.stats().Live == 0 })

	// A closed port on the host: ECONNREFUSED, counted.
	l2, dst2 := hostListen(t, "tcp4")
	l2.Close()
	before := w.stats().Refused
	if _, err := w.guest.Dial("tcp", dst2); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial to a closed host port: %v, want ECONNREFUSED", err)
	}
	// The reset goes out just before the flow is dropped.
	waitFor(t, "the flow to end", func() bool { return w.r.Flows() == 0 && w.stats().Live == 0 })
	if s := w.stats(); s.Refused != before+1 || s.Live != 0 {
		t.Errorf("stats %+v: want one more refused, none live", s)
	}
}

// TestRelayDialTimeout: a host that never answers the connect (a
// listener whose accept queue is full drops SYNs) gets the guest a reset
// at the relay's dial deadline, not a hang; the flow is counted refused
// and gone.
func TestRelayDialTimeout(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	port := sa.(*unix.SockaddrInet4).Port
	// Fill the accept queue (a backlog of 0 holds one connection).
	for range 2 {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		if c, err := d.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			defer c.Close()
		}
	}
	w := newWorldLink(t, 0, nil, nil)
	w.r.dialWait = 500 * time.Millisecond
	before := w.stats().Refused
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.guest.DialContext(ctx, "tcp", fmt.Sprintf("10.0.2.2:%d", port)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial to a host that drops SYNs: %v, want ECONNREFUSED at the relay's deadline", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 5*time.Second {
		t.Errorf("refused after %v, want about 500ms", d)
	}
	// The reset goes out just before the flow is dropped.
	waitFor(t, "the flow to end", func() bool { return w.r.Flows() == 0 && w.stats().Live == 0 })
	if s := w.stats(); s.Refused != before+1 || s.Live != 0 || w.r.syns.Load() != 0 {
		t.Errorf("stats %+v, flows %d, handshakes %d: want one more refused, none live", s, w.r.Flows(), w.r.syns.Load())
	}
}

// TestRelayMaxSYNs: handshakes beyond MaxSYNs (dials still in progress)
// are refused at once and counted; the others complete.
func TestRelayMaxSYNs(t *testing.T) {
	l, dst := hostListen(t, "tcp4")
	testnet.Serve(t, l, func(c net.Conn) { io.Copy(io.Discard, c) })
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	defer open()
	w := newWorldLink(t, 0, nil, func(c *Config, gw *fakeGateway) {
		c.MaxSYNs = 2
		c.SocketBlocks = true
		gw.dial = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr.String())
		}
	})
	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result, 2)
	for range 2 {
		go func() {
			c, err := w.guest.Dial("tcp", dst)
			res <- result{c, err}
		}()
	}
	waitFor(t, "two handshakes in progress", func() bool { return w.r.syns.Load() == 2 })
	start := time.Now()
	for i := range 3 {
		if c, err := w.guest.Dial("tcp", dst); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("dial %d past MaxSYNs: %v, want ECONNREFUSED", i, err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusals took %v", d)
	}
	if s := w.stats(); s.Refused != 3 {
		t.Errorf("Refused = %d, want 3", s.Refused)
	}
	open()
	for range 2 {
		r := <-res
		if r.err != nil {
			t.Fatalf("a handshake within MaxSYNs: %v", r.err)
		}
		r.c.Close()
	}
}

// TestRelayUsable: the relay takes TUN-like links and Ethernet links with
// a MAC address, not other links with a header (and New refuses those).
func TestRelayUsable(t *testing.T) {
	p, err := tun.NewPipe(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !Usable(p.A()) {
		t.Error("a TUN-like pipe end is not usable by the relay")
	}
	if Usable(ethLike{p.A()}) {
		t.Error("a link with a 14-byte header and no MAC address is usable by the relay")
	}
	if !Usable(ethernet.New(channel.New(1, 1500, "\x02\x00\x00\x00\x00\x01"))) {
		t.Error("an Ethernet link is not usable by the relay")
	}
	if _, err := New(ethLike{p.A()}, &fakeGateway{}, Config{}); err == nil {
		t.Error("New took a link that is not usable")
	}
}

type ethLike struct{ gvstack.LinkEndpoint }

func (ethLike) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }
func (ethLike) MaxHeaderLength() uint16                 { return header.EthernetMinimumSize }

// newEthWorld is newWorldLink over Ethernet, as on a TAP device
// (rootlesskit): each stack's link is gVisor's ethernet endpoint over a
// channel endpoint with a MAC address, and the frames cross between the
// channels whole.
func newEthWorld(t testing.TB, mod func(*Config, *fakeGateway)) *world {
	t.Helper()
	a := channel.New(1024, 1514, "\x02\x00\x00\x00\x00\x02")
	b := channel.New(1024, 1514, "\x02\x00\x00\x00\x01\x00")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	cross := func(from, to *channel.Endpoint) {
		defer wg.Done()
		for {
			pkt := from.ReadContext(ctx)
			if pkt == nil {
				return
			}
			in := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: pkt.ToBuffer()})
			to.InjectInbound(0, in) // the ethernet endpoint reads the type
			in.DecRef()
			pkt.DecRef()
		}
	}
	wg.Add(2)
	go cross(a, b)
	go cross(b, a)
	stop := func() { cancel(); wg.Wait(); a.Close(); b.Close() }
	w := newGatewaySide(t, ethernet.New(a), mod, stop)
	guest, err := stack.New(stack.Config{Link: ethernet.New(b), Addrs: []netip.Prefix{guest4, guest6}})
	if err != nil {
		t.Fatal(err)
	}
	w.guest = guest
	return w
}

// TestRelayEthernet: on an Ethernet link the relay carries the guest's
// connections (gVisor answers its ARP for the gateway), both families,
// with data intact both ways, and closes them cleanly.
func TestRelayEthernet(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			l, dst := hostListen(t, network)
			w := newEthWorld(t, nil)
			if !w.r.eth {
				t.Fatal("the relay does not take an Ethernet link as Ethernet")
			}
			transfer(t, w, l, dst, 4<<20)
			if n := w.st.GVisor().Stats().TCP.CurrentEstablished.Value(); n != 0 {
				t.Errorf("gVisor has %d established TCP endpoints, want 0 (the relay's flows)", n)
			}
			waitFor(t, "the flow to end", func() bool { return w.r.Flows() == 0 && w.stats().Live == 0 })
			if s := w.stats(); s.TCPFlows != 1 {
				t.Errorf("TCPFlows = %d, want 1", s.TCPFlows)
			}
		})
	}
}

// TestRelayNoGoroutinePerFlow: the relay's flows share one host poller;
// a hundred open flows, each carrying data from its host socket, start no
// goroutine of the gateway's.
func TestRelayNoGoroutinePerFlow(t *testing.T) {
	l, dst := hostListen(t, "tcp4")
	// A server without a goroutine per connection either: it greets
	// and keeps each connection until the test ends.
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("x"))
			held = append(held, c)
		}
	}()
	defer func() {
		l.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	}()
	w := newWorldLink(t, 0, nil, nil)
	greet := func() net.Conn {
		c, err := w.guest.Dial("tcp", dst)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	defer greet().Close() // the gateway's lasting goroutines are up
	before := runtime.NumGoroutine()
	const flows = 100
	for range flows {
		c := greet()
		defer c.Close()
	}
	if n := w.r.Flows(); n != 1+flows {
		t.Fatalf("relay holds %d flows, want %d", n, 1+flows)
	}
	if after := runtime.NumGoroutine(); after > before+flows/10 {
		t.Errorf("goroutines %d -> %d with %d flows open", before, after, flows)
	}
}

// TestRelayGarbage: random and mangled TCP segments from the guest, with
// valid IP headers and checksums so that they reach the relay's parser,
// neither panic nor leave flows behind beyond what a flow's own ending
// clears.
func TestRelayGarbage(t *testing.T) {
	l, dst := hostListen(t, "tcp4")
	testnet.Serve(t, l, func(c net.Conn) { io.Copy(io.Discard, c) })
	w := newWorldLink(t, 0, nil, nil)
	port := netip.MustParseAddrPort(dst).Port()
	r := w.r
	rng := rand.New(rand.NewPCG(3, 4))
	src := tcpip.AddrFrom4([4]byte{10, 0, 2, 100})
	gwA := tcpip.AddrFrom4([4]byte{10, 0, 2, 2})
	for i := range 5000 {
		tcpLen := 20 + 4*rng.IntN(11)
		b := make([]byte, 20+tcpLen+rng.IntN(64))
		for j := 20; j < len(b); j++ {
			b[j] = byte(rng.Uint32())
		}
		tcp := header.TCP(b[20:])
		tcp.SetSourcePort(uint16(40000 + rng.IntN(4)))
		tcp.SetDestinationPort(port)
		b[20+12] = byte(rng.IntN(16)) << 4 // data offset, sometimes invalid
		flags := []header.TCPFlags{header.TCPFlagSyn, header.TCPFlagAck, header.TCPFlagAck | header.TCPFlagPsh,
			header.TCPFlagFin | header.TCPFlagAck, header.TCPFlagRst, header.TCPFlags(rng.Uint32())}
		b[20+13] = byte(flags[rng.IntN(len(flags))])
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
			SrcAddr: src, DstAddr: gwA})
		ip.SetChecksum(^ip.CalculateChecksum())
		if i%3 != 0 { // mostly valid checksums: get past the check
			tcp.SetChecksum(0)
			xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, gwA, uint16(len(b)-20))
			tcp.SetChecksum(^checksum.Checksum(b[20:], xsum))
		}
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		r.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
	}
	// The garbage did reach the relay: some of it opened flows.
	waitFor(t, "a flow from the garbage", func() bool { return w.stats().TCPFlows > 0 })
	// A real connection still works afterwards.
	c, err := w.guest.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("still here"))
	c.Close()
	w.close()
	if n := r.Flows(); n != 0 {
		t.Errorf("%d flows after Close", n)
	}
}

// TestRelayISN: initial sequence numbers follow RFC 6528: for one tuple
// they advance with a 4 us clock, and across tuples they are spread by a
// keyed hash rather than following the ports.
func TestRelayISN(t *testing.T) {
	r := &Relay{isnSeed: maphash.MakeSeed()}
	k := relayKey{netip.MustParseAddrPort("10.0.2.100:40000"), netip.MustParseAddrPort("198.18.0.1:80")}
	a := r.isn(k)
	time.Sleep(10 * time.Millisecond)
	if d := r.isn(k) - a; d < 2000 || d > 1_000_000 {
		t.Errorf("the ISN of one tuple moved by %d in 10ms, want about 2,500 (4 us ticks)", d)
	}
	lo, hi := ^uint32(0), uint32(0)
	for port := range uint16(100) {
		k.guest = netip.AddrPortFrom(k.guest.Addr(), 40000+port)
		v := uint32(r.isn(k))
		lo, hi = min(lo, v), max(hi, v)
	}
	if hi-lo < 1<<30 {
		t.Errorf("100 tuples' ISNs span %d, want them spread over the sequence space", hi-lo)
	}
}

// TestRelayBudget: many flows to hosts that do not read, and from hosts
// to a guest that does not read, hold no more in user space than
// Config.Buffer, all together; once the readers read, every byte
// arrives intact (the waiting flows are woken), and the budget is whole
// again when the flows end.
func TestRelayBudget(t *testing.T) {
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) { testRelayBudget(t, mode.mod) })
	}
}

func testRelayBudget(t *testing.T, mod func(*Config, *fakeGateway)) {
	const (
		flows  = 12
		size   = 4 << 20
		budget = 256 << 10
	)
	l, dst := stingyHost(t)
	w := newWorldLink(t, 0, nil, func(c *Config, gw *fakeGateway) {
		c.Buffer = budget
		if mod != nil {
			mod(c, gw)
		}
	})
	r := w.r
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	// Each guest connection says its index first; even ones then
	// upload to a host that does not read yet, odd ones download to a
	// guest that does not read yet.
	guests := make([]net.Conn, flows)
	hcs := make([]net.Conn, flows)
	wrote := make(chan error, flows)
	for i := range guests {
		c, err := w.guest.Dial("tcp", dst)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		guests[i] = c
		c.Write([]byte{byte(i)})
		l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		hc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer hc.Close()
		var id [1]byte
		hc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(hc, id[:]); err != nil || int(id[0]) != i {
			t.Fatalf("host conn %d says %d, %v", i, id[0], err)
		}
		hcs[i] = hc
		from := c
		if i%2 == 1 {
			from = hc
		}
		go func() {
			from.SetWriteDeadline(time.Now().Add(60 * time.Second))
			_, err := from.Write(data)
			if tc, ok := from.(*stack.TCPConn); ok {
				tc.CloseWrite()
			} else {
				from.(*net.TCPConn).CloseWrite()
			}
			wrote <- err
		}()
	}
	type holding struct {
		used, sum int  // budget accounted, and bytes in q and pend
		peek      bool // the flows peek (host data stays in the sockets)
		up, down  int  // flows stalled on a full host socket; downloads stalled, or read to the host FIN
	}
	held := func() (h holding) {
		r.budget.mu.Lock()
		h.used = r.budget.used
		r.budget.mu.Unlock()
		r.mu.Lock()
		fs := make([]*rflow, 0, len(r.flows))
		for _, f := range r.flows {
			fs = append(fs, f)
		}
		r.mu.Unlock()
		for _, f := range fs {
			f.mu.Lock()
			for _, v := range f.q {
				h.sum += v.Size()
			}
			h.sum += int(f.pend.Size())
			h.peek = h.peek || f.peek
			if f.hostFull {
				h.up++
			}
			if !f.hostFull && (f.sndWnd == 0 && f.unsent() || f.hostEOF) {
				// A download stalled on the guest's closed window, or
				// one the guest's receive buffer (which gVisor tunes
				// up to 4 MiB) took whole.
				h.down++
			}
			f.mu.Unlock()
		}
		return h
	}
	var last holding
	defer func() {
		if t.Failed() {
			t.Logf("relay: %+v", last)
		}
	}()
	waitFor(t, "the budget to be spent", func() bool {
		h := held()
		last = h
		if h.used > budget || h.sum > budget {
			t.Fatalf("the relay holds %d bytes (budget accounts %d), over its budget of %d", h.sum, h.used, budget)
		}
		if h.peek {
			// Downloads leave their data in the host sockets: only
			// the uploads take budget, half of it at most, and how
			// much of it depends on the segments the guest sends
			// into the windows left. The downloads have all stalled,
			// and the uploads too, or they hold pend's share (an
			// upload whose segments found the share spent comes back
			// only after the guest's backed-off retransmission
			// timeout, seconds under load: TestRelayBudgetFairness).
			return h.down == flows/2 && h.used > 0 && (h.up == flows/2 || h.used > budget/2-relayReadMax)
		}
		return h.used > budget-relayReadMax
	})
	// Everyone reads now; every byte arrives.
	var wg sync.WaitGroup
	for i := range guests {
		reader, what := hcs[i], "host"
		if i%2 == 1 {
			reader, what = guests[i], "guest"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			reader.SetReadDeadline(time.Now().Add(60 * time.Second))
			got, err := io.ReadAll(reader)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s %d read %d of %d bytes, equal %v, %v", what, i, len(got), len(data), bytes.Equal(got, data), err)
			}
		}()
	}
	wg.Wait()
	for range flows {
		if err := <-wrote; err != nil {
			t.Error(err)
		}
	}
	for i := range guests {
		guests[i].Close()
		hcs[i].Close()
	}
	waitFor(t, "the flows to end and the budget to be whole", func() bool {
		return r.Flows() == 0 && held().used == 0
	})
}

// TestRelayBudgetFairness: uploads to hosts that stopped reading hold at
// most half the budget, so a download through the relay still completes
// while they stall; and once the hosts read again, the uploads finish
// (their windows, closed by the budget, open again).
func TestRelayBudgetFairness(t *testing.T) {
	const (
		uploads = 8
		size    = 4 << 20
		budget  = 256 << 10
	)
	l, dst := stingyHost(t)
	w := newWorldLink(t, 0, nil, func(c *Config, _ *fakeGateway) { c.Buffer = budget })
	r := w.r
	data := bytes.Repeat([]byte("fairness"), size/8)
	accept := func() net.Conn {
		l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		hc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hc.Close() })
		return hc
	}
	var hosts []net.Conn
	wrote := make(chan error, uploads)
	for range uploads {
		c, err := w.guest.Dial("tcp", dst)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hosts = append(hosts, accept())
		go func() {
			err := writeProgress(c, data)
			c.(*stack.TCPConn).CloseWrite()
			wrote <- err
		}()
	}
	// The uploads stall: pend's share of the budget is spent, or each
	// upload finds its host socket full and is offered less than a
	// segment, or has handed all its data to the host socket's buffers.
	// (A guest whose segments found the share spent sends them again
	// after its retransmission timeout, backed off: under load, one
	// upload can take many seconds to reach its full host socket.)
	var state string
	defer func() {
		if t.Failed() {
			t.Logf("relay: %s", state)
		}
	}()
	waitFor(t, "the uploads to stall on pend's share of the budget", func() bool {
		r.budget.mu.Lock()
		usedPend := r.budget.usedPend
		r.budget.mu.Unlock()
		if usedPend > budget/2 {
			t.Fatalf("pend holds %d bytes, more than half the budget %d", usedPend, budget)
		}
		r.mu.Lock()
		fs := make([]*rflow, 0, len(r.flows))
		for _, f := range r.flows {
			fs = append(fs, f)
		}
		r.mu.Unlock()
		stalled := 0
		state = fmt.Sprintf("pend %d of %d;", usedPend, budget/2)
		for _, f := range fs {
			f.mu.Lock()
			if f.hostFull && f.lastWnd < uint32(f.mss) || f.guestFin {
				stalled++
			}
			state += fmt.Sprintf(" [full %v wnd %d pend %d fin %v]", f.hostFull, f.lastWnd, f.pend.Size(), f.guestFin)
			f.mu.Unlock()
		}
		return usedPend > budget/2-relayReadMax || stalled == uploads
	})
	// A download, while the uploads stall.
	c, err := w.guest.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hc := accept()
	go func() {
		writeProgress(hc, data)
		hc.(*net.TCPConn).CloseWrite()
	}()
	got, err := readProgress(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download during the stall: %d of %d bytes, %v", len(got), len(data), err)
	}
	// The hosts read again: every upload completes.
	var wg sync.WaitGroup
	for i, hc := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := readProgress(hc)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("upload %d: %d of %d bytes, %v", i, len(got), len(data), err)
			}
		}()
	}
	wg.Wait()
	for range uploads {
		if err := <-wrote; err != nil {
			t.Error(err)
		}
	}
}

// stingyHost listens on host loopback with small receive buffers, so that
// a host that does not read stops taking data after a little, whatever
// the kernel's autotuning would give it; it returns the listener and the
// address the guest dials for it.
func stingyHost(t *testing.T) (net.Listener, string) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 32<<10) })
		return serr
	}}
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, fmt.Sprintf("10.0.2.2:%d", l.Addr().(*net.TCPAddr).Port)
}
