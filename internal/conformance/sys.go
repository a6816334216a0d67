//go:build linux

package conformance

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kernel TCP states as TCP_INFO reports them (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpFinWait1    = 4
	tcpFinWait2    = 5
	tcpTimeWait    = 6
	tcpClose       = 7
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpClosing     = 11
)

// stream is a deterministic byte stream: both ends can hash it.
func stream(seed byte) io.Reader { return rand.NewChaCha8([32]byte{seed}) }

// sendStream writes n bytes of stream seed to w.
func sendStream(w io.Writer, seed byte, n int64) error {
	_, err := io.CopyN(w, stream(seed), n)
	return err
}

// recvStream reads n bytes from r and checks them against stream seed.
func recvStream(r io.Reader, seed byte, n int64) error {
	h := sha256.New()
	got, err := io.CopyN(h, r, n)
	if err != nil {
		return fmt.Errorf("read %d of %d bytes: %w", got, n, err)
	}
	if want := streamHash(seed, n); !bytes.Equal(h.Sum(nil), want) {
		return fmt.Errorf("%d bytes arrived with the wrong SHA-256", n)
	}
	return nil
}

func streamHash(seed byte, n int64) []byte {
	h := sha256.New()
	io.CopyN(h, stream(seed), n)
	return h.Sum(nil)
}

