//go:build linux

package integration

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/stack"
)

// TestRoaming moves the stack from one address to another while a
// connection is open, as a VPN client does when it roams: the old
// connection is reset (the kernel sees the RST), new dials leave from the
// new address, and routes can be changed at run time.
func TestRoaming(t *testing.T) {
	e := newEnv(t, stack.Config{}, 0)
	l := e.kernelListen(t, "tcp4", net.JoinHostPort(kernel4.Addr().String(), "0"))
	dst := l.Addr().(*net.TCPAddr).AddrPort()
	peers := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(peers)
				return
			}
			peers <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range peers {
			c.Close()
		}
	})
	old, err := e.st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	kOld := <-peers
	if got := kOld.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != stack4.Addr() {
		t.Fatalf("first connection from %s, want %s", got, stack4.Addr())
	}

	// Roam: a new address, then the old one goes.
	roamed := netip.MustParsePrefix("198.18.0.3/24")
	if err := e.st.AddAddress(roamed); err != nil {
		t.Fatal(err)
	}
	if err := e.st.RemoveAddress(stack4.Addr()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range e.st.Addresses() {
		got = append(got, p.String())
	}
	if diff := cmp.Diff([]string{roamed.String(), stack6.String()}, got); diff != "" {
		t.Errorf("Addresses after roaming (-want +got):\n%s", diff)
	}
	// The old connection fails clearly on both sides.
	old.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := old.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNABORTED) {
		t.Errorf("read on a connection whose address was removed = %v, want ECONNABORTED", err)
	}
	if _, err := old.Write([]byte("x")); err == nil {
		t.Errorf("write on a connection whose address was removed succeeded")
	}
	kOld.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := kOld.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("kernel read on the old connection = %v, want ECONNRESET (our RST)", err)
	}
	// A new dial leaves from the new address, and works.
	c, err := e.st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, dst)
	if err != nil {
		t.Fatalf("dial after roaming: %v", err)
	}
	defer c.Close()
	kNew := <-peers
	if got := kNew.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != roamed.Addr() {
		t.Errorf("new connection from %s, want %s", got, roamed.Addr())
	}
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	kNew.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(kNew, make([]byte, 2)); err != nil {
		t.Fatalf("kernel read on the new connection: %v", err)
	}

	// Routes at run time: without a route to the kernel's subnet the dial
	// fails at once; with it back, it works.
	if err := e.st.SetRoutes([]netip.Prefix{netip.MustParsePrefix("198.18.9.0/24")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, dst); !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("dial without a route = %v, want ENETUNREACH", err)
	}
	if err := e.st.SetRoutes([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}); err != nil {
		t.Fatal(err)
	}
	c2, err := e.st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, dst)
	if err != nil {
		t.Fatalf("dial with the route back: %v", err)
	}
	c2.Close()
	<-peers

	// Bad input.
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"remove unknown", e.st.RemoveAddress(netip.MustParseAddr("198.18.0.77")), "RemoveAddress 198.18.0.77: not an address of the stack"},
		{"add duplicate", e.st.AddAddress(roamed), "AddAddress 198.18.0.3/24: the stack already has 198.18.0.3"},
		{"add multicast", e.st.AddAddress(netip.MustParsePrefix("224.0.0.1/32")), "want a unicast address"},
		{"route with host bits", e.st.SetRoutes([]netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}), "routes[0] 198.18.0.1/24: host bits are set; did you mean 198.18.0.0/24?"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, tc.err, tc.want)
		}
	}
}
