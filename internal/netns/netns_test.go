//go:build linux

package netns_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/ustacknet/ustack/internal/privtest"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// threadNSPath names the network namespace of the calling thread.
const threadNSPath = "/proc/thread-self/ns/net"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// nsID identifies a network namespace, e.g. "net:[4026531840]".
func nsID(t *testing.T, path string) string {
	t.Helper()
	id, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// threadNS returns the namespace of the calling goroutine's current thread.
func threadNS(t *testing.T) string {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return nsID(t, threadNSPath)
}

// fileNS returns the namespace that an nsfs file refers to.
func fileNS(t *testing.T, f *os.File) string {
	t.Helper()
	return nsID(t, fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
}

// wedgedMain is the main thread's id once a test has discarded the main
// thread. The runtime cannot end a process's main thread, so when a
// goroutine exits locked to it, the runtime parks the thread for good
// instead: it stays in whatever namespace it was in, and never runs Go code
// again.
var wedgedMain int

// threadsOutside lists the process's threads that are not in namespace id,
// apart from a wedged main thread.
func threadsOutside(t *testing.T, id string) []string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range tasks {
		got, err := os.Readlink(p)
		if err != nil {
			continue // the thread exited meanwhile
		}
		if got != id && p != fmt.Sprintf("/proc/self/task/%d/ns/net", wedgedMain) {
			out = append(out, p+" -> "+got)
		}
	}
	return out
}

func TestNewIsPrivateAndLeavesCallerAlone(t *testing.T) {
	host := threadNS(t)
	ns := netnstest.New(t)

	inside := fileNS(t, ns.File())
	if inside == host {
		t.Fatalf("New returned the host namespace %s", host)
	}
	var ran string
	if err := ns.Do(func() error {
		ran = nsID(t, threadNSPath)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if ran != inside {
		t.Errorf("Do ran in %s, want the namespace %s", ran, inside)
	}
	if got := threadNS(t); got != host {
		t.Errorf("caller is in %s after New and Do, want %s", got, host)
	}
	if bad := threadsOutside(t, host); len(bad) > 0 {
		t.Errorf("threads left outside the host namespace: %v", bad)
	}

	// The namespace holds only lo, and lo is up.
	links, err := ns.Handle().LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	if len(links) != 1 || names[0] != "lo" {
		t.Fatalf("links in new namespace = %v, want [lo]", names)
	}
	if links[0].Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("lo is down in the new namespace")
	}
}

// TestListenerIsolated binds the same loopback port in the host and in the
// namespace: that only works if they are separate, and each dial must reach
// the listener of its own side.
func TestListenerIsolated(t *testing.T) {
	ns := netnstest.New(t)

	hostLn, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	addr := hostLn.Addr().String()
	nsLn, err := ns.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("listening on %s in the namespace (already taken in the host): %v", addr, err)
	}
	defer nsLn.Close()

	done := make(chan error, 2)
	go serveName(hostLn, "host", done)
	go serveName(nsLn, "ns", done)

	hostConn, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, hostConn); got != "host" {
		t.Errorf("dial %s from the host reached %q, want host", addr, got)
	}
	nsConn, err := ns.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, nsConn); got != "ns" {
		t.Errorf("dial %s from the namespace reached %q, want ns", addr, got)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}

	// With the host listener gone, the namespace's listener on the same
	// address is unreachable from the host.
	hostLn.Close()
	if c, err := net.Dial("tcp4", addr); err == nil {
		c.Close()
		t.Errorf("dial %s from the host connected after its listener closed; want it refused", addr)
	} else if !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("dial %s from the host: %v, want ECONNREFUSED", addr, err)
	}
}

// serveName accepts one connection on l and writes name to it.
func serveName(l net.Listener, name string, done chan<- error) {
	c, err := l.Accept()
	if err != nil {
		done <- err
		return
	}
	defer c.Close()
	_, err = io.WriteString(c, name+"\n")
	done <- err
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	defer c.Close()
	s, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(s, "\n")
}

func TestLoopbackWorksInside(t *testing.T) {
	ns := netnstest.New(t)
	for _, tc := range []struct{ network, addr string }{
		{"tcp4", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			ln, err := ns.Listen(tc.network, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				io.Copy(c, c)
			}()
			c, err := ns.Dial(tc.network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const msg = "hello over lo\n"
			if _, err := io.WriteString(c, msg); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatal(err)
			}
			if string(buf) != msg {
				t.Errorf("echo = %q, want %q", buf, msg)
			}
		})
	}

	// UDP too, through ListenPacket.
	pc, err := ns.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := ns.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "ping" {
		t.Errorf("udp got %q, want ping", buf[:n])
	}
}

