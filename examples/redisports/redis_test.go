//go:build linux

package redisports

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/privtest"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/ustacktest"
)

func TestMain(m *testing.M) { os.Exit(testnet.LeakCheckedMain(m, false)) }

// The bed's client ports: 16 of them.
var sixteen = portalloc.Range{First: 40000, Last: 40015}

// startRedis runs redis-server in the bed's namespace, listening on the
// kernel's IPv4 and IPv6 addresses, and returns its IPv4 address once it
// says it is ready. It is stopped when the test ends.
func startRedis(t testing.TB, bed *ustacktest.Bed) netip.AddrPort {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if privtest.MustRun() {
			t.Fatalf("needs redis-server (Debian package redis-server): %v", err)
		}
		t.Skipf("needs redis-server (Debian package redis-server): %v", err)
	}
	cmd := bed.Command("redis-server",
		"--bind", bed.KernelAddr4().String(), bed.KernelAddr6().String(),
		"--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--logfile", "")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	ready := make(chan struct{})
	var log strings.Builder
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		var once sync.Once
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Ready to accept connections") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-logged
		cmd.Wait()
	})
	select {
	case <-ready:
	case <-logged:
		cmd.Wait()
		t.Fatalf("redis-server exited before it was ready:\n%s", log.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("redis-server not ready after 10s")
	}
	return netip.AddrPortFrom(bed.KernelAddr4(), 6379)
}

// do sends one command in RESP's inline form and reads the reply: a
// simple string, error or integer line, or a bulk string.
func do(c net.Conn, r *bufio.Reader, cmd string) (string, error) {
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "-"):
		return "", fmt.Errorf("redis: %s", line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("redis: bad bulk length %q", line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	}
	return line[1:], nil
}

// expect runs cmd and checks its reply.
func expect(c net.Conn, r *bufio.Reader, cmd, want string) error {
	got, err := do(c, r, cmd)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s: got %q, want %q", cmd, got, want)
	}
	return nil
}

// ping is an exchange that leaves the connection open; quit makes redis
// close it first.
func ping(c net.Conn) error { return expect(c, bufio.NewReader(c), "PING", "PONG") }
func quit(c net.Conn) error {
	r := bufio.NewReader(c)
	if err := expect(c, r, "PING", "PONG"); err != nil {
		return err
	}
	return expect(c, r, "QUIT", "OK")
}

var clientAddr = regexp.MustCompile(`(?m)^id=(\d+) addr=198\.18\.0\.2:(\d+) `)

// clientPorts asks redis for its clients and returns their ports, in the
// order redis accepted them.
func clientPorts(t *testing.T, c net.Conn) []uint16 {
	t.Helper()
	list, err := do(c, bufio.NewReader(c), "CLIENT LIST")
	if err != nil {
		t.Fatal(err)
	}
	var ports []uint16
	for _, m := range clientAddr.FindAllStringSubmatch(list, -1) {
		p, _ := strconv.Atoi(m[2])
		ports = append(ports, uint16(p)) // CLIENT LIST is in id order
	}
	return ports
}

// statsInt reads one integer field of INFO stats.
func statsInt(t *testing.T, server netip.AddrPort, bed *ustacktest.Bed, field string) int {
	t.Helper()
	c, err := bed.Stack().DialContext(context.Background(), "tcp", server.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := do(c, bufio.NewReader(c), "INFO stats")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + field + `:(\d+)\r?$`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("INFO stats has no %s:\n%s", field, info)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestRedisSeesTheStacksPorts holds three connections and asks redis
// which ports its clients come from.
func TestRedisSeesTheStacksPorts(t *testing.T) {
	bed := ustacktest.New(t, ustacktest.Options{Range: sixteen})
	server := startRedis(t, bed)
	h, err := bed.Hold(context.Background(), server, ustacktest.HoldOptions{N: 3, Exchange: ping})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range h.Results {
		if r.Err != nil {
			t.Fatalf("connection %d: %v", r.Index, r.Err)
		}
	}
	want := []uint16{40000, 40001, 40002}
	if diff := cmp.Diff(want, clientPorts(t, h.Conns[0])); diff != "" {
		t.Errorf("redis's CLIENT LIST ports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, bed.SeenPorts(server)); diff != "" {
		t.Errorf("ports on the wire (-want +got):\n%s", diff)
	}
}

// TestRedisPortReuse connects twice from port 40007: redis closes the
// first connection (QUIT), keeps it in TIME_WAIT, and accepts the second
// from the same port.
func TestRedisPortReuse(t *testing.T) {
	bed := ustacktest.New(t, ustacktest.Options{Range: sixteen})
	server := startRedis(t, bed)
	n := 0
	rr, err := bed.ReuseTimeWait(context.Background(), server, ustacktest.ReuseOptions{
		Port: 40007,
		Exchange: func(c net.Conn) error {
			// The counter proves that redis served both connections.
			n++
			r := bufio.NewReader(c)
			if err := expect(c, r, "INCR reuse", strconv.Itoa(n)); err != nil {
				return err
			}
			return expect(c, r, "QUIT", "OK")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rr.First.Err != nil || rr.Second.Err != nil {
		t.Fatalf("first connection: %v; second: %v", rr.First.Err, rr.Second.Err)
	}
	if !rr.TimeWait {
		t.Errorf("redis's kernel did not hold the first connection in TIME_WAIT")
	}
	if rr.First.Port != 40007 || rr.Second.Port != 40007 {
		t.Errorf("ports %d and %d, want 40007 twice", rr.First.Port, rr.Second.Port)
	}
	if diff := cmp.Diff([]uint16{40007, 40007}, bed.SeenPorts(server)); diff != "" {
		t.Errorf("ports on the wire (-want +got):\n%s", diff)
	}
	t.Logf("second handshake over TIME_WAIT took %v (first %v)", rr.Second.Connect, rr.First.Connect)
}

// TestRedisChurn16Ports runs 160 connections through 16 ports, redis
// closing each one (QUIT), so that from the second round on every
// connection takes over one that redis holds in TIME_WAIT.
func TestRedisChurn16Ports(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server func(*ustacktest.Bed) netip.AddrPort
	}{
		{"IPv4", func(b *ustacktest.Bed) netip.AddrPort { return netip.AddrPortFrom(b.KernelAddr4(), 6379) }},
		{"IPv6", func(b *ustacktest.Bed) netip.AddrPort { return netip.AddrPortFrom(b.KernelAddr6(), 6379) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bed := ustacktest.New(t, ustacktest.Options{Range: sixteen})
			startRedis(t, bed)
			server := tc.server(bed)
			const n = 160
			rs, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{N: n, Close: ustacktest.ServerCloses, Exchange: quit})
			if err != nil {
				t.Fatal(err)
			}
			var got, want []uint16
			var slowest time.Duration
			for i, r := range rs {
				if r.Err != nil {
					t.Errorf("connection %d (port %d): %v", i, r.Port, r.Err)
				}
				got = append(got, r.Port)
				want = append(want, 40000+uint16(i%16))
				slowest = max(slowest, r.Connect)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("churn ports (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, bed.SeenPorts(server)); diff != "" {
				t.Errorf("ports on the wire (-want +got):\n%s", diff)
			}
			// redis counts the connections it accepted; the INFO
			// connection itself is one more.
			if got := statsInt(t, server, bed, "total_connections_received"); got != n+1 {
				t.Errorf("redis accepted %d connections, want %d", got, n+1)
			}
			t.Logf("%d connections through 16 ports, slowest handshake %v, whole churn %v", n, slowest, rs[n-1].Start.Add(rs[n-1].Duration).Sub(rs[0].Start))
		})
	}
}
