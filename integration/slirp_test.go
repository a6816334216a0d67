package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
	exitW, out, done := r.startWithFDs(nil, link, []string{"--disable-host-loopback", "--mtu=65520", "--enable-sandbox",
		"--enable-seccomp", "--enable-ipv6", "-c", "-e", "4", "-r", "3", "--api-socket", sock, "--netns-type=path", nsPath, "tap0"})
	if !strings.Contains(out.String(), "--enable-seccomp is not implemented") {
		t.Errorf("no warning about --enable-seccomp:\n%s", out)
	}
	var addrs []string
	var mtu int
	inNS(t, nsPath, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
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
	var gl net.Listener
	if err := inNS(t, nsPath, func() (err error) {
		gl, err = net.Listen("tcp4", "0.0.0.0:80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	go func() {
		for {
			c, err := gl.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "guest page")
			c.Close()
		}
	}()
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
	inNS(t, nsPath, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
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
}
