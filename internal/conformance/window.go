//go:build linux

package conformance

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// keepalive: the guest counts the ACKs that answer its probes (TCP_INFO's
// time since the last ACK falls back), then checks the connection with
// an echo.
func keepaliveGuest(g *guestRun) (string, error) {
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	for opt, v := range map[int]int{unix.TCP_KEEPIDLE: 1, unix.TCP_KEEPINTVL: 1, unix.TCP_KEEPCNT: 2} {
		if err := setsockoptInt(c, unix.IPPROTO_TCP, opt, v); err != nil {
			return "", fmt.Errorf("setsockopt: %w", err)
		}
	}
	if err := setsockoptInt(c, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1); err != nil {
		return "", fmt.Errorf("SO_KEEPALIVE: %w", err)
	}
	start := time.Now()
	answered := 0
	var last uint32
	for answered < g.p.Count {
		ti, err := tcpInfo(c)
		if err != nil {
			return "", err
		}
		if ti.State != tcpEstablished {
			_, rerr := c.Read(make([]byte, 1))
			return "", fmt.Errorf("connection %s after %.1f s with %d probes answered (read: %v)", stateName(ti.State), time.Since(start).Seconds(), answered, rerr)
		}
		if ti.Last_ack_recv+300 < last {
			answered++
		}
		last = ti.Last_ack_recv
		if time.Since(start) > g.p.Limit {
			return "", fmt.Errorf("%d of %d probes answered in %v", answered, g.p.Count, g.p.Limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "", fmt.Errorf("after the probes: write: %w", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		return "", fmt.Errorf("after the probes: echo %q, %v", line, err)
	}
	return fmt.Sprintf("%d probes answered in %.1f s, then echo", answered, took.Seconds()), nil
}

func keepaliveHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	c.SetDeadline(time.Now().Add(h.p.Limit + 10*time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("waiting for the echo: %w", err)
	}
	_, err = io.WriteString(c, line)
	return "", err
}

// zerowindow-down: the guest holds its window closed for Hold while the
// peer sends.
func zeroWindowDownGuest(g *guestRun) (string, error) {
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := holdAlive(c, g.p.Hold); err != nil {
		return "", err
	}
	queued, _ := inq(c)
	c.SetReadDeadline(time.Now().Add(g.p.Limit))
	if err := recvStream(c, 1, g.p.Bytes); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d MiB intact after a %.0f s zero window (%d KiB queued in the guest)", g.p.Bytes>>20, g.p.Hold.Seconds(), queued>>10), nil
}

// holdAlive waits for d while checking every second that c stays
// established.
func holdAlive(c interface {
	SyscallConn() (syscall.RawConn, error)
}, d time.Duration) error {
	start := time.Now()
	for time.Since(start) < d {
		time.Sleep(min(time.Second, d-time.Since(start)))
		var st uint8
		if err := control(c, func(fd int) error {
			ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err == nil {
				st = ti.State
			}
			return err
		}); err != nil {
			return err
		}
		if st != tcpEstablished {
			return fmt.Errorf("connection %s after %.1f s of zero window", stateName(st), time.Since(start).Seconds())
		}
	}
	return nil
}

func zeroWindowDownHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	c.SetWriteDeadline(time.Now().Add(h.p.Hold + h.p.Limit))
	if err := sendStream(c, 1, h.p.Bytes); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	return "", nil
}

// zerowindow-up: the peer holds its window closed for Hold while the
// guest sends. The guest watches its zero-window probes in TCP_INFO: an
// answered probe resets the unanswered count (tcpi_probes) and the time
// since the last ACK.
func zeroWindowUpGuest(g *guestRun) (string, error) {
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(g.p.Hold + g.p.Limit))
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		err := sendStream(c, 2, g.p.Bytes)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	answered, maxUnanswered := 0, 0
	var last uint32
	zero := false
	for {
		select {
		case err := <-werr:
			figs := fmt.Sprintf("%d zero-window probes answered, at most %d unanswered in a row", answered, maxUnanswered)
			if err != nil {
				return "", fmt.Errorf("send after %.1f s: %w (%s)", time.Since(start).Seconds(), err, figs)
			}
			if !zero {
				return "", fmt.Errorf("the window never closed (%s)", figs)
			}
			if answered < 3 || maxUnanswered >= 2 {
				return "", errors.New(figs)
			}
			return figs, nil
		case <-time.After(20 * time.Millisecond):
		}
		ti, err := tcpInfo(c)
		if err != nil {
			return "", err
		}
		if ti.Snd_wnd == 0 {
			zero = true
			if ti.Last_ack_recv+100 < last {
				answered++
			}
			maxUnanswered = max(maxUnanswered, int(ti.Probes))
		}
		last = ti.Last_ack_recv
	}
}

func zeroWindowUpHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	if err := holdAlive(c, h.p.Hold); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(h.p.Limit))
	if err := recvStream(c, 2, h.p.Bytes); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d MiB intact after a %.0f s zero window", h.p.Bytes>>20, h.p.Hold.Seconds()), nil
}

