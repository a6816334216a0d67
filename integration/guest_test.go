//go:build linux

package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ustacknet/ustack/internal/conformance"
	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// guestMain runs one guest role inside a sandbox (see TestMain) and
// returns the exit code. arg is the role's parameter.
func guestMain(role, arg string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "guest %s: %s\n", role, fmt.Sprintf(format, a...))
		return 1
	}
	switch role {
	case "bulk":
		// arg: ADDR,BYTES. Send BYTES of stream 1, read stream 2 to EOF,
		// check its hash.
		parts := strings.Split(arg, ",")
		n, _ := strconv.ParseInt(parts[1], 10, 64)
		c, err := net.DialTimeout("tcp", parts[0], 10*time.Second)
		if err != nil {
			return fail("dial: %v", err)
		}
		defer c.Close()
		if err := bulkExchange(c.(*net.TCPConn), 1, 2, n); err != nil {
			return fail("%v", err)
		}
		return 0
	case "portlog":
		// arg: PORT. Reply to each connection with the peer's port, then
		// close; run until killed.
		l, err := net.Listen("tcp", ":"+arg)
		if err != nil {
			return fail("listen: %v", err)
		}
		fmt.Println("guest ready")
		for {
			c, err := l.Accept()
			if err != nil {
				return fail("accept: %v", err)
			}
			fmt.Fprintf(c, "%d", c.RemoteAddr().(*net.TCPAddr).Port)
			c.Close()
		}
	case "udpecho":
		// arg: ADDR. Two round trips.
		c, err := net.Dial("udp", arg)
		if err != nil {
			return fail("dial: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		for _, m := range []string{"ping", "pong"} {
			c.Write([]byte(m))
			b := make([]byte, 64)
			n, err := c.Read(b)
			if err != nil || string(b[:n]) != m {
				return fail("echo %q: got %q, %v", m, b[:n], err)
			}
		}
		return 0
	case "dns":
		// arg: NAME=WANT. Resolve through 10.0.2.3.
		name, want, _ := strings.Cut(arg, "=")
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", "10.0.2.3:53")
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		addrs, err := r.LookupHost(ctx, name)
		if err != nil {
			return fail("lookup %s: %v", name, err)
		}
		if len(addrs) != 1 || addrs[0] != want {
			return fail("lookup %s: %v, want %s", name, addrs, want)
		}
		return 0
	case "udpburst":
		// arg: ADDR,N. Greet ADDR from a control socket until it answers,
		// then open N more sockets, send one datagram from each, back to
		// back, report the interface's transmit queue and drops, and wait
		// for the host to say bye on the control socket.
		addr, ns, _ := strings.Cut(arg, ",")
		n, _ := strconv.Atoi(ns)
		ctl, err := net.Dial("udp", addr)
		if err != nil {
			return fail("dial: %v", err)
		}
		defer ctl.Close()
		b := make([]byte, 16)
		for tries := 0; ; tries++ {
			if tries == 50 {
				return fail("no answer to hello")
			}
			ctl.Write([]byte("hello"))
			ctl.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if k, err := ctl.Read(b); err == nil && string(b[:k]) == "ack" {
				break
			}
		}
		conns := make([]net.Conn, n)
		for i := range conns {
			if conns[i], err = net.Dial("udp", addr); err != nil {
				return fail("dial %d: %v", i, err)
			}
			defer conns[i].Close()
		}
		for i, c := range conns {
			if _, err := c.Write([]byte("burst")); err != nil {
				return fail("send %d: %v", i, err)
			}
		}
		qlen, drops := txQueue()
		fmt.Printf("sent %d; txqueuelen %s, tx drops %s\n", n, qlen, drops)
		ctl.SetReadDeadline(time.Now().Add(time.Minute))
		if k, err := ctl.Read(b); err != nil || string(b[:k]) != "bye" {
			return fail("waiting for bye: %q %v", b[:k], err)
		}
		return 0
	case "v6addr":
		// arg: PREFIX. Wait, from the address events, for a global
		// address in PREFIX that has passed duplicate address detection
		// (SLAAC from the gateway's adverts).
		prefix, err := netip.ParsePrefix(arg)
		if err != nil {
			return fail("%v", err)
		}
		err = netnstest.AwaitAddr(nil, 10*time.Second, func(u netlink.AddrUpdate) bool {
			a, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			return ok && u.NewAddr && prefix.Contains(a.Unmap()) && u.Scope == unix.RT_SCOPE_UNIVERSE &&
				u.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0
		})
		if err != nil {
			return fail("no settled address in %v: %v", prefix, err)
		}
		return 0
	case "conform":
		// arg: NAME,ADDR,LONG. One conformance scenario against the
		// peer's control listener at ADDR; the result line goes to
		// stdout.
		f := strings.Split(arg, ",")
		if len(f) != 3 {
			return fail("want NAME,ADDR,LONG, got %q", arg)
		}
		res := conformance.RunGuest(context.Background(), f[1], f[0], f[2] == "true")
		fmt.Println(res)
		if !res.Pass {
			return 1
		}
		return 0
	case "udpflood":
		// arg: ADDR,N. Open N UDP flows (one socket each) and report how
		// many got an answer.
		addr, ns, _ := strings.Cut(arg, ",")
		n, _ := strconv.Atoi(ns)
		answered := 0
		var conns []net.Conn
		for i := 0; i < n; i++ {
			c, err := net.Dial("udp", addr)
			if err != nil {
				return fail("dial: %v", err)
			}
			conns = append(conns, c)
			c.Write([]byte("x"))
		}
		deadline := time.Now().Add(2 * time.Second)
		for _, c := range conns {
			c.SetReadDeadline(deadline)
			if _, err := c.Read(make([]byte, 8)); err == nil {
				answered++
			}
			c.Close()
		}
		fmt.Println(answered)
		return 0
	}
	return fail("unknown role")
}

// txQueue reports the sandbox interface's transmit queue length and TX
// drop count (through netlink: /sys shows the namespace that mounted it,
// not this one).
func txQueue() (qlen, drops string) {
	l, err := netlink.LinkByName("ustack0")
	if err != nil || l.Attrs().Statistics == nil {
		return "?", "?"
	}
	return strconv.Itoa(l.Attrs().TxQLen), strconv.FormatUint(l.Attrs().Statistics.TxDropped, 10)
}
