package errno

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/windows"
)

// TestWinsockValues checks the table against x/sys/windows.
func TestWinsockValues(t *testing.T) {
	want := map[syscall.Errno]syscall.Errno{
		syscall.EACCES:        windows.WSAEACCES,
		syscall.EINVAL:        windows.WSAEINVAL,
		syscall.EAGAIN:        windows.WSAEWOULDBLOCK,
		syscall.EALREADY:      windows.WSAEALREADY,
		syscall.EDESTADDRREQ:  windows.WSAEDESTADDRREQ,
		syscall.EMSGSIZE:      windows.WSAEMSGSIZE,
		syscall.EOPNOTSUPP:    windows.WSAEOPNOTSUPP,
		syscall.EAFNOSUPPORT:  windows.WSAEAFNOSUPPORT,
		syscall.EADDRINUSE:    windows.WSAEADDRINUSE,
		syscall.EADDRNOTAVAIL: windows.WSAEADDRNOTAVAIL,
		syscall.ENETUNREACH:   windows.WSAENETUNREACH,
		syscall.ECONNABORTED:  windows.WSAECONNABORTED,
		syscall.ECONNRESET:    windows.WSAECONNRESET,
		syscall.ENOBUFS:       windows.WSAENOBUFS,
		syscall.EISCONN:       windows.WSAEISCONN,
		syscall.ENOTCONN:      windows.WSAENOTCONN,
		syscall.EPIPE:         windows.WSAESHUTDOWN,
		syscall.ETIMEDOUT:     windows.WSAETIMEDOUT,
		syscall.ECONNREFUSED:  windows.WSAECONNREFUSED,
		syscall.EHOSTDOWN:     windows.WSAEHOSTDOWN,
		syscall.EHOSTUNREACH:  windows.WSAEHOSTUNREACH,
	}
	for e, w := range want {
		if got := winsock[e]; got != w {
			t.Errorf("winsock[%v] = %d, want %d", e, got, w)
		}
	}
	if len(winsock) != len(want) {
		t.Errorf("winsock has %d entries, checked %d", len(winsock), len(want))
	}
}

// TestMatchesNet checks that a refused connection from package net and
// ustack's refusal match the same errors.
func TestMatchesNet(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, netErr := net.Dial("tcp", addr)
	ours := Of(syscall.ECONNREFUSED)
	var w syscall.Errno
	if !errors.As(netErr, &w) {
		t.Fatalf("net.Dial to a closed port: %v, no errno", netErr)
	}
	if !errors.Is(ours, w) {
		t.Errorf("ustack's refusal does not match net's errno %d", w)
	}
}