// lost-window-update: the guest's receive buffer fills; it then reads
// what is queued while nft drops its window updates, and lets them
// through again once one has been dropped: only a probe from the helper
// can restart the transfer.
func lostWindowUpdateGuest(g *guestRun) (string, error) {
	c, err := g.dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	defer nftClear()
	// Full when the queue stops growing for half a second.
	queued, err := waitQuiet(c, 20*time.Second)
	if err != nil {
		return "", err
	}
	rules := fmt.Sprintf("    tcp dport %d tcp flags & (syn|fin|rst|psh) == 0 tcp window != 0 counter name dropped drop", g.port)
	if err := nftTable(map[string]string{"output": rules}); err != nil {
		return "", err
	}
	sum := sha256.New()
	c.SetReadDeadline(time.Now().Add(g.p.Limit))
	if _, err := io.CopyN(sum, c, int64(queued)); err != nil {
		return "", fmt.Errorf("reading the queued %d bytes: %w", queued, err)
	}
	// The kernel sends its window update as the queue drains.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := nftDropped()
		if err != nil {
			return "", err
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			return "", errors.New("no window update was sent (nothing dropped in 5 s)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	dropped, _ := nftDropped()
	if err := nftClear(); err != nil {
		return "", err
	}
	start := time.Now()
	c.SetReadDeadline(start.Add(g.p.Limit))
	if _, err := io.CopyN(sum, c, 1); err != nil {
		return "", fmt.Errorf("no data in %v after the lost window update: %w", g.p.Limit, err)
	}
	resumed := time.Since(start)
	if _, err := io.CopyN(sum, c, g.p.Bytes-int64(queued)-1); err != nil {
		return "", fmt.Errorf("rest of the stream: %w", err)
	}
	if !bytes.Equal(sum.Sum(nil), streamHash(3, g.p.Bytes)) {
		return "", fmt.Errorf("%d bytes arrived with the wrong SHA-256", g.p.Bytes)
	}
	return fmt.Sprintf("resumed %.2f s after %d dropped window updates", resumed.Seconds(), dropped), nil
}

// waitQuiet waits until c's receive queue is non-empty and has not grown
// for half a second, and returns its length.
func waitQuiet(c interface {
	SyscallConn() (syscall.RawConn, error)
}, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	last, since := -1, time.Now()
	for {
		var n int
		if err := control(c, func(fd int) (err error) {
			n, err = unix.IoctlGetInt(fd, unix.SIOCINQ)
			return err
		}); err != nil {
			return 0, err
		}
		if n != last {
			last, since = n, time.Now()
		} else if n > 0 && time.Since(since) >= 500*time.Millisecond {
			return n, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("receive queue still changing (or empty: %d bytes) after %v", n, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lostWindowUpdateHost(h *hostRun) (string, error) {
	c, err := h.accept(10 * time.Second)
	if err != nil {
		return "", err
	}
	c.SetWriteDeadline(time.Now().Add(h.p.Limit + 30*time.Second))
	if err := sendStream(c, 3, h.p.Bytes); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	return "", nil
}