// TestHandleConfiguresTheNamespace adds a link through Handle and checks
// that it appears in the namespace only.
func TestHandleConfiguresTheNamespace(t *testing.T) {
	ns := netnstest.New(t)
	const name = "ustk-br0"
	if err := ns.Handle().LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Handle().LinkByName(name); err != nil {
		t.Errorf("link %s not found in the namespace: %v", name, err)
	}
	var inside error
	if err := ns.Do(func() error {
		_, inside = net.InterfaceByName(name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside != nil {
		t.Errorf("net.InterfaceByName(%s) inside Do: %v", name, inside)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Errorf("link %s is visible in the host namespace", name)
	}
}

func TestDoPropagatesErrorPanicAndGoexit(t *testing.T) {
	host := threadNS(t)
	ns := netnstest.New(t)

	want := errors.New("boom")
	if err := ns.Do(func() error { return want }); err != want {
		t.Errorf("Do error = %v, want %v", err, want)
	}

	func() {
		defer func() {
			if p := recover(); p != "oops" {
				t.Errorf("recovered %v, want oops", p)
			}
		}()
		ns.Do(func() error { panic("oops") })
		t.Errorf("Do returned after fn panicked")
	}()

	if err := ns.Do(func() error { runtime.Goexit(); return nil }); !errors.Is(err, netns.ErrGoexit) {
		t.Errorf("Do after Goexit = %v, want %v", err, netns.ErrGoexit)
	}

	if bad := threadsOutside(t, host); len(bad) > 0 {
		t.Errorf("threads left outside the host namespace: %v", bad)
	}
}

// TestDoSwitchBackFailureDiscardsThread makes switching back impossible
// (fn moves its thread into a user namespace, where setns into the
// original network namespace is not allowed) and checks that the thread is
// not reused: no thread of the process may stay outside the host namespace.
func TestDoSwitchBackFailureDiscardsThread(t *testing.T) {
	host := threadNS(t)
	ns := netnstest.New(t)
	var tid int
	err := ns.Do(func() error {
		tid = unix.Gettid()
		// unshare(CLONE_NEWUSER) is refused in a multithreaded process,
		// so drop CAP_SYS_ADMIN from this thread instead: setns needs it.
		return privtest.DropCap(unix.CAP_SYS_ADMIN)
	})
	if err == nil || !strings.Contains(err.Error(), "switching the thread back failed, discarding it") {
		t.Fatalf("Do = %v, want the switch-back failure", err)
	}
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("Do = %v, want it to wrap EPERM", err)
	}
	if tid == os.Getpid() {
		t.Logf("the discarded thread is the main thread, which the runtime parks instead of ending")
		wedgedMain = tid
	}
	// The goroutine reports before it exits, so the thread may take a
	// moment to go; its /proc entry is the state to watch (a thread's
	// pidfd reports the exit before the entry goes).
	testnet.WaitFor(t, 5*time.Second, fmt.Sprintf("thread %d, stuck in the namespace, to end", tid), func() error {
		bad := threadsOutside(t, host)
		_, statErr := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid))
		if len(bad) == 0 && (statErr != nil || tid == wedgedMain) {
			return nil
		}
		return fmt.Errorf("thread alive: %v; threads outside the host namespace: %v", statErr == nil, bad)
	})
}

func TestClose(t *testing.T) {
	ns := netnstest.New(t)
	a, err := ns.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ns.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	if err := ns.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := ns.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := ns.Do(func() error { return nil }); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Do after Close = %v, want os.ErrClosed", err)
	}
	if _, err := ns.Listen("tcp4", "127.0.0.1:0"); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Listen after Close = %v, want os.ErrClosed", err)
	}

	// Sockets keep the namespace alive, and keep working in it.
	if _, err := a.WriteTo([]byte("still here"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 32)
	n, _, err := b.ReadFrom(buf)
	if err != nil {
		t.Fatalf("socket in the closed namespace: %v", err)
	}
	if string(buf[:n]) != "still here" {
		t.Errorf("got %q", buf[:n])
	}
}

// TestNoDescriptorLeak creates and closes namespaces and checks that the
// process's file descriptors come back to their count.
func TestNoDescriptorLeak(t *testing.T) {
	netnstest.New(t) // warm up: the first namespace may open lazily created descriptors
	before := countFDs(t)
	for range 5 {
		ns, err := netns.New()
		if err != nil {
			t.Fatal(err)
		}
		if err := ns.Do(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := ns.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if after := countFDs(t); after > before {
		t.Errorf("open descriptors: %d before, %d after 5 New/Close", before, after)
	}
}

// countFDs counts the process's open file descriptors, after letting
// finalizers close what earlier tests dropped.
func countFDs(t *testing.T) int {
	t.Helper()
	runtime.GC()
	runtime.GC()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestDisableDADAndWaitAddr(t *testing.T) {
	ns := netnstest.New(t)
	if err := ns.DisableDAD(); err != nil {
		t.Fatal(err)
	}
	var inside []byte
	if err := ns.Do(func() (err error) {
		inside, err = os.ReadFile("/proc/sys/net/ipv6/conf/default/accept_dad")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(inside) != "0\n" {
		t.Errorf("accept_dad in the namespace = %q, want 0", inside)
	}

	h := ns.Handle()
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ustk-d0"}}); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName("ustk-d0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("fd00:19::1")
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(64, 128)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	if err := ns.WaitAddr(addr, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Usable at once: a datagram to it arrives.
	pc, err := ns.ListenPacket("udp", "[fd00:19::1]:9")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := ns.Dial("udp", "[fd00:19::1]:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := pc.ReadFrom(make([]byte, 1)); err != nil {
		t.Errorf("datagram to %s after WaitAddr: %v", addr, err)
	}

	missing := netip.MustParseAddr("fd00:19::99")
	if err := ns.WaitAddr(missing, 20*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), missing.String()) {
		t.Errorf("WaitAddr(%s) for an address nobody has = %v, want a deadline error naming it", missing, err)
	}
}
