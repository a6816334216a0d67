//go:build linux

package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nsHolder starts `sleep 120` in a network namespace of its own (made by
// argv's unshare, or by clone when argv is nil), inside the run's
// namespace, and returns its PID once the process is in the new namespace.
func (r *sandboxRun) nsHolder(cred *syscall.Credential, argv ...string) int {
	r.t.Helper()
	var cmd *exec.Cmd
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	if len(argv) == 0 {
		cmd = exec.Command("sleep", "120")
		attr.Cloneflags = syscall.CLONE_NEWNET
	} else {
		cmd = exec.Command(argv[0], append(argv[1:], "sleep", "120")...)
	}
	cmd.SysProcAttr = attr
	cmd.Dir = "/"
	if err := r.ns.Do(cmd.Start); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	own, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", os.Getpid()))
	// unshare execs sleep once it has made the namespace: watch /proc.
	testnet.WaitFor(r.t, 10*time.Second, fmt.Sprintf("namespace holder %d to run sleep in a namespace of its own", pid), func() error {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if strings.TrimSpace(string(comm)) == "sleep" && ns != "" && ns != own {
			return nil
		}
		return fmt.Errorf("comm %q, namespace %q (ours %q)", comm, ns, own)
	})
	return pid
}

// inNS runs fn on a thread inside the network namespace at path.
func inNS(t *testing.T, path string, fn func() error) error {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return netns.DoIn(f, fn)
}

// withHandle runs fn with a netlink handle inside the namespace at path.
func withHandle(t *testing.T, path string, fn func(h *netlink.Handle) error) error {
	t.Helper()
	return inNS(t, path, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		return fn(h)
	})
}

