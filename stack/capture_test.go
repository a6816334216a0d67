package stack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// pcapRecord is one record of a pcap stream.
type pcapRecord struct {
	origLen int
	data    []byte
}

// parsePcap parses a classic little-endian pcap stream of link type RAW.
func parsePcap(t *testing.T, b []byte) (snap int, recs []pcapRecord) {
	t.Helper()
	if len(b) < 24 {
		t.Fatalf("pcap stream of %d bytes has no header", len(b))
	}
	if m := binary.LittleEndian.Uint32(b); m != 0xa1b2c3d4 {
		t.Fatalf("magic %#x", m)
	}
	if lt := binary.LittleEndian.Uint32(b[20:]); lt != 101 {
		t.Fatalf("link type %d, want 101 (RAW)", lt)
	}
	snap = int(binary.LittleEndian.Uint32(b[16:]))
	b = b[24:]
	for len(b) > 0 {
		if len(b) < 16 {
			t.Fatalf("truncated record header")
		}
		incl, orig := int(binary.LittleEndian.Uint32(b[8:])), int(binary.LittleEndian.Uint32(b[12:]))
		if incl > snap || incl > orig || len(b) < 16+incl {
			t.Fatalf("bad record: incl %d orig %d snap %d, %d bytes left", incl, orig, snap, len(b)-16)
		}
		recs = append(recs, pcapRecord{orig, b[16 : 16+incl]})
		b = b[16+incl:]
	}
	return snap, recs
}

// tcpFlags lists "srcport>dstport FLAGS" for each IPv4 TCP record.
func tcpSegments(recs []pcapRecord) []string {
	var out []string
	for _, r := range recs {
		d := r.data
		if len(d) < 40 || d[0]>>4 != 4 || d[9] != 6 {
			continue
		}
		tcp := d[int(d[0]&0xf)*4:]
		flags := ""
		for i, name := range []string{"F", "S", "R", "P", "."} {
			if tcp[13]&(1<<i) != 0 {
				flags += name
			}
		}
		out = append(out, itoa(binary.BigEndian.Uint16(tcp[0:]))+">"+itoa(binary.BigEndian.Uint16(tcp[2:]))+" "+flags)
	}
	return out
}

func itoa(n uint16) string { return strconv.Itoa(int(n)) }

