package stack

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/ustacknet/ustack/portalloc"
	"golang.org/x/sys/windows"
)

// TestWinsockErrors checks that errors from the stack match the Winsock
// errors package net reports on Windows, as well as the portable names.
func TestWinsockErrors(t *testing.T) {
	st := newLoopback(t, "43100-43101", "")
	_, err := st.Dial("tcp", "127.0.0.1:9")
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, windows.WSAECONNREFUSED) {
		t.Errorf("dial to a closed port: %v, want ECONNREFUSED and WSAECONNREFUSED", err)
	}
	l, err := st.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	serveTCP(t, l, func(c net.Conn) {})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 2 {
		c, err := st.Dial("tcp", "127.0.0.1:80")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	_, err = st.Dial("tcp", "127.0.0.1:80")
	if !errors.Is(err, syscall.EADDRNOTAVAIL) || !errors.Is(err, windows.WSAEADDRNOTAVAIL) || !errors.Is(err, portalloc.ErrExhausted) {
		t.Errorf("dial with the range used up: %v, want EADDRNOTAVAIL, WSAEADDRNOTAVAIL and ErrExhausted", err)
	}
}
