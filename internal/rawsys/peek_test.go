//go:build linux

package rawsys

import (
	"bytes"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPeekOffsetFollowsDiscard checks what the TCP relay counts on from
// the kernel: Peek copies from the socket's peek offset (SO_PEEK_OFF) and
// moves it on, and Discard takes bytes off the queue and moves the offset
// back by as many, so that it keeps pointing at the same byte.
func TestPeekOffsetFollowsDiscard(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	rc, err := s.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	off := func(fd int) int {
		t.Helper()
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	rc.Read(func(s uintptr) bool {
		fd := int(s)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
			t.Skipf("no SO_PEEK_OFF for TCP on this kernel (Linux 6.9 has it): %v", err)
		}
		// All 1000 bytes are queued once one can be peeked at in full.
		b := make([]byte, 100)
		n, err := Peek(fd, b)
		if err == unix.EAGAIN {
			return false
		}
		if err != nil || n != 100 || !bytes.Equal(b, data[:100]) {
			t.Fatalf("first peek: %d bytes, %v", n, err)
		}
		if got := off(fd); got != 100 {
			t.Fatalf("peek offset after peeking 100: %d", got)
		}
		if n, err := Peek(fd, b); err != nil || n != 100 || !bytes.Equal(b, data[100:200]) {
			t.Fatalf("second peek: %d bytes, %v; not the next 100", n, err)
		}
		if n, err := Discard(fd, 150); err != nil || n != 150 {
			t.Fatalf("Discard(150) = %d, %v", n, err)
		}
		if got := off(fd); got != 50 {
			t.Fatalf("peek offset after peeking 200 and discarding 150: %d, want 50", got)
		}
		if n, err := Peek(fd, b); err != nil || n != 100 || !bytes.Equal(b, data[200:300]) {
			t.Fatalf("peek after Discard: %d bytes, %v; not bytes 200-299", n, err)
		}
		return true
	})
}