// serveIn listens on addr (TCP over IPv4) inside the namespace at path
// and answers each connection with reply's text, then closes it. The
// listener closes with the test.
func serveIn(t *testing.T, path, addr string, reply func(c net.Conn) string) {
	t.Helper()
	var l net.Listener
	if err := inNS(t, path, func() (err error) {
		l, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, l, func(c net.Conn) { io.WriteString(c, reply(c)) })
}

// httpGetIn fetches url's body over plain HTTP/1.0 from inside the
// namespace at path.
func httpGetIn(t *testing.T, path, addr string) (string, error) {
	t.Helper()
	var c net.Conn
	if err := inNS(t, path, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// startAttach starts `ustack sandbox FLAGS` as the given user (nil: root)
// with a ready pipe on descriptor 3 and an exit pipe on 4, and waits for
// "1" on the ready pipe. Closing the returned exit writer stops it.
func (r *sandboxRun) startAttach(cred *syscall.Credential, flags ...string) (exitW *os.File, out *syncBuffer, done chan error) {
	r.t.Helper()
	return r.startWithFDs(cred, r.bin, append([]string{"sandbox", "--ready-fd", "3", "--exit-fd", "4"}, flags...))
}

// startWithFDs starts bin with args, a ready pipe on descriptor 3 and an
// exit pipe on 4 (the args name them), and waits for "1" on the ready
// pipe.
func (r *sandboxRun) startWithFDs(cred *syscall.Credential, bin string, args []string) (exitW *os.File, out *syncBuffer, done chan error) {
	r.t.Helper()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		r.t.Fatal(err)
	}
	exitR, exitW, err := os.Pipe()
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	out = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{readyW, exitR}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	cmd.Dir = "/"
	if err := r.ns.Do(cmd.Start); err != nil {
		r.t.Fatal(err)
	}
	readyW.Close()
	exitR.Close()
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	r.t.Cleanup(func() {
		exitW.Close()
		cmd.Process.Kill()
		err := <-done
		done <- err
	})
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(readyR)
		readyR.Close()
		got <- string(b)
	}()
	select {
	case s := <-got:
		if s != "1" {
			err := <-done
			done <- err
			r.t.Fatalf("ready-fd gave %q, not \"1\" (exit %v)\n%s", s, err, out)
		}
	case <-time.After(30 * time.Second):
		r.t.Fatalf("no readiness in 30 s\n%s", out)
	}
	return exitW, out, done
}

// waitExit waits (bounded) for an attached ustack to exit and checks its
// exit code.
func waitExit(t *testing.T, done chan error, out fmt.Stringer, want int, what string) {
	t.Helper()
	select {
	case err := <-done:
		done <- err
		if c := exitCodeOf(err); c != want {
			t.Fatalf("%s: exit %d, want %d\n%s", what, c, want, out)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: ustack did not exit\n%s", what, out)
	}
}

// linkIn reports whether the namespace at path has an interface name.
func linkIn(t *testing.T, path, name string) bool {
	t.Helper()
	var found bool
	err := withHandle(t, path, func(h *netlink.Handle) error {
		_, err := h.LinkByName(name)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// Attach mode as root: ustack serves a namespace made by someone else,
// given by PID (and exits with that process) or by path (and exits on
// --exit-fd), with the guest's addresses, default routes, outbound TCP
// and a -p forward; the device goes away with ustack and the namespace
// stays as it was.
func TestSandboxAttach(t *testing.T) {
	r := newSandboxRun(t)
	port := r.hostHTTP("attached ok")

	// By PID, with a forward into the guest.
	pid := r.nsHolder(nil)
	nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
	serveIn(t, nsPath, "0.0.0.0:8080", func(c net.Conn) string { return fmt.Sprintf("guest saw %s\n", c.RemoteAddr()) })
	hostPort := freePort(t, r.ns)
	_, out, done := r.startAttach(nil, "--netns", strconv.Itoa(pid), "--allow-host-loopback", "-p", fmt.Sprintf("%d:8080", hostPort), "--tcp-range", "45000-45004")
	if !linkIn(t, nsPath, "ustack0") {
		t.Fatalf("no ustack0 in the target namespace\n%s", out)
	}
	var addrs []string
	var routes []string
	withHandle(t, nsPath, func(h *netlink.Handle) error {
		l, err := h.LinkByName("ustack0")
		if err != nil {
			return err
		}
		as, _ := h.AddrList(l, netlink.FAMILY_ALL)
		for _, a := range as {
			addrs = append(addrs, a.IPNet.String())
		}
		rs, _ := h.RouteList(l, netlink.FAMILY_ALL)
		for _, rt := range rs {
			if rt.Dst == nil || rt.Dst.IP.IsUnspecified() {
				routes = append(routes, rt.Gw.String())
			}
		}
		return nil
	})
	if !contains(addrs, "10.0.2.100/24") || !contains(addrs, "fd00::100/64") {
		t.Errorf("guest addresses %v, want 10.0.2.100/24 and fd00::100/64", addrs)
	}
	if !contains(routes, "10.0.2.2") || !contains(routes, "fd00::2") {
		t.Errorf("default routes via %v, want 10.0.2.2 and fd00::2", routes)
	}
	body, err := httpGetIn(t, nsPath, fmt.Sprintf("10.0.2.2:%d", port))
	if err != nil || !strings.Contains(body, "attached ok") {
		t.Fatalf("guest → host loopback: %q, %v\n%s", body, err, out)
	}
	var fwd net.Conn
	if err := r.ns.Do(func() (err error) {
		fwd, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", hostPort), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("-p forward: %v\n%s", err, out)
	}
	fwd.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(fwd)
	fwd.Close()
	if got := string(b); got != "guest saw 10.0.2.2:45000\n" {
		t.Errorf("-p forward: the guest saw %q, want the gateway from port 45000", got)
	}
	// The process ends: so does ustack, cleanly.
	syscall.Kill(pid, syscall.SIGKILL)
	waitExit(t, done, out, 0, "after the namespace's process exited")

	// By path, stopped through --exit-fd: the device goes, the namespace
	// (held by its process) stays.
	pid = r.nsHolder(nil)
	nsPath = fmt.Sprintf("/proc/%d/ns/net", pid)
	exitW, out, done := r.startAttach(nil, "--netns", nsPath, "--if-name", "guest9")
	if !linkIn(t, nsPath, "guest9") {
		t.Fatalf("no guest9 in the target namespace\n%s", out)
	}
	exitW.Close()
	waitExit(t, done, out, 0, "after --exit-fd closed")
	if linkIn(t, nsPath, "guest9") {
		t.Errorf("the device outlived ustack in the target namespace")
	}

	// A second ustack on a namespace that already has a default route is
	// refused with a clear error, and leaves nothing behind; the first
	// stops with an error when its device is deleted.
	pid = r.nsHolder(nil)
	nsPath = fmt.Sprintf("/proc/%d/ns/net", pid)
	exit1, out1, done1 := r.startAttach(nil, "--netns", nsPath)
	cmd := exec.Command(r.bin, "sandbox", "--netns", nsPath, "--if-name", "second0")
	var out2 bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out2, &out2
	if err := r.ns.Do(cmd.Run); exitCodeOf(err) != 1 || !strings.Contains(out2.String(), "already has a default route") {
		t.Errorf("second attach: %v, want exit 1 naming the default route\n%s", err, out2.String())
	}
	if linkIn(t, nsPath, "second0") {
		t.Errorf("the refused attach left its device behind")
	}
	// Someone deletes the device: ustack stops with an error.
	if err := withHandle(t, nsPath, func(h *netlink.Handle) error {
		l, err := h.LinkByName("ustack0")
		if err != nil {
			return err
		}
		return h.LinkDel(l)
	}); err != nil {
		t.Fatal(err)
	}
	waitExit(t, done1, out1, 1, "after its device was deleted")
	if !strings.Contains(out1.String(), "ustack0 was deleted") {
		t.Errorf("no error naming the deleted device:\n%s", out1)
	}
	exit1.Close()
}

// Attach errors: not a namespace, ustack's own namespace, no such process.
func TestSandboxAttachErrors(t *testing.T) {
	r := newSandboxRun(t)
	cases := []struct{ arg, want string }{
		{"/etc/hostname", "is not a network namespace"},
		{"/proc/self/ns/uts", "is not a network namespace"},
		{"/proc/self/ns/net", "ustack's own network namespace"},
		{"/no/such/file", "no such file"},
		{"4194304", "no such process"},
	}
	for _, tc := range cases {
		cmd := exec.Command(r.bin, "sandbox", "--netns", tc.arg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := r.ns.Do(cmd.Run)
		if exitCodeOf(err) != 1 || !strings.Contains(out.String(), tc.want) {
			t.Errorf("--netns %s: %v, want exit 1 and %q\n%s", tc.arg, err, tc.want, out.String())
		}
	}
	// A --userns that is not a user namespace is refused even as root,
	// where none is needed, rather than ignored.
	pid := r.nsHolder(nil)
	cmd := exec.Command(r.bin, "sandbox", "--netns", strconv.Itoa(pid), "--userns", "/etc/hostname")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := r.ns.Do(cmd.Run); exitCodeOf(err) != 1 || !strings.Contains(out.String(), "is not a user namespace") {
		t.Errorf("--userns /etc/hostname: %v, want exit 1 and 'is not a user namespace'\n%s", err, out.String())
	}
}

// Attach mode as a normal user, as rootless container engines use
// slirp4netns: the user's own user+network namespace, joined through
// nsenter to create the device.
func TestSandboxAttachRootless(t *testing.T) {
	r := newSandboxRun(t)
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Fatalf("nsenter (util-linux) is needed: %v", err)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare (util-linux) is needed: %v", err)
	}
	tunForAll(t)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	port := r.hostHTTP("rootless attach ok")
	pid := r.nsHolder(nobody, "unshare", "--user", "--map-root-user", "--net")
	nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
	_, out, done := r.startAttach(nobody, "--netns", strconv.Itoa(pid), "--allow-host-loopback")
	body, err := httpGetIn(t, nsPath, fmt.Sprintf("10.0.2.2:%d", port))
	if err != nil || !strings.Contains(body, "rootless attach ok") {
		t.Fatalf("guest → host loopback: %q, %v\n%s", body, err, out)
	}
	if uid, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); !strings.Contains(string(uid), "Uid:\t65534") {
		t.Fatalf("the namespace's process does not run as nobody")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitExit(t, done, out, 0, "after the namespace's process exited")

	// A namespace the user does not own: a clear error.
	rootPID := r.nsHolder(nil)
	cmd := exec.Command(r.bin, "sandbox", "--netns", strconv.Itoa(rootPID))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	cmd.Dir = "/"
	var o bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &o
	if err := r.ns.Do(cmd.Run); exitCodeOf(err) != 1 || !strings.Contains(o.String(), "namespaces of its own processes") {
		t.Errorf("root's namespace as nobody: %v, want exit 1 explaining\n%s", err, o.String())
	}
}

// --seccomp: the gateway serves under the filter (a command started
// before it is not under it, and runs programs as usual).
func TestSandboxSeccomp(t *testing.T) {
	r := newSandboxRun(t)
	port := r.hostHTTP("served under seccomp")
	// ustack installs the filter before it reports ready and before the
	// command starts, so the command's fetch is served under it.
	cmd, out, done := r.startReady([]string{"--seccomp", "--allow-host-loopback", "--api", r.apiSock}, "sh", "-c",
		fmt.Sprintf("curl -sS --max-time 10 http://10.0.2.2:%d/; sleep 30", port))
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil || !strings.Contains(string(st), "Seccomp:\t2") {
		t.Fatalf("ustack's status lacks Seccomp 2: %v\n%s", err, st)
	}
	waitOutput(t, out, "served under seccomp")
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit after SIGTERM\n%s", out)
	}
}

// tunForAll makes /dev/net/tun usable by every user (mode 0666, as most
// distributions ship it) for the test, for the rootless ones.
func tunForAll(t *testing.T) {
	t.Helper()
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode&0o006 != 0o006 {
		if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod("/dev/net/tun", mode) })
	}
}

// syncBuffer is a bytes.Buffer that a process's output copier and the
// test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// --outbound-addr: the host sockets carrying the guest's flows come from
// that address (a second address of the host), not the one the kernel
// would pick.
func TestSandboxOutboundAddr(t *testing.T) {
	r := newSandboxRun(t)
	lo, err := r.ns.Handle().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"198.18.50.1/32", "198.18.51.1/32"} {
		addr, _ := netlink.ParseAddr(a)
		if err := r.ns.Handle().AddrAdd(lo, addr); err != nil {
			t.Fatal(err)
		}
	}
	l, err := r.ns.Listen("tcp4", "198.18.50.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A real HTTP server: it reads the request before it answers and
	// closes (closing with the request unread would reset the connection).
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ap, _ := netip.ParseAddrPort(req.RemoteAddr)
		fmt.Fprintf(w, "from %s\n", ap.Addr())
	})}
	go srv.Serve(l)
	defer srv.Close()
	url := fmt.Sprintf("http://%s/", l.Addr())
	code, out := r.run([]string{"--outbound-addr", "198.18.51.1"}, "curl", "-sS", "--max-time", "10", url)
	if code != 0 || !strings.Contains(out, "from 198.18.51.1") {
		t.Fatalf("--outbound-addr 198.18.51.1: exit %d, want the server to see 198.18.51.1\n%s", code, out)
	}
	code, out = r.run(nil, "curl", "-sS", "--max-time", "10", url)
	if code != 0 || !strings.Contains(out, "from 198.18.50.1") {
		t.Fatalf("without --outbound-addr: exit %d, want the kernel's choice 198.18.50.1\n%s", code, out)
	}
	code, out = r.run([]string{"--outbound-addr", "198.18.52.1"}, "true")
	if code != 1 || !strings.Contains(out, `invalid argument "198.18.52.1" for "--outbound-addr" flag: not usable as a source address`) {
		t.Fatalf("--outbound-addr not of this host: exit %d, want 1 and an error naming it\n%s", code, out)
	}
}
