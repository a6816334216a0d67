//go:build linux

package conformance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// half-close: first the guest closes its sending half and then receives,
// then the peer does.
func halfCloseGuest(g *guestRun) (string, error) {
	// The guest closes first.
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(g.p.Limit))
	if err := sendStream(c, 4, g.p.Bytes); err != nil {
		return "", fmt.Errorf("guest first: send: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return "", err
	}
	if err := recvEOF(c, 5, g.p.Bytes); err != nil {
		return "", fmt.Errorf("guest first: %w", err)
	}
	// The peer closes first.
	c2, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(g.p.Limit))
	if err := recvEOF(c2, 6, g.p.Bytes); err != nil {
		return "", fmt.Errorf("peer first: %w", err)
	}
	if err := sendStream(c2, 7, g.p.Bytes); err != nil {
		return "", fmt.Errorf("peer first: send after its FIN: %w", err)
	}
	if err := c2.CloseWrite(); err != nil {
		return "", err
	}
	return "", nil
}

// recvEOF reads stream seed (n bytes) and then EOF.
func recvEOF(c net.Conn, seed byte, n int64) error {
	if err := recvStream(c, seed, n); err != nil {
		return err
	}
	if k, err := c.Read(make([]byte, 1)); k != 0 || err != io.EOF {
		return fmt.Errorf("after the stream: read %d bytes, %v; want EOF", k, err)
	}
	return nil
}

func halfCloseHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	c.SetDeadline(time.Now().Add(h.p.Limit))
	if err := recvEOF(c, 4, h.p.Bytes); err != nil {
		return "", fmt.Errorf("guest first: %w", err)
	}
	if err := sendStream(c, 5, h.p.Bytes); err != nil {
		return "", fmt.Errorf("guest first: send after its FIN: %w", err)
	}
	c.Close()
	c2, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	c2.SetDeadline(time.Now().Add(h.p.Limit))
	if err := sendStream(c2, 6, h.p.Bytes); err != nil {
		return "", fmt.Errorf("peer first: send: %w", err)
	}
	if err := c2.CloseWrite(); err != nil {
		return "", err
	}
	if err := recvEOF(c2, 7, h.p.Bytes); err != nil {
		return "", fmt.Errorf("peer first: %w", err)
	}
	return "", nil
}

// expectReset reads from c until an error, for at most d, and wants
// ECONNRESET.
func expectReset(c net.Conn, d time.Duration) (time.Duration, error) {
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c)
	took := time.Since(start)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return took, nil
	case err == nil:
		return took, fmt.Errorf("read EOF after %.2f s, want ECONNRESET", took.Seconds())
	}
	return took, fmt.Errorf("read: %w; want ECONNRESET", err)
}

// reset: the guest aborts, then the peer does.
func resetGuest(g *guestRun) (string, error) {
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	if _, err := c.Write([]byte("x")); err != nil {
		return "", err
	}
	if _, err := g.ctl.expect("accepted", 10*time.Second); err != nil {
		return "", err
	}
	c.SetLinger(0)
	c.Close()
	c2, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c2.Close()
	if _, err := c2.Write([]byte("y")); err != nil {
		return "", err
	}
	if _, err := g.ctl.expect("aborted", 10*time.Second); err != nil {
		return "", err
	}
	took, err := expectReset(c2, g.p.Limit)
	if err != nil {
		return "", fmt.Errorf("peer's reset: %w", err)
	}
	return fmt.Sprintf("the peer's reset arrived in %.0f ms", took.Seconds()*1000), nil
}

func resetHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return "", err
	}
	if err := h.ctl.event("accepted", ""); err != nil {
		return "", err
	}
	took, err := expectReset(c, h.p.Limit)
	if err != nil {
		return "", fmt.Errorf("guest's reset: %w", err)
	}
	c2, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	// Established at both ends before the abort: the guest's byte has
	// come through.
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c2, make([]byte, 1)); err != nil {
		return "", err
	}
	c2.SetLinger(0)
	c2.Close()
	if err := h.ctl.event("aborted", ""); err != nil {
		return "", err
	}
	return fmt.Sprintf("the guest's reset arrived in %.0f ms", took.Seconds()*1000), nil
}

// simultaneous-close: on "go" both sides send "bye" and close their
// sending half at once, read the other's "bye" and EOF, and wait for
// their socket to finish closing.
func simClose(c *net.TCPConn, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("bye")); err != nil {
		return err
	}
	if err := c.CloseWrite(); err != nil {
		return err
	}
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye" {
		return fmt.Errorf("read %q, %v; want \"bye\" and EOF", b, err)
	}
	// Both FINs are sent and received: the socket is done once ours is
	// acknowledged (TIME-WAIT, or CLOSED when the kernel has moved it to
	// a TIME-WAIT socket of its own).
	_, err = waitState(c, d, func(s uint8) bool { return s == tcpTimeWait || s == tcpClose })
	return err
}

