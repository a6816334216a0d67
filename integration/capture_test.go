//go:build linux

package integration

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
)

// TestCaptureTcpdump captures a TCP connection to the kernel and an echo
// exchange over the TUN, and has tcpdump read the file: it parses, every
// record is there, and the handshake carries the allocator's port.
func TestCaptureTcpdump(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatalf("tcpdump is needed (scripts/test.sh installs it): %v", err)
	}
	path := filepath.Join(t.TempDir(), "ustack.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cfg stack.Config
	cfg.Capture = f
	cfg.Ports.TCP.Range = portalloc.Range{First: 41234, Last: 41240}
	e := newEnv(t, cfg, 0)
	l := e.kernelListen(t, "tcp4", net.JoinHostPort(kernel4.Addr().String(), "0"))
	lport := l.Addr().(*net.TCPAddr).Port
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(c, c)
		c.Close()
		done <- err
	}()
	c, err := e.st.DialTCPAddrPort(t.Context(), netip.AddrPort{}, l.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello tcpdump")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 13)); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The kernel's FIN arrives: the exchange is complete on the wire.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("waiting for the kernel's FIN: %q, %v", b, err)
	}
	c.Close()
	e.st.Close()
	stats := e.st.CaptureStats()
	if stats.Err != nil {
		t.Fatalf("capture failed: %v", stats.Err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tcpdump", "-r", path, "-nn", "-tt").CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "reading from file") || l == "" {
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) != int(stats.Packets) {
		t.Errorf("tcpdump read %d packets, the stack wrote %d:\n%s", len(lines), stats.Packets, out)
	}
	client := fmt.Sprintf("198.18.0.2.41234 > 198.18.0.1.%d: Flags", lport)
	server := fmt.Sprintf("198.18.0.1.%d > 198.18.0.2.41234: Flags", lport)
	for _, want := range []string{client + " [S]", server + " [S.]", client + " [.]", client + " [P.]", "length 13", server + " [F.]"} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, want) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("tcpdump output lacks %q:\n%s", want, out)
		}
	}
	for _, l := range lines {
		if strings.Contains(l, "Flags") {
			if !strings.Contains(l, client+" [S]") {
				t.Errorf("first TCP packet is not our SYN: %s", l)
			}
			break
		}
	}
}

// TestRunBinaryPcap runs `ustack run --pcap`, has the kernel connect to
// its echo service, stops it with SIGTERM and reads the file with
// tcpdump: the connection's handshake is there.
func TestRunBinaryPcap(t *testing.T) {
	ns := netnstest.New(t)
	bin := sharedUstack(t) // the build the sandbox tests share
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatalf("tcpdump is needed (scripts/test.sh installs it): %v", err)
	}
	path := filepath.Join(t.TempDir(), "run.pcap")
	var out syncBuffer
	cmd := exec.Command(bin, "run", "--tun", "ustk0", "--addr", "198.18.0.2/24", "--peer-addr", "198.18.0.1/24",
		"--echo", "7", "--pcap", path, "--pcap-snaplen", "96")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ns.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "serving on") {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("ustack run exited early: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ustack run did not start\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := ns.Dial("tcp4", "198.18.0.2:7")
	if err != nil {
		t.Fatal(err)
	}
	kport := c.LocalAddr().(*net.TCPAddr).Port
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("ustack run after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("ustack run did not exit 10s after SIGTERM\n%s", out.String())
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("pcap file: %v, %v; want mode 0600", fi, err)
	}
	dump, err := exec.Command("tcpdump", "-r", path, "-nn").CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, dump)
	}
	kernel := fmt.Sprintf("198.18.0.1.%d > 198.18.0.2.7: Flags", kport)
	ours := fmt.Sprintf("198.18.0.2.7 > 198.18.0.1.%d: Flags", kport)
	for _, want := range []string{"snapshot length 96", kernel + " [S]", ours + " [S.]", kernel + " [.]", ours + " [P.]"} {
		if !strings.Contains(string(dump), want) {
			t.Errorf("tcpdump output lacks %q:\n%s", want, dump)
		}
	}
}

// TestSandboxPcap runs a sandboxed curl and ping with --pcap: the file has
// the guest's interface traffic both ways, the TCP handshake the relay
// answers included, and tcpdump reads it.
func TestSandboxPcap(t *testing.T) {
	r := newSandboxRun(t)
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatalf("tcpdump is needed (scripts/test.sh installs it): %v", err)
	}
	port := r.hostHTTP("hello from the host")
	path := filepath.Join(t.TempDir(), "sandbox.pcap")
	code, out := r.run([]string{"--allow-host-loopback", "--pcap", path},
		"sh", "-c", fmt.Sprintf("curl -sS --max-time 10 http://10.0.2.2:%d/ && ping -c1 -W5 10.0.2.2", port))
	if code != 0 || !strings.Contains(out, "hello from the host") {
		t.Fatalf("sandbox: exit %d\n%s", code, out)
	}
	dump, err := exec.Command("tcpdump", "-r", path, "-nn", "-A").CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, dump)
	}
	// The guest's SYN comes before the relay's SYN-ACK.
	syn := strings.Index(string(dump), fmt.Sprintf("> 10.0.2.2.%d: Flags [S]", port))
	synack := strings.Index(string(dump), fmt.Sprintf("IP 10.0.2.2.%d > 10.0.2.100.", port))
	if syn < 0 || synack < 0 || synack < syn {
		t.Errorf("SYN at %d, SYN-ACK at %d in the capture; want the SYN first", syn, synack)
	}
	for _, want := range []string{
		fmt.Sprintf("> 10.0.2.2.%d: Flags [S]", port),
		fmt.Sprintf("IP 10.0.2.2.%d > 10.0.2.100.", port),
		"HTTP/1.1 200 OK",
		"IP 10.0.2.100 > 10.0.2.2: ICMP echo request",
		"IP 10.0.2.2 > 10.0.2.100: ICMP echo reply",
	} {
		if !strings.Contains(string(dump), want) {
			t.Errorf("tcpdump output lacks %q:\n%s", want, dump)
		}
	}
	// A file that cannot be written is bad usage, said before anything
	// starts.
	code, out = r.run([]string{"--pcap", "/nonexistent/dir/x.pcap"}, "true")
	if code != 2 || !strings.Contains(out, `invalid argument "/nonexistent/dir/x.pcap" for "--pcap" flag`) {
		t.Errorf("--pcap to an unwritable path: exit %d\n%s", code, out)
	}
}