// control runs fn on c's descriptor.
func control(c syscall.Conn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func tcpInfo(c *net.TCPConn) (*unix.TCPInfo, error) {
	var ti *unix.TCPInfo
	err := control(c, func(fd int) (err error) {
		ti, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err
	})
	return ti, err
}

// inq is how many bytes wait in c's receive queue.
func inq(c *net.TCPConn) (int, error) {
	var n int
	err := control(c, func(fd int) (err error) {
		n, err = unix.IoctlGetInt(fd, unix.SIOCINQ)
		return err
	})
	return n, err
}

func setsockoptInt(c *net.TCPConn, level, opt, v int) error {
	return control(c, func(fd int) error { return unix.SetsockoptInt(fd, level, opt, v) })
}

// waitState polls c's TCP state until ok accepts it, for at most d, and
// returns the last state seen.
func waitState(c *net.TCPConn, d time.Duration, ok func(state uint8) bool) (uint8, error) {
	deadline := time.Now().Add(d)
	for {
		ti, err := tcpInfo(c)
		if err != nil {
			return 0, err
		}
		if ok(ti.State) {
			return ti.State, nil
		}
		if time.Now().After(deadline) {
			return ti.State, fmt.Errorf("TCP state %s after %v", stateName(ti.State), d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stateName(s uint8) string {
	names := map[uint8]string{1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2", 6: "TIME-WAIT",
		7: "CLOSED", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING"}
	if n, ok := names[s]; ok {
		return n
	}
	return strconv.Itoa(int(s))
}

// nft loads an nft(8) script. The guest runs in a network namespace of
// its own, so the table it adds touches nothing else.
func nft(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft: %v: %s\nscript:\n%s", err, bytes.TrimSpace(out), script)
	}
	return nil
}

// nftTable replaces the guest's conformance table with one holding the
// given chain bodies (hook "input" or "output" -> rules).
func nftTable(chains map[string]string) error {
	var b strings.Builder
	b.WriteString("table inet conformance {}\ndelete table inet conformance\ntable inet conformance {\n")
	b.WriteString("  counter dropped {}\n  counter seen {}\n")
	for _, hook := range []string{"input", "output"} {
		if rules, ok := chains[hook]; ok {
			fmt.Fprintf(&b, "  chain %s { type filter hook %s priority -150; policy accept;\n%s\n  }\n", hook, hook, rules)
		}
	}
	b.WriteString("}\n")
	return nft(b.String())
}

// nftClear removes the guest's conformance table.
func nftClear() error {
	return nft("table inet conformance {}\ndelete table inet conformance\n")
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)

// nftDropped reads the conformance table's "dropped" counter.
func nftDropped() (int, error) { return nftCounter("dropped") }

// nftCounter reads a named counter of the conformance table: "dropped"
// or "seen".
func nftCounter(name string) (int, error) {
	out, err := exec.Command("nft", "list", "counter", "inet", "conformance", name).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("nft list counter: %v: %s", err, bytes.TrimSpace(out))
	}
	m := packetsRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("nft list counter: no packet count in %q", out)
	}
	return strconv.Atoi(string(m[1]))
}

// sourceFor is the guest's source address toward dst.
func sourceFor(dst string) (netip.Addr, error) {
	c, err := net.Dial("udp4", dst)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// synSender sends bare TCP SYNs over IPv4 from a raw socket.
type synSender struct{ fd int }

func newSynSender() (*synSender, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("raw socket (needs CAP_NET_RAW): %w", err)
	}
	return &synSender{fd}, nil
}

func (s *synSender) Close() error { return unix.Close(s.fd) }

// send sends a SYN from src:sport to dst:dport with an MSS option.
func (s *synSender) send(src, dst netip.Addr, sport, dport uint16, seq uint32, mss uint16) error {
	h := make([]byte, 24)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], seq)
	h[12] = 6 << 4 // data offset: 6 words
	h[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(h[14:], 64240)
	copy(h[20:], []byte{2, 4, byte(mss >> 8), byte(mss)})
	binary.BigEndian.PutUint16(h[16:], tcpChecksum(src, dst, h))
	sa := &unix.SockaddrInet4{Addr: dst.As4()}
	return unix.Sendto(s.fd, h, 0, sa)
}

// tcpChecksum is the TCP checksum of seg over the IPv4 pseudo-header.
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	s4, d4 := src.As4(), dst.As4()
	add(s4[:])
	add(d4[:])
	sum += unix.IPPROTO_TCP + uint32(len(seg))
	add(seg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// segWatch counts the TCP segments that arrive from one source port, as
// the guest's interfaces receive them. A packet socket with
// PACKET_VNET_HDR reports each packet's GSO segment size, so one large
// packet built from many segments (a helper that writes GSO packets to
// its TUN device) counts as those segments.
type segWatch struct {
	fd    int
	sport uint16
	stop  chan struct{} // closed by close
	done  chan struct{} // closed when the reader returns

	// Written by the reader, read after done closes.
	segs, bytes int64
	maxSeg      int
	err         error
}

func newSegWatch(sport uint16) (*segWatch, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		return nil, fmt.Errorf("packet socket (needs CAP_NET_RAW): %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("PACKET_VNET_HDR: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	w := &segWatch{fd: fd, sport: sport, stop: make(chan struct{}), done: make(chan struct{})}
	go w.read()
	return w, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// close stops the reader (within its 100 ms receive timeout) and
// returns the segments and bytes counted, and the largest segment.
func (w *segWatch) close() (segs, bytes int64, maxSeg int, err error) {
	close(w.stop)
	<-w.done
	unix.Close(w.fd)
	return w.segs, w.bytes, w.maxSeg, w.err
}

func (w *segWatch) read() {
	defer close(w.done)
	b := make([]byte, 70000)
	for {
		n, from, err := unix.Recvfrom(w.fd, b, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			if w.stopped() {
				return
			}
			continue
		}
		if err != nil {
			if !w.stopped() {
				w.err = err
			}
			return
		}
		// The virtio header, then the link header: none on a TUN
		// device, Ethernet on a TAP device or loopback.
		link := 14
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Hatype == unix.ARPHRD_NONE {
			link = 0
		}
		if n < 10+link+40 {
			continue
		}
		gsoType, gsoSize := b[1], int(binary.LittleEndian.Uint16(b[4:]))
		ip := b[10+link : n]
		if ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_TCP {
			continue
		}
		ihl := int(ip[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if gsoType != 0 || total == 0 || total > len(ip) {
			total = len(ip)
		}
		if len(ip) < ihl+20 {
			continue
		}
		tcp := ip[ihl:total]
		if binary.BigEndian.Uint16(tcp[0:]) != w.sport {
			continue
		}
		payload := len(tcp) - int(tcp[12]>>4)*4
		if payload <= 0 {
			continue
		}
		w.bytes += int64(payload)
		if gsoType != 0 && gsoSize > 0 && payload > gsoSize {
			w.segs += int64((payload + gsoSize - 1) / gsoSize)
			w.maxSeg = max(w.maxSeg, gsoSize)
		} else {
			w.segs++
			w.maxSeg = max(w.maxSeg, payload)
		}
	}
}

func (w *segWatch) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
	}
	return false
}
