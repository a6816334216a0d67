//go:build linux

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// procStatusOf returns /proc/PID/status of the process whose command line
// starts with path.
func procStatusOf(t *testing.T, path string) string {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(cmdline), path+"\x00") {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err == nil {
			return string(st)
		}
	}
	t.Fatalf("no process running %s", path)
	return ""
}

// slirpCall sends one slirp4netns API request and decodes the reply.
func slirpCall(t *testing.T, sock, req string) map[string]any {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req)
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("reply %q: %v", b, err)
	}
	return r
}

// ustack under the name slirp4netns, with slirp4netns's command line as
// podman gives it: the namespace configured, host loopback closed, port
// forwards through the API socket, stopped through --exit-fd.
func TestSlirp4netnsCompat(t *testing.T) {
	r := newSandboxRun(t)
	link := filepath.Join(t.TempDir(), "slirp4netns")
	if err := os.Symlink(r.bin, link); err != nil {
		t.Fatal(err)
	}
	port := r.hostHTTP("through slirp4netns's command line")
	pid := r.nsHolder(nil)
	nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
	sock := filepath.Join(t.TempDir(), "slirp.sock")
	// A socket left behind by an earlier run is replaced, as slirp4netns
	// does.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	exitW, out, done := r.startWithFDs(nil, link, []string{"--disable-host-loopback", "--mtu=65520", "--enable-sandbox",
		"--enable-seccomp", "--enable-ipv6", "-c", "-e", "4", "-r", "3", "--api-socket", sock, "--netns-type=path", nsPath, "tap0"})
	if !strings.Contains(out.String(), "--enable-sandbox is not implemented") {
		t.Errorf("no warning about --enable-sandbox:\n%s", out)
	}
	// --enable-seccomp: the filter is on (mode 2) with no_new_privs.
	if st := procStatusOf(t, link); !strings.Contains(st, "Seccomp:\t2") || !strings.Contains(st, "NoNewPrivs:\t1") {
		t.Errorf("--enable-seccomp: the process's status lacks Seccomp 2 and NoNewPrivs 1:\n%s", st)
	}
	var addrs []string
	var mtu int
	withHandle(t, nsPath, func(h *netlink.Handle) error {
		l, err := h.LinkByName("tap0")
		if err != nil {
			return err
		}
		mtu = l.Attrs().MTU
		as, _ := h.AddrList(l, netlink.FAMILY_ALL)
		for _, a := range as {
			addrs = append(addrs, a.IPNet.String())
		}
		return nil
	})
	if !contains(addrs, "10.0.2.100/24") || !contains(addrs, "fd00::100/64") || mtu != 65520 {
		t.Errorf("tap0: addresses %v MTU %d, want 10.0.2.100/24, fd00::100/64 (--enable-ipv6) and 65520", addrs, mtu)
	}
	// --disable-host-loopback: refused at once.
	start := time.Now()
	if _, err := httpGetIn(t, nsPath, fmt.Sprintf("10.0.2.2:%d", port)); err == nil {
		t.Errorf("host loopback reachable despite --disable-host-loopback")
	} else if d := time.Since(start); d > 3*time.Second {
		t.Errorf("refusal took %v", d)
	}
	// A forward through the API, to a guest server.
	serveIn(t, nsPath, "0.0.0.0:80", func(net.Conn) string { return "guest page" })
	hostPort := freePort(t, r.ns)
	rep := slirpCall(t, sock, fmt.Sprintf(`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": %d, "guest_port": 80}}`, hostPort))
	if ret, ok := rep["return"].(map[string]any); !ok || ret["id"] == nil {
		t.Fatalf("add_hostfwd: %v\n%s", rep, out)
	}
	var c net.Conn
	if err := r.ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(hostPort), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "guest page" {
		t.Fatalf("through add_hostfwd: %q", b)
	}
	exitW.Close()
	waitExit(t, done, out, 0, "after --exit-fd closed")
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("API socket left behind: %v", err)
	}
	if linkIn(t, nsPath, "tap0") {
		t.Errorf("tap0 outlived ustack")
	}

	// Without -c: the device is made and left down and bare, for the
	// namespace's owner to configure (as rootlesskit does); host loopback
	// open by default, as in slirp4netns.
	pid = r.nsHolder(nil)
	nsPath = fmt.Sprintf("/proc/%d/ns/net", pid)
	_, out, done = r.startWithFDs(nil, r.bin, []string{"slirp4netns", "-r", "3", "-e", "4", strconv.Itoa(pid), "tap1"})
	var up bool
	addrs = nil
	withHandle(t, nsPath, func(h *netlink.Handle) error {
		l, err := h.LinkByName("tap1")
		if err != nil {
			return err
		}
		up = l.Attrs().Flags&net.FlagUp != 0
		as, _ := h.AddrList(l, netlink.FAMILY_V4)
		for _, a := range as {
			addrs = append(addrs, a.IPNet.String())
		}
		// Configure it as rootlesskit's child would.
		a, _ := netlink.ParseAddr("10.0.2.100/24")
		if err := h.AddrAdd(l, a); err != nil {
			return err
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
		return h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.0.2.2")})
	})
	if up || len(addrs) != 0 {
		t.Errorf("without -c: tap1 up=%v addresses %v, want down and bare", up, addrs)
	}
	body, err := httpGetIn(t, nsPath, fmt.Sprintf("10.0.2.2:%d", port))
	if err != nil || !strings.Contains(body, "through slirp4netns's command line") {
		t.Fatalf("host loopback (open by default): %q %v\n%s", body, err, out)
	}
	unix.Kill(pid, unix.SIGKILL)
	waitExit(t, done, out, 0, "after the namespace's process exited")

	// Refusals.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--macaddress", "02:00:00:00:00:01", "1"}, "no MAC address"},
		{[]string{"--target-type", "bess", "1"}, "only netns"},
		{[]string{"--netns-type", "fd", "1"}, "want pid or path"},
		{[]string{"notapid"}, "invalid PID"},
		{[]string{"1", "tap0", "extra"}, "want PID|PATH [TAPNAME]"},
		{[]string{"--outbound-addr", "::1", "1"}, "want an IPv4 address or an interface name"},
	} {
		cmd := exec.Command(link, tc.args...)
		var o bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &o
		err := cmd.Run()
		if exitCodeOf(err) != 2 || !strings.Contains(o.String(), tc.want) {
			t.Errorf("slirp4netns %v: %v, want exit 2 and %q\n%s", tc.args, err, tc.want, o.String())
		}
	}
	// A file that is not a socket at --api-socket is left alone.
	pid = r.nsHolder(nil)
	notSock := filepath.Join(t.TempDir(), "precious")
	os.WriteFile(notSock, []byte("data"), 0o600)
	cmd := exec.Command(link, "--api-socket", notSock, strconv.Itoa(pid), "tap2")
	var o bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &o
	if err := r.ns.Do(cmd.Run); exitCodeOf(err) != 1 || !strings.Contains(o.String(), "is not a socket") {
		t.Errorf("--api-socket on a regular file: %v, want exit 1 and 'is not a socket'\n%s", err, o.String())
	}
	if b, _ := os.ReadFile(notSock); string(b) != "data" {
		t.Errorf("the file at --api-socket was touched: %q", b)
	}
}

