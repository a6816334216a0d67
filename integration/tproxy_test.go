//go:build linux

package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/vishvananda/netlink"
)

// TestTproxyExample runs examples/tproxy between two namespaces the test
// makes: the guest's TCP and UDP traffic to 198.18.5.5 goes through the
// TUN device into the proxy's stack, and on through ordinary sockets of
// the proxy's namespace to servers there. A port nobody serves, and a UDP
// destination the proxy cannot reach, are refused to the guest.
func TestTproxyExample(t *testing.T) {
	guest := netnstest.New(t)
	host := netnstest.New(t)
	bin := filepath.Join(t.TempDir(), "tproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/tproxy").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The servers' side: 198.18.5.5 on the namespace's loopback
	// interface (this kernel has no dummy interfaces).
	h := host.Handle()
	srv, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(srv, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 18, 5, 5), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(srv); err != nil {
		t.Fatal(err)
	}
	l := listenIn(t, host, "tcp4", "198.18.5.5:7")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	pc := listenPacketIn(t, host, "udp4", "198.18.5.5:7")
	go func() {
		b := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:n], from)
		}
	}()

	var out syncBuffer
	cmd := exec.Command(bin, "-netns", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), guest.File().Fd()), "-tun", "tp0")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := host.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "tproxy: ready") {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("tproxy exited early: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tproxy did not start\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// TCP through the proxy.
	c, err := guest.Dial("tcp4", "198.18.5.5:7")
	if err != nil {
		t.Fatalf("guest dial: %v\n%s", err, out.String())
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hello through tproxy")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 20)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello through tproxy" {
		t.Fatalf("echo through the proxy = %q, %v", b, err)
	}
	c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Errorf("end of the proxied connection: %q, %v", rest, err)
	}
	c.Close()
	// A port the host cannot reach is refused, as the server would.
	if _, err := guest.Dial("tcp4", "198.18.5.5:9"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("guest dial of an unserved port = %v, want ECONNREFUSED", err)
	}
	// UDP through the proxy.
	u, err := guest.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(10 * time.Second))
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 5, 5), Port: 7}
	for _, m := range []string{"datagram one", "datagram two"} {
		if _, err := u.WriteTo([]byte(m), dst); err != nil {
			t.Fatal(err)
		}
		n, from, err := u.ReadFrom(b[:cap(b)])
		if err != nil {
			t.Fatalf("UDP echo through the proxy: %v", err)
		}
		if string(b[:n]) != m || from.String() != dst.String() {
			t.Errorf("UDP echo %q from %s, want %q from %s", b[:n], from, m, dst)
		}
	}

	// A UDP flow the proxy cannot carry (its namespace has no route to
	// 198.18.6.6) is refused: the kernel takes the stack's ICMP port
	// unreachable, quoting a datagram cut to fit 576 bytes, and fails the
	// guest's connected socket with ECONNREFUSED.
	uc, err := guest.Dial("udp4", "198.18.6.6:7")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.Write(make([]byte, 1200)); err != nil {
		t.Fatal(err)
	}
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := uc.Read(b[:cap(b)]); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("guest read on a refused UDP flow = %v, want ECONNREFUSED\n%s", err, out.String())
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("tproxy after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("tproxy did not exit 10 s after SIGTERM\n%s", out.String())
	}
}
