//go:build linux

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"github.com/ustacknet/ustack/internal/rawsys"
	"golang.org/x/sys/unix"
)

// The host dialer: the Gateway's connections and sockets on the host,
// from the outbound addresses if set (Config.OutboundAddrs).

// hostDialer opens the gateway's host sockets, from the outbound
// addresses if set.
type hostDialer struct{ out4, out6 netip.Addr }

var (
	netDialer = net.Dialer{KeepAlive: -1}
	// boundDialer binds the source address but leaves the port to
	// connect (bindNoPort).
	boundDialer = net.Dialer{KeepAlive: -1, Control: func(network, address string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			if strings.HasPrefix(network, "tcp") {
				bindNoPort(int(fd))
			}
		})
	}}
)

// local returns the address to bind for a connection to a, or none.
func (d hostDialer) local(a netip.Addr) netip.Addr {
	if a.IsLoopback() {
		return netip.Addr{}
	}
	if a.Is4() {
		return d.out4
	}
	return d.out6
}

// bindNoPort asks a TCP socket's bind to leave the port to connect, so
// that a bound source does not reserve a port for every destination at
// once. Best effort: without it the bind picks the port.
func bindNoPort(fd int) {
	unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
}

// dial is Config.Dial's default.
func (d hostDialer) dial(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
	local := d.local(addr.Addr().Unmap())
	if !local.IsValid() {
		// Not Dialer.DialTCP/DialUDP: they always bind, to the wildcard
		// address when given none, which for TCP picks the port at bind
		// time, unique across all destinations.
		return netDialer.DialContext(ctx, network, addr.String())
	}
	dd := boundDialer
	if network == "udp" {
		dd.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	} else {
		dd.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	return dd.DialContext(ctx, network, addr.String())
}

// socket opens a non-blocking TCP socket to addr, from the outbound
// address if one is set, and starts its connect; done reports that the
// connect finished at once (rawsys.ConnectTCP). It is what dial does for
// the TCP relay, without the goroutine that waits.
func (d hostDialer) socket(addr netip.AddrPort) (fd int, done bool, err error) {
	return rawsys.ConnectTCP(addr, d.local(addr.Addr().Unmap()))
}

// socketOf takes the descriptor of a connection Config.Dial returned for
// the TCP relay: a non-blocking duplicate, after which c is closed.
func socketOf(c net.Conn) (int, error) {
	fd, err := dupSocket(c)
	if errors.Is(err, errNoSocket) {
		return -1, fmt.Errorf("Config.Dial returned a %T; the TCP relay needs a socket (a syscall.Conn such as *net.TCPConn), or set NoTCPRelay", c)
	}
	return fd, err
}

// errNoSocket is dupSocket's error for a connection with no descriptor
// under it.
var errNoSocket = errors.New("not a syscall.Conn")

// dupSocket takes the descriptor of a connection Config.Dial returned, for
// the TCP and UDP relays: a non-blocking, close-on-exec
// duplicate, after which c is closed.
func dupSocket(c net.Conn) (int, error) {
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errNoSocket
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}
