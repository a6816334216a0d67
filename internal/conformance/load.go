//go:build linux

package conformance

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// syn-flood: SYNs from a raw socket whose answers the guest's kernel
// would reset (nft drops those resets), so each handshake stays half
// open in the helper.
func synFloodGuest(g *guestRun) (string, error) {
	defer nftClear()
	src, err := sourceFor(g.dataAddr())
	if err != nil {
		return "", err
	}
	dst, err := netip.ParseAddr(g.host)
	if err != nil {
		return "", fmt.Errorf("peer address %q: %w", g.host, err)
	}
	if err := nftTable(map[string]string{
		"output": fmt.Sprintf("    tcp dport %d tcp flags rst counter name dropped drop", g.port),
		"input":  fmt.Sprintf("    tcp sport %d tcp flags & (syn|ack) == syn|ack counter name seen", g.port),
	}); err != nil {
		return "", err
	}
	s, err := newSynSender()
	if err != nil {
		return "", err
	}
	defer s.Close()
	for i := 0; i < g.p.Count; i++ {
		if err := s.send(src, dst, uint16(20000+i), uint16(g.port), rand.Uint32(), 1460); err != nil {
			return "", fmt.Errorf("SYN %d: %w", i, err)
		}
	}
	if err := g.ctl.event("flood-end", ""); err != nil {
		return "", err
	}
	// The helper has answered once the count of SYN-ACKs stops growing.
	synacks, err := quietCounter("seen", g.p.Limit)
	if err != nil {
		return "", err
	}
	if err := g.ctl.event("flooded", fmt.Sprintf("%d SYNs, %d SYN-ACKs", g.p.Count, synacks)); err != nil {
		return "", err
	}
	if _, err := g.ctl.expect("released", g.p.Limit+10*time.Second); err != nil {
		return "", err
	}
	nftClear()
	c, err := g.dial()
	if err != nil {
		return "", fmt.Errorf("a new connection after the flood: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "hi\n" {
		return "", fmt.Errorf("a new connection after the flood: read %q, %v", line, err)
	}
	return "", nil
}

// quietCounter waits until the nft counter name has not changed for
// half a second, for at most d, and returns it.
func quietCounter(name string, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	last, since := -1, time.Now()
	for {
		n, err := nftCounter(name)
		if err != nil {
			return 0, err
		}
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= 500*time.Millisecond {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("counter %s still changing after %v", name, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func synFloodHost(h *hostRun) (string, error) {
	var accepted, open atomic.Int64
	var after atomic.Bool // the flood is over: greet new connections
	greeted := make(chan struct{}, 1)
	h.l.SetDeadline(time.Time{})
	go func() {
		for {
			c, err := h.l.AcceptTCP()
			if err != nil {
				return
			}
			h.track(c)
			if after.Load() {
				io.WriteString(c, "hi\n")
				select {
				case greeted <- struct{}{}:
				default:
				}
				continue
			}
			accepted.Add(1)
			open.Add(1)
			go func() {
				io.Copy(io.Discard, c)
				open.Add(-1)
			}()
		}
	}()
	if _, err := h.ctl.expect("flood-end", 30*time.Second); err != nil {
		return "", err
	}
	start := time.Now()
	m, err := h.ctl.expect("flooded", h.p.Limit+5*time.Second)
	if err != nil {
		return "", err
	}
	for open.Load() > 0 {
		if time.Since(start) > h.p.Limit {
			return "", fmt.Errorf("%d of %d host connections (for %s) still open %v after the flood", open.Load(), accepted.Load(), m.Value, h.p.Limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	after.Store(true)
	if err := h.ctl.event("released", ""); err != nil {
		return "", err
	}
	select {
	case <-greeted:
	case <-time.After(15 * time.Second):
		return "", errors.New("no new connection after the flood")
	}
	return fmt.Sprintf("%s, %d host connections, all closed %.1f s after the flood; a new connection then works", m.Value, accepted.Load(), took.Seconds()), nil
}

// mss-1: nft rewrites the MSS option of the guest's SYN to 1.
func mss1Guest(g *guestRun) (string, error) {
	defer nftClear()
	if err := nftTable(map[string]string{"output": fmt.Sprintf("    tcp dport %d tcp flags syn tcp option maxseg size set 1", g.port)}); err != nil {
		return "", err
	}
	w, err := newSegWatch(uint16(g.port))
	if err != nil {
		return "", err
	}
	c, err := g.dial()
	if err != nil {
		w.close()
		return "", err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(g.p.Limit))
	start := time.Now()
	rerr := recvStream(c, 10, g.p.Bytes)
	took := time.Since(start)
	segs, n, maxSeg, werr := w.close()
	if rerr != nil {
		return "", fmt.Errorf("after %.1f s (%d segments seen): %w", took.Seconds(), segs, rerr)
	}
	if werr != nil {
		return "", fmt.Errorf("packet socket: %w", werr)
	}
	if segs == 0 {
		return "", errors.New("the packet socket saw no data segments")
	}
	mean := float64(n) / float64(segs)
	figs := fmt.Sprintf("%d KiB in %d segments (%.0f bytes each, at most %d) in %.2f s", g.p.Bytes>>10, segs, mean, maxSeg, took.Seconds())
	if mean < 32 {
		return "", errors.New(figs + ": below 32 bytes per segment")
	}
	if maxSeg > 536 {
		return "", errors.New(figs + ": segments above the MSS (a floor may raise 1, but not past 536)")
	}
	return figs, nil
}

func mss1Host(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	c.SetWriteDeadline(time.Now().Add(h.p.Limit))
	if err := sendStream(c, 10, h.p.Bytes); err != nil {
		return "", err
	}
	return "", nil
}

// stalled-flows: Count flows, each written to until the helper's window
// is zero, to a peer that never reads.
func stalledGuest(g *guestRun) (string, error) {
	var conns []*net.TCPConn
	var wg sync.WaitGroup
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	buf := make([]byte, 64<<10)
	for i := 0; i < g.p.Count; i++ {
		c, err := g.dial()
		if err != nil {
			return "", fmt.Errorf("flow %d: %w", i, err)
		}
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	start := time.Now()
	for {
		stalled := 0
		var acked uint64
		for _, c := range conns {
			ti, err := tcpInfo(c)
			if err != nil {
				return "", err
			}
			if ti.State != tcpEstablished {
				return "", fmt.Errorf("a flow went %s", stateName(ti.State))
			}
			if ti.Snd_wnd == 0 {
				stalled++
			}
			acked += ti.Bytes_acked
		}
		if stalled == len(conns) {
			figs := fmt.Sprintf("%d flows stalled in %.1f s, %d MiB taken from the guest", stalled, time.Since(start).Seconds(), acked>>20)
			if err := g.ctl.event("stalled", figs); err != nil {
				return "", err
			}
			return figs, nil
		}
		if time.Since(start) > g.p.Limit {
			return "", fmt.Errorf("%d of %d flows stalled after %v", stalled, len(conns), g.p.Limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stalledHost(h *hostRun) (string, error) {
	for i := 0; i < h.p.Count; i++ {
		if _, err := h.accept(h.p.Limit); err != nil {
			return "", fmt.Errorf("flow %d: %w", i, err)
		}
	}
	if _, err := h.ctl.expect("stalled", h.p.Limit+10*time.Second); err != nil {
		return "", err
	}
	h.mark("stalled")
	return "", nil
}

// bulk-loss: both ways at once with nft dropping LossPct of the flow's
// packets each way.
func bulkLossGuest(g *guestRun) (string, error) {
	defer nftClear()
	rules := map[string]string{
		"output": fmt.Sprintf("    tcp dport %d numgen random mod 1000 < %d counter name dropped drop", g.port, g.p.LossPct*10),
		"input":  fmt.Sprintf("    tcp sport %d numgen random mod 1000 < %d counter name dropped drop", g.port, g.p.LossPct*10),
	}
	if err := nftTable(rules); err != nil {
		return "", err
	}
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(g.p.Limit))
	up, down, err := exchange(c, 11, 12, g.p.Bytes)
	if err != nil {
		return "", err
	}
	dropped, _ := nftDropped()
	mbps := func(d time.Duration) float64 { return float64(g.p.Bytes) * 8 / d.Seconds() / 1e6 }
	return fmt.Sprintf("%d MiB each way intact; up %.0f Mbit/s, down %.0f Mbit/s; %d packets dropped", g.p.Bytes>>20, mbps(up), mbps(down), dropped), nil
}

// exchange sends n bytes of stream out (then a FIN) while receiving n
// bytes of stream in (then EOF), and returns how long each took.
func exchange(c *net.TCPConn, out, in byte, n int64) (time.Duration, time.Duration, error) {
	start := time.Now()
	var upTook time.Duration
	werr := make(chan error, 1)
	go func() {
		err := sendStream(c, out, n)
		if err == nil {
			err = c.CloseWrite()
		}
		upTook = time.Since(start)
		werr <- err
	}()
	rerr := recvEOF(c, in, n)
	downTook := time.Since(start)
	if rerr != nil {
		c.Close()
	}
	if err := <-werr; err != nil {
		return 0, 0, fmt.Errorf("send: %w", err)
	}
	if rerr != nil {
		return 0, 0, fmt.Errorf("receive: %w", rerr)
	}
	return upTook, downTook, nil
}

func bulkLossHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	c.SetDeadline(time.Now().Add(h.p.Limit))
	if _, _, err := exchange(c, 12, 11, h.p.Bytes); err != nil {
		return "", err
	}
	return "", nil
}

// udp-burst: Count sockets, one datagram each, back to back.
func udpBurstGuest(g *guestRun) (string, error) {
	dst, err := net.ResolveUDPAddr("udp", net.JoinHostPort(g.host, strconv.Itoa(g.udpPort)))
	if err != nil {
		return "", err
	}
	conns := make([]*net.UDPConn, 0, g.p.Count)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < g.p.Count; i++ {
		c, err := net.DialUDP("udp", nil, dst)
		if err != nil {
			return "", fmt.Errorf("socket %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	failed := 0
	for _, c := range conns {
		if _, err := c.Write([]byte("x")); err != nil {
			failed++
		}
	}
	if err := g.ctl.event("sent", strconv.Itoa(g.p.Count-failed)); err != nil {
		return "", err
	}
	if failed > 0 {
		return fmt.Sprintf("%d sends failed in the guest", failed), nil
	}
	return "", nil
}

func udpBurstHost(h *hostRun) (string, error) {
	// The socket's buffer holds the whole burst, so that what is counted
	// is what the helper delivered (the default buffer holds about 200).
	if err := control(h.udp, func(fd int) error {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) == nil {
			return nil
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<20)
	}); err != nil {
		return "", fmt.Errorf("receive buffer: %w", err)
	}
	var got atomic.Int64
	var last atomic.Int64 // UnixNano of the last arrival
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 64)
		for {
			if _, _, err := h.udp.ReadFromUDP(b); err != nil {
				return
			}
			got.Add(1)
			last.Store(time.Now().UnixNano())
		}
	}()
	defer func() { h.udp.Close(); <-done }()
	if _, err := h.ctl.expect("sent", 60*time.Second); err != nil {
		return "", err
	}
	// Done when nothing has arrived for half a second.
	start := time.Now()
	last.CompareAndSwap(0, start.UnixNano())
	for time.Since(time.Unix(0, last.Load())) < 500*time.Millisecond {
		if time.Since(start) > h.p.Limit {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	n := int(got.Load())
	figs := fmt.Sprintf("%d of %d datagrams arrived (%.0f%%)", n, h.p.Count, 100*float64(n)/float64(h.p.Count))
	if n < h.p.Min {
		return "", fmt.Errorf("%s; want at least %d", figs, h.p.Min)
	}
	return figs, nil
}
