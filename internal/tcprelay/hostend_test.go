//go:build linux

package tcprelay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/rawsys"
	"golang.org/x/sys/unix"
)

// sendOOB sends b on c as urgent data (MSG_OOB).
func sendOOB(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, unix.MSG_OOB, nil)
		return serr != unix.EAGAIN
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
}

// TestRelayUrgentData: a host that sends urgent data (MSG_OOB, as telnet
// and FTP do) has every byte reach the guest, in order and once. The relay
// keeps urgent data in line: out of line, the guest would miss the byte,
// and a peek flow would count its offsets wrong (the kernel's peek offset
// skips the byte that sequence numbers count), sending a byte twice. The
// read that stops at the urgent mark with data queued behind it brings no
// new event, so the flow must not take the short read for an empty socket.
func TestRelayUrgentData(t *testing.T) {
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			l, dst := hostListen(t, "tcp4")
			w := newWorldLink(t, 0, nil, mode.mod)
			done := make(chan error, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					done <- err
					return
				}
				defer c.Close()
				// Wait for the guest's go, so that the relay's flow
				// exists and every part below is a new event.
				var go_ [1]byte
				if _, err := io.ReadFull(c, go_[:]); err != nil {
					done <- err
					return
				}
				c.Write([]byte("01234"))
				sendOOB(t, c, []byte("5"))
				c.Write([]byte("6789abcd"))
				done <- c.(*net.TCPConn).CloseWrite()
			}()
			c, err := w.guest.Dial("tcp", dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("g"))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "0123456789abcd" {
				t.Fatalf("guest read %q, %v; want %q", got, err, "0123456789abcd")
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRelayHostResetAfterData: a host that writes and then aborts its
// connection (a reset) gets the guest a reset too, not the clean end of a
// complete answer, whether the reset is met by the read or peek that
// follows the data or comes while the guest's window is closed.
func TestRelayHostResetAfterData(t *testing.T) {
	for _, mode := range relayModes {
		for _, stalled := range []bool{false, true} {
			name := mode.name + "/open-window"
			if stalled {
				name = mode.name + "/closed-window"
			}
			t.Run(name, func(t *testing.T) {
				l, dst := hostListen(t, "tcp4")
				w := newWorldLink(t, 0, nil, mode.mod)
				size := 1000
				if stalled {
					size = 8 << 20 // more than the guest's buffers and the relay's read-ahead
				}
				data := bytes.Repeat([]byte("r"), size)
				accepted := make(chan *net.TCPConn, 1)
				go func() {
					c, err := l.Accept()
					if err != nil {
						close(accepted)
						return
					}
					accepted <- c.(*net.TCPConn)
				}()
				c, err := w.guest.Dial("tcp", dst)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				hc := <-accepted
				if hc == nil {
					t.Fatal("accept failed")
				}
				defer hc.Close()
				wrote := make(chan struct{})
				go func() {
					defer close(wrote)
					hc.SetWriteDeadline(time.Now().Add(30 * time.Second))
					hc.Write(data) // ends when the socket is reset
				}()
				if stalled {
					// The guest reads nothing: its window closes with
					// host data waiting.
					waitFor(t, "the guest's window to close", func() bool {
						f := oneFlow(w.r)
						if f == nil {
							return false
						}
						f.mu.Lock()
						defer f.mu.Unlock()
						return f.sndWnd == 0 && f.unsent()
					})
				} else {
					<-wrote
				}
				hc.SetLinger(0)
				hc.Close() // a reset, with data unsent or unread
				<-wrote
				waitFor(t, "the flow to end", func() bool { return w.r.Flows() == 0 })
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err = io.ReadAll(c)
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("guest read after the host's reset: %v, want ECONNRESET", err)
				}
			})
		}
	}
}

// TestRetransmitNothingInFlight: a partial ACK in fast recovery that
// acknowledges everything sent since a timeout took sndNxt back (so
// nothing is in flight, with host data still queued) retransmits nothing.
// A peek flow once peeked at 0 bytes there, and panicked (a CI run of
// TestRelayLossy under stress-ng).
func TestRetransmitNothingInFlight(t *testing.T) {
	for _, peek := range []bool{true, false} {
		f := &rflow{r: &Relay{}, peek: peek, qLen: 100, mss: 1460, fd: -1, state: stEstablished}
		f.sndUna, f.sndNxt, f.sndMax = 1000, 1000, 1500
		f.retransmit()
		if f.sndNxt != 1000 || f.qLen != 100 {
			t.Errorf("peek %v: retransmit with nothing in flight moved sndNxt to %d, qLen to %d", peek, f.sndNxt, f.qLen)
		}
	}
	if n, err := rawsys.Peek(-1, nil); n != 0 || err == nil {
		t.Errorf("Peek of no bytes = %d, %v; want an error (0 would read as a FIN)", n, err)
	}
}