func TestCaptureLoopback(t *testing.T) {
	var buf bytes.Buffer
	st, err := New(Config{Capture: &buf, Ports: portalloc4Range(t, "41000-41009")})
	if err != nil {
		t.Fatal(err)
	}
	l, err := st.ListenTCPAddrPort(netip.MustParseAddrPort("127.0.0.1:7"), 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, netip.MustParseAddrPort("127.0.0.1:7"))
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddrPort().Port()
	if _, err := c.Write(bytes.Repeat([]byte("x"), 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	st.Close()
	stats := st.CaptureStats()
	n := buf.Len()
	snap, recs := parsePcap(t, buf.Bytes())
	if snap != DefaultCaptureSnapLen {
		t.Errorf("snap length %d, want %d", snap, DefaultCaptureSnapLen)
	}
	if stats.Err != nil || int(stats.Packets) != len(recs) {
		t.Errorf("CaptureStats %+v, file has %d records", stats, len(recs))
	}
	// The handshake is the first thing on the wire, with the pool's
	// port. Loopback shows each packet twice: sent, then received.
	segs := tcpSegments(recs)
	want := []string{"41000>7 S", "41000>7 S", "7>41000 S.", "7>41000 S.", "41000>7 .", "41000>7 ."}
	if port != 41000 || len(segs) < len(want) {
		t.Fatalf("port %d, segments %v", port, segs)
	}
	if diff := cmp.Diff(want, segs[:len(want)]); diff != "" {
		t.Errorf("handshake in the capture (-want +got):\n%s", diff)
	}
	// Nothing is written after Close.
	st.Close()
	if buf.Len() != n {
		t.Errorf("capture grew after Close")
	}
}

func portalloc4Range(t *testing.T, r string) (c portalloc.Config) {
	c.TCP.Range = mustRange(t, r)
	return c
}

func TestCaptureSnapLen(t *testing.T) {
	var buf bytes.Buffer
	st, err := New(Config{Capture: &buf, CaptureSnapLen: 48})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := st.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.WriteTo(make([]byte, 500), pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 600)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	snap, recs := parsePcap(t, buf.Bytes())
	if snap != 48 || len(recs) != 2 {
		t.Fatalf("snap %d, %d records; want 48, 2 (sent and received)", snap, len(recs))
	}
	for _, r := range recs {
		if len(r.data) != 48 || r.origLen != 20+8+500 {
			t.Errorf("record of %d bytes, original %d; want 48 of 528", len(r.data), r.origLen)
		}
	}
}

// failWriter fails every write after the first n bytes.
type failWriter struct{ n int }

var errDiskFull = errors.New("disk full")

func (w *failWriter) Write(b []byte) (int, error) {
	if len(b) > w.n {
		return 0, errDiskFull
	}
	w.n -= len(b)
	return len(b), nil
}

func TestCaptureErrors(t *testing.T) {
	// A writer that fails at once: New says so.
	if _, err := New(Config{Capture: &failWriter{}}); !errors.Is(err, errDiskFull) || !strings.Contains(err.Error(), "Config.Capture: writing the pcap file header") {
		t.Errorf("New with a failing writer = %v", err)
	}
	for _, snap := range []int{-1, 262145} {
		if _, err := New(Config{Capture: io.Discard, CaptureSnapLen: snap}); err == nil || !strings.Contains(err.Error(), "Config.CaptureSnapLen") || !strings.Contains(err.Error(), "want 0 (default 262144) or 1-262144") {
			t.Errorf("CaptureSnapLen %d: %v", snap, err)
		}
	}
	// A writer that fails later stops the capture, not the traffic.
	st, err := New(Config{Capture: &failWriter{n: 24 + 16 + 28}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pc, err := st.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := pc.WriteTo([]byte{byte(i)}, pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if _, _, err := pc.ReadFrom(make([]byte, 10)); err != nil {
			t.Fatalf("datagram %d after the capture failed: %v", i, err)
		}
	}
	if s := st.CaptureStats(); s.Packets != 0 || !errors.Is(s.Err, errDiskFull) {
		t.Errorf("CaptureStats = %+v, want 0 packets and the write error", s)
	}
}

// takeEven is an inline dispatcher that takes IPv4 packets with an even
// identification field and declines the others.
type takeEven struct {
	inline, declined, network int
}

func (d *takeEven) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {
	d.network++
}
func (d *takeEven) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}
func (d *takeEven) DeliverInline(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool {
	if pkt.Data().AsRange().ToSlice()[5]%2 == 0 {
		d.inline++
		return true
	}
	return false
}
func (d *takeEven) DeliverDeclined(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {
	d.declined++
}

// TestCaptureInline checks that a Capture between a device and an inline
// dispatcher passes the inline path through and records each packet
// once, whichever way it goes.
func TestCaptureInline(t *testing.T) {
	var buf bytes.Buffer
	lower := channel.New(4, 1500, "")
	defer lower.Close()
	c, err := NewCapture(lower, &buf, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	up := &takeEven{}
	c.Attach(up)
	for id := range 4 {
		b := make([]byte, 20)
		b[0], b[5] = 0x45, byte(id)
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		// What tun's readers do: offer inline, else hand off.
		if !c.DeliverInline(header.IPv4ProtocolNumber, pkt) {
			c.DeliverDeclined(header.IPv4ProtocolNumber, pkt)
		}
		pkt.DecRef()
	}
	if up.inline != 2 || up.declined != 2 || up.network != 0 {
		t.Errorf("upper got %+v; want 2 inline, 2 declined", *up)
	}
	c.Stop()
	if _, recs := parsePcap(t, buf.Bytes()); len(recs) != 4 {
		t.Errorf("%d records, want 4", len(recs))
	}
	if _, err := NewCapture(lower, &buf, -5, nil); err == nil || !strings.Contains(err.Error(), "snap length -5: want 0 (default 262144) or 1-262144") {
		t.Errorf("NewCapture(-5) = %v", err)
	}
}
