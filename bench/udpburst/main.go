//go:build linux

// Command udpburst measures how many new UDP flows survive a burst: with
// -c it opens -n UDP sockets, each connected to the same address, then
// sends one datagram from each, back to back. With -serve it counts the
// datagrams that arrive on an address; -query asks such a server for its
// count (since it started) once the count has stopped growing. The
// benchmarks run the sender inside sandboxes and the server on the host's
// loopback of a private namespace; it only talks to the address it is
// given.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	serve := flag.String("serve", "", "count datagrams arriving on this UDP address; answer -query on the same TCP address")
	query := flag.String("query", "", "print the count of the server at this address once it has stayed the same for -quiet")
	quiet := flag.Duration("quiet", 500*time.Millisecond, "with -query: how long the count must stay the same")
	addr := flag.String("c", "", "send the burst to this UDP address")
	n := flag.Int("n", 3000, "with -c: sockets, one datagram each")
	flag.Parse()
	var err error
	switch {
	case *serve != "":
		err = runServer(*serve)
	case *query != "":
		err = runQuery(*query, *quiet)
	case *addr != "":
		err = runBurst(*addr, *n)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpburst:", err)
		os.Exit(1)
	}
}

func runServer(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	// A receive buffer large enough for the whole burst, so that what is
	// counted is what the path delivered, not what this reader kept up
	// with (FORCE: past net.core.rmem_max, as root).
	if rc, err := pc.(*net.UDPConn).SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 64<<20)
		})
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	var count atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, count.Load())
			c.Close()
		}
	}()
	b := make([]byte, 2048)
	for {
		if _, _, err := pc.ReadFrom(b); err != nil {
			return err
		}
		count.Add(1)
	}
}

func runQuery(addr string, quiet time.Duration) error {
	last := int64(-1)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			return err
		}
		v, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
		if err != nil {
			return fmt.Errorf("server said %q", line)
		}
		if v == last {
			fmt.Println(v)
			return nil
		}
		last = v
		time.Sleep(quiet)
	}
	return fmt.Errorf("the count still grew after 30s (%d so far)", last)
}

func runBurst(addr string, n int) error {
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	msg := []byte("burst")
	start := time.Now()
	failed := 0
	for _, c := range conns {
		if _, err := c.Write(msg); err != nil {
			failed++
		}
	}
	fmt.Fprintf(os.Stderr, "sent %d datagrams from %d sockets in %v (%d send errors)\n", n-failed, n, time.Since(start).Round(time.Microsecond), failed)
	return nil
}