func simCloseGuest(g *guestRun) (string, error) {
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := g.ctl.expect("go", 10*time.Second); err != nil {
		return "", err
	}
	if err := simClose(c, g.p.Limit); err != nil {
		return "", err
	}
	return "", nil
}

func simCloseHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	if err := h.ctl.event("go", ""); err != nil {
		return "", err
	}
	if err := simClose(c, h.p.Limit); err != nil {
		return "", err
	}
	return "", nil
}

// peer-vanishes: the peer closes a connection with unread data (a
// reset) while the guest uploads, then closes an idle one (a FIN).
func peerVanishesGuest(g *guestRun) (string, error) {
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	var vanished time.Time
	werr := make(chan error, 1)
	go func() {
		c.SetWriteDeadline(time.Now().Add(g.p.Limit + 10*time.Second))
		werr <- sendStream(c, 8, 1<<40)
	}()
	if _, err := g.ctl.expect("vanished", g.p.Limit); err != nil {
		return "", err
	}
	vanished = time.Now()
	var err1 error
	select {
	case err1 = <-werr:
	case <-time.After(g.p.Limit):
		c.Close()
		<-werr
		return "", fmt.Errorf("upload still going %v after the peer closed with unread data", g.p.Limit)
	}
	upload := time.Since(vanished)
	if !errors.Is(err1, syscall.ECONNRESET) && !errors.Is(err1, syscall.EPIPE) {
		return "", fmt.Errorf("upload ended with %v, want ECONNRESET or EPIPE", err1)
	}
	c2, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(g.p.Limit))
	start := time.Now()
	if n, err := c2.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return "", fmt.Errorf("idle connection: read %d bytes, %v; want EOF", n, err)
	}
	return fmt.Sprintf("upload stopped (%v) in %.0f ms, EOF in %.0f ms", errName(err1), upload.Seconds()*1000, time.Since(start).Seconds()*1000), nil
}

func errName(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "ECONNRESET"
	case errors.Is(err, syscall.EPIPE):
		return "EPIPE"
	}
	return fmt.Sprint(err)
}

func peerVanishesHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(h.p.Limit))
	if _, err := io.CopyN(io.Discard, c, 1<<20); err != nil {
		return "", err
	}
	// Unread data queues on; the close resets.
	if _, err := waitQuiet(c, h.p.Limit); err != nil {
		return "", err
	}
	c.Close()
	if err := h.ctl.event("vanished", ""); err != nil {
		return "", err
	}
	c2, err := h.accept(h.p.Limit + 10*time.Second)
	if err != nil {
		return "", err
	}
	c2.Close()
	return "", nil
}

// guest-vanishes: the guest reads for a while, then nft drops all of the
// flow's packets both ways and the guest closes its socket: the helper
// hears nothing more from the guest. The peer keeps sending and must see
// its connection end.
func guestVanishesGuest(g *guestRun) (string, error) {
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	defer nftClear()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.CopyN(io.Discard, c, 4<<20); err != nil {
		c.Close()
		return "", err
	}
	rules := map[string]string{
		"output": fmt.Sprintf("    tcp dport %d counter name dropped drop", g.port),
		"input":  fmt.Sprintf("    tcp sport %d counter name dropped drop", g.port),
	}
	if err := nftTable(rules); err != nil {
		c.Close()
		return "", err
	}
	c.SetLinger(0)
	c.Close()
	if err := g.ctl.event("vanished", ""); err != nil {
		return "", err
	}
	// Silent until the peer is done: the deferred nftClear would let
	// the kernel's resets out.
	v, err := g.ctl.expect("verdict", g.p.Limit+30*time.Second)
	if err != nil {
		return "", err
	}
	g.verdict = &v
	return "", nil
}

func guestVanishesHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	werr := make(chan error, 1)
	go func() { werr <- sendStream(c, 9, 1<<40) }()
	if _, err := h.ctl.expect("vanished", 30*time.Second); err != nil {
		return "", err
	}
	start := time.Now()
	// The end shows as a failed write, or as EOF or an error on read.
	rerr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		rerr <- err
	}()
	var how string
	select {
	case err := <-werr:
		how = fmt.Sprintf("write: %v", errName(err))
	case err := <-rerr:
		how = "read: EOF"
		if err != nil {
			how = "read: " + errName(err)
		}
	case <-time.After(h.p.Limit):
		return "", fmt.Errorf("connection still open %v after the guest vanished", h.p.Limit)
	}
	return fmt.Sprintf("connection ended %.1f s after the guest vanished (%s)", time.Since(start).Seconds(), how), nil
}
