//go:build linux

package ustacktest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/internal/privtest"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/ustacktest"
	"golang.org/x/sys/unix"
)

// echo serves a line echo on l until the test ends.
func echo(t *testing.T, l net.Listener) {
	testnet.Serve(t, l, func(c net.Conn) { io.Copy(c, c) })
}

// seqPorts returns n ports cycling through first..last from first.
func seqPorts(first, last uint16, n int) []uint16 {
	var out []uint16
	for i := range n {
		out = append(out, first+uint16(i%int(last-first+1)))
	}
	return out
}

func TestDialBothFamilies(t *testing.T) {
	bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40009}})
	for _, tc := range []struct {
		name   string
		kernel netip.Addr
	}{{"IPv4", bed.KernelAddr4()}, {"IPv6", bed.KernelAddr6()}} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := bed.Listen("tcp", netip.AddrPortFrom(tc.kernel, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			echo(t, l)
			server := l.Addr().(*net.TCPAddr).AddrPort()
			var got []uint16
			for range 3 {
				c, err := bed.Stack().DialContext(context.Background(), "tcp", server.String())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.WriteString(c, "ping\n"); err != nil {
					t.Fatal(err)
				}
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || line != "ping\n" {
					t.Fatalf("echo: %q, %v", line, err)
				}
				got = append(got, uint16(c.LocalAddr().(*net.TCPAddr).Port))
				c.Close()
			}
			if diff := cmp.Diff(got, bed.SeenPorts(server)); diff != "" {
				t.Errorf("ports the server saw (-dialled +seen):\n%s", diff)
			}
		})
	}
}

func TestCaptureReadByTcpdump(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		if privtest.MustRun() {
			t.Fatal("needs tcpdump (Debian package tcpdump): ", err)
		}
		t.Skip("needs tcpdump (Debian package tcpdump): ", err)
	}
	bed := ustacktest.New(t, ustacktest.Options{Range: portalloc.Range{First: 40000, Last: 40000}})
	l, err := bed.Listen("tcp", "198.18.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, l)
	pc, err := bed.ListenPacket("udp", "[fd00:18::1]:9999")
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeUDPEcho(t, pc)

	c, err := bed.Stack().Dial("tcp", "198.18.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "hello")
	if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
		t.Fatalf("TCP echo: %v", err)
	}
	c.Close()
	u, err := bed.Stack().Dial("udp", "[fd00:18::1]:9999")
	if err != nil {
		t.Fatal(err)
	}
	u.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := u.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Read(make([]byte, 1)); err != nil {
		t.Fatalf("UDP echo: %v", err)
	}
	u.Close()

	path := filepath.Join(t.TempDir(), "bed.pcap")
	if err := bed.Capture(path); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tcpdump, "-nn", "-r", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{
		"198.18.0.2.40000 > 198.18.0.1.7: Flags [S]",
		"198.18.0.1.7 > 198.18.0.2.40000: Flags [S.]",
		"198.18.0.2.40000 > 198.18.0.1.7: Flags [P.]",
		"fd00:18::2.40000 > fd00:18::1.9999: UDP, length 1",
		"fd00:18::1.9999 > fd00:18::2.40000: UDP, length 1",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("tcpdump output lacks %q:\n%s", want, text)
		}
	}
	if got, want := bed.SeenUDPPorts(netip.MustParseAddrPort("[fd00:18::1]:9999")), []uint16{40000}; !cmp.Equal(got, want) {
		t.Errorf("SeenUDPPorts = %v, want %v", got, want)
	}
}

func TestCommandRunsInNamespace(t *testing.T) {
	bed := ustacktest.New(t, ustacktest.Options{})
	out, err := bed.Command("ip", "-br", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"198.18.0.1/24", "fd00:18::1/64", bed.Device().Name()} {
		if !strings.Contains(text, want) {
			t.Errorf("ip addr in the bed lacks %q:\n%s", want, text)
		}
	}
	cmd := bed.Command("no-such-program-ustacktest")
	if err := cmd.Run(); err == nil || !strings.Contains(err.Error(), "executable file not found") {
		t.Errorf("Command(missing).Run() = %v, want a not-found error", err)
	}
}

// TestOpenWithoutPrivileges drops CAP_NET_ADMIN on one thread and opens a
// bed there: Open says what is missing instead of failing deeper down.
func TestOpenWithoutPrivileges(t *testing.T) {
	privtest.Require(t)
	errc := make(chan error, 1)
	go func() {
		// The thread loses the capability for good: it ends with this
		// goroutine, still locked.
		runtime.LockOSThread()
		if err := privtest.DropCap(unix.CAP_NET_ADMIN); err != nil {
			errc <- err
			return
		}
		bed, err := ustacktest.Open(ustacktest.Options{})
		if err == nil {
			bed.Close()
			err = errors.New("Open succeeded without CAP_NET_ADMIN")
		}
		errc <- err
	}()
	err := <-errc
	if want := "the test bed needs root (CAP_NET_ADMIN); uid 0 lacks [CAP_NET_ADMIN]"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Open without CAP_NET_ADMIN: %v, want an error containing %q", err, want)
	}
}

// TestCommandKilledOnClose: a command still running when the bed closes
// is killed, and it ran in the bed's namespace.
func TestCommandKilledOnClose(t *testing.T) {
	privtest.Require(t)
	bed, err := ustacktest.Open(ustacktest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bed.Close()
	cmd := bed.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var bedNS, cmdNS unix.Stat_t
	if err := bed.Do(func() error { return unix.Stat("/proc/thread-self/ns/net", &bedNS) }); err != nil {
		t.Fatal(err)
	}
	// nsenter execs sleep in place: wait until the process is sleep, then
	// read its namespace.
	deadline := time.Now().Add(5 * time.Second)
	for {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		if err == nil && string(comm) == "sleep\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d is %q, not sleep, after 5s (%v)", cmd.Process.Pid, comm, err)
		}
		time.Sleep(time.Millisecond)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), &cmdNS); err != nil {
		t.Fatal(err)
	}
	if bedNS.Ino != cmdNS.Ino {
		t.Errorf("the command's namespace is %d, the bed's %d", cmdNS.Ino, bedNS.Ino)
	}
	bed.Close()
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("Wait after Close: %v, want the process killed", err)
	}
}
