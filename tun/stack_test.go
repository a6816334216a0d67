package tun

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const nicID = 1

// newStack returns a gVisor stack with ep as NIC 1, the given addresses on
// it, and default routes through it. The test destroys it at the end unless
// it does so itself first.
func newStack(t testing.TB, ep gvstack.LinkEndpoint, addrs ...netip.Prefix) *gvstack.Stack {
	t.Helper()
	s := gvstack.New(gvstack.Options{
		NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	t.Cleanup(s.Destroy)
	if err := s.CreateNIC(nicID, ep); err != nil {
		t.Fatalf("CreateNIC: %v", err)
	}
	for _, p := range addrs {
		pa := tcpip.ProtocolAddress{
			Protocol: protoOf(p.Addr()),
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(p.Addr().AsSlice()),
				PrefixLen: p.Bits(),
			},
		}
		if err := s.AddProtocolAddress(nicID, pa, gvstack.AddressProperties{}); err != nil {
			t.Fatalf("AddProtocolAddress(%v): %v", p, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	return s
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}

// echo serves l until it is closed, echoing every connection, and returns a
// function that closes l and waits for the server and its connections.
func echo(t testing.TB, l net.Listener) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	conns := make(chan net.Conn, 16)
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	return func() {
		l.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	}
}

// exchange writes n random bytes to c and checks that the same bytes come
// back, within a deadline.
func exchange(t *testing.T, c net.Conn, n int) {
	t.Helper()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	want := make([]byte, n)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		werr <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo differs from what was sent (%d bytes)", n)
	}
}

// dialTCP dials addr from s.
func dialTCP(t testing.TB, s *gvstack.Stack, addr netip.AddrPort) *gonet.TCPConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, s, fullAddr(addr), protoOf(addr.Addr()))
	if err != nil {
		t.Fatalf("dial %v from the stack: %v", addr, err)
	}
	return c
}

// listenTCP listens on addr in s.
func listenTCP(t testing.TB, s *gvstack.Stack, addr netip.AddrPort) *gonet.TCPListener {
	t.Helper()
	l, err := gonet.ListenTCP(s, fullAddr(addr), protoOf(addr.Addr()))
	if err != nil {
		t.Fatalf("listen on %v in the stack: %v", addr, err)
	}
	return l
}