// rootlesskit (the network of rootless Docker) with ustack as its
// slirp4netns binary: rootlesskit makes the TAP device itself and
// configures it, starts "slirp4netns --mtu 65520 -r 3 --api-socket S PID
// tap0", and forwards -p ports through the API socket.
func TestSlirp4netnsRootlesskit(t *testing.T) {
	r := newSandboxRun(t)
	rk, err := exec.LookPath("rootlesskit")
	if err == nil {
		_, err = exec.LookPath("newuidmap")
	}
	if err != nil {
		if os.Getenv("USTACK_REQUIRE_PRIV") == "1" {
			t.Fatalf("rootlesskit and newuidmap are needed (scripts/test.sh installs the rootlesskit and uidmap packages): %v", err)
		}
		t.Skipf("rootlesskit or newuidmap not installed: %v", err)
	}
	tunForAll(t)
	// nobody needs subordinate IDs for rootlesskit's user namespace.
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		old, err := os.ReadFile(f)
		existed := err == nil
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if strings.Contains("\n"+string(old), "\nnobody:") {
			continue
		}
		mode := os.FileMode(0o644)
		if fi, err := os.Stat(f); err == nil {
			mode = fi.Mode().Perm()
		}
		if err := os.WriteFile(f, append(old, "nobody:200000:65536\n"...), mode); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if !existed {
				os.Remove(f)
				return
			}
			os.WriteFile(f, old, mode)
			os.Chmod(f, mode)
		})
	}
	// A directory nobody can use: the slirp4netns link, a copy of this
	// test binary (the guest's server) and rootlesskit's state.
	dir, err := os.MkdirTemp("", "ustack-rk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	link := filepath.Join(dir, "slirp4netns")
	if err := os.Symlink(r.bin, link); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	guestBin := filepath.Join(dir, "guest.test")
	if b, err := os.ReadFile(self); err != nil || os.WriteFile(guestBin, b, 0o755) != nil {
		t.Fatalf("copying the test binary: %v", err)
	}
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o700)
	os.Chown(state, 65534, 65534)

	port := r.hostHTTP("rootlesskit guest reached the host")
	// And over IPv6 (--ipv6): the guest configures itself from the
	// gateway's router advertisements, as with slirp4netns.
	l6, err := r.ns.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	srv6 := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "and over IPv6") })}
	go srv6.Serve(l6)
	defer srv6.Close()
	port6 := l6.Addr().(*net.TCPAddr).Port
	hostPort := freePort(t, r.ns)
	guestScript := fmt.Sprintf(`set -e
curl -sS --max-time 10 http://10.0.2.2:%d/; echo
env USTACK_GUEST_ROLE=v6addr %[3]s -test.run=^$ fd00::/16 || { echo no SLAAC address; exit 1; }
ip -6 route show default | grep 'via fe80::2' || { echo no default route via fe80::2; exit 1; }
curl -sS --max-time 10 -g 'http://[fd00::2]:%[2]d/'; echo
exec env USTACK_GUEST_ROLE=portlog %[3]s -test.run=^$ 80`, port, port6, guestBin)
	cmd := exec.Command(rk, "--state-dir", filepath.Join(state, "rk"), "--net=slirp4netns", "--ipv6", "--slirp4netns-seccomp=true", "--slirp4netns-binary="+link,
		"--port-driver=slirp4netns", "-p", fmt.Sprintf("127.0.0.1:%d:80/tcp", hostPort),
		"sh", "-c", guestScript)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_RUNTIME_DIR=" + state}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
	if err := r.ns.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		err := <-done
		done <- err
	})
	testnet.WaitFor(t, 60*time.Second, "the guest to be ready", func() error {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("rootlesskit exited (%v) before its guest was ready\n%s", err, out)
		default:
		}
		if !strings.Contains(out.String(), "guest ready") {
			return fmt.Errorf("output so far:\n%s", out)
		}
		return nil
	})
	if !strings.Contains(out.String(), "rootlesskit guest reached the host") {
		t.Fatalf("guest to host loopback through 10.0.2.2 failed\n%s", out)
	}
	if st := procStatusOf(t, link); !strings.Contains(st, "Seccomp:\t2") {
		t.Errorf("--slirp4netns-seccomp=true: ustack's status lacks Seccomp 2:\n%s", st)
	}
	if !strings.Contains(out.String(), "and over IPv6") {
		t.Fatalf("guest to host loopback over IPv6 ([fd00::2], SLAAC from the adverts) failed\n%s", out)
	}
	// Host to guest through the forward rootlesskit added over the API
	// socket: the guest reports the peer port it saw. Nothing tells when
	// rootlesskit has added it, so watch for its listening socket.
	testnet.WaitFor(t, 10*time.Second, fmt.Sprintf("the forward to listen on 127.0.0.1:%d", hostPort), func() error {
		var socks []*netlink.Socket
		// From a thread in the namespace: r.ns.Handle() has only a
		// route socket there, and would ask the host's namespace.
		if err := r.ns.Do(func() (err error) { socks, err = netlink.SocketDiagTCP(unix.AF_INET); return err }); err != nil {
			return err
		}
		for _, k := range socks {
			if k.State == netlink.TCP_LISTEN && k.ID.SourcePort == uint16(hostPort) {
				return nil
			}
		}
		return fmt.Errorf("no listening socket among %d", len(socks))
	})
	got, err := readPort(t, r.ns, fmt.Sprintf("127.0.0.1:%d", hostPort))
	if err != nil || got == "" {
		t.Fatalf("host to guest through -p: %q %v\n%s", got, err, out)
	}
	helpers := procsRunning(link)
	if len(helpers) == 0 {
		t.Fatalf("no ustack (as slirp4netns) running under rootlesskit\n%s", out)
	}
	var exits []<-chan struct{}
	for _, pid := range helpers {
		exits = append(exits, pidExit(t, pid))
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
	case <-time.After(15 * time.Second):
		t.Fatalf("rootlesskit did not exit on SIGTERM\n%s", out)
	}
	// No helper left behind: each exits with rootlesskit.
	for i, exit := range exits {
		select {
		case <-exit:
		case <-time.After(5 * time.Second):
			t.Errorf("ustack (as slirp4netns) %d outlived rootlesskit by 5 s", helpers[i])
		}
	}
	if left := procsRunning(link); len(left) > 0 {
		t.Errorf("ustack (as slirp4netns) %v outlived rootlesskit", left)
	}
}

// procsRunning returns the processes whose command line starts with path.
func procsRunning(path string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.HasPrefix(string(cmdline), path) {
			pids = append(pids, pid)
		}
	}
	return pids
}
