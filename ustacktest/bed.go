//go:build linux

package ustacktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/privtest"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

// EnvKeepCapture names an environment variable: when it holds a directory,
// New writes the capture of every failed test there, as TESTNAME.pcap, and
// logs the path.
const EnvKeepCapture = "USTACK_KEEP_PCAP"

// Bed is a private network namespace whose only interface is a TUN device,
// with a ustack stack on the device's other end. Its methods are safe for
// concurrent use.
type Bed struct {
	ns   *netns.NS
	dev  *tun.Device
	st   *stack.Stack
	wire *wire

	ctx    context.Context // done when the bed closes; ends its commands
	cancel context.CancelFunc

	mu      sync.Mutex // guards the fields below; a leaf
	closed  bool
	closers []io.Closer // kernel sockets and held connections, closed by Close

	closeOnce sync.Once
	closeErr  error
}

// New builds a bed for t, or ends t: it fails t if o is invalid (naming
// the field), skips it when the process lacks root, CAP_NET_ADMIN,
// CAP_SYS_ADMIN or /dev/net/tun (or fails it, naming what is missing,
// with USTACK_REQUIRE_PRIV=1), and fails it if building the bed fails.
// Everything the bed made is torn down by t.Cleanup, whether t passes or
// not. With USTACK_KEEP_PCAP set to a directory, a failed test leaves its
// capture there.
func New(t testing.TB, o Options) *Bed {
	t.Helper()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	privtest.Require(t)
	b, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if dir := os.Getenv(EnvKeepCapture); dir != "" && t.Failed() && !o.NoCapture {
			p := filepath.Join(dir, pcapName(t.Name()))
			if err := b.Capture(p); err != nil {
				t.Logf("ustacktest: keeping the capture: %v", err)
			} else {
				t.Logf("ustacktest: capture kept in %s", p)
			}
		}
		if err := b.Close(); err != nil {
			t.Errorf("ustacktest: closing the bed: %v", err)
		}
	})
	return b
}

// pcapName turns a test name (with / for subtests) into a file name.
func pcapName(test string) string {
	b := []byte(test)
	for i, c := range b {
		if c == '/' || c == os.PathSeparator {
			b[i] = '_'
		}
	}
	return string(b) + ".pcap"
}

// Open builds a bed without a test: the same as New, but it returns
// errors instead of ending a test, and the caller must Close the bed. A
// process without the privileges gets an error saying what is missing.
func Open(o Options) (*Bed, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if why := privtest.Reason(); why != "" {
		return nil, fmt.Errorf("ustacktest: the test bed %s", why)
	}
	b := &Bed{}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if err := b.build(o); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// build makes the namespace, the device and the stack, in that order; on
// failure Close undoes what was made.
func (b *Bed) build(o Options) error {
	ns, err := netns.New()
	if err != nil {
		return fmt.Errorf("ustacktest: %w", err)
	}
	b.ns = ns
	// The kernel's IPv6 address must be usable at once, without duplicate
	// address detection; the device takes the "default" setting.
	if err := ns.DisableDAD(); err != nil {
		return fmt.Errorf("ustacktest: %w", err)
	}
	mtu := o.MTU
	if mtu == 0 {
		mtu = tun.DefaultMTU
	}
	// Without offloads every packet on the wire is a real segment with its
	// checksum, which is what the capture should show.
	b.dev, err = tun.Open(tun.Config{Name: "ustb%d", MTU: mtu, NetNS: ns.File(),
		Addrs: []netip.Prefix{kernel4, kernel6}, Up: true, NoOffload: true})
	if err != nil {
		return fmt.Errorf("ustacktest: %w", err)
	}
	b.wire = newWire(b.dev.LinkEndpoint(), mtu, !o.NoCapture)
	pool := portalloc.PoolConfig{Range: o.Range, Policy: o.Policy}
	b.st, err = stack.New(stack.Config{
		Link:          b.wire,
		Addrs:         []netip.Prefix{stack4, stack6},
		Ports:         portalloc.Config{TCP: pool, UDP: pool},
		TimeWait:      o.TimeWait,
		TimeWaitReuse: o.TimeWaitReuse,
	})
	if err != nil {
		return fmt.Errorf("ustacktest: %w", err)
	}
	if err := ns.WaitAddr(kernel6.Addr(), 5*time.Second); err != nil {
		return fmt.Errorf("ustacktest: %w", err)
	}
	return nil
}

// Close ends the bed's commands (killing any still running), closes the
// kernel sockets and connections made through the bed, closes the stack
// and the device, and drops the namespace. It waits for the stack's and
// the device's goroutines. It is idempotent; later calls return the first
// call's result. Beds made by New are closed by t.Cleanup.
func (b *Bed) Close() error {
	b.closeOnce.Do(func() {
		b.cancel()
		b.mu.Lock()
		b.closed = true
		closers := b.closers
		b.closers = nil
		b.mu.Unlock()
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i].Close() // their errors say only that they were closed already
		}
		if b.st != nil {
			b.st.Close()
		}
		if b.dev != nil {
			if err := b.dev.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if b.ns != nil {
			if err := b.ns.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// track registers c to be closed by Close; if the bed is closed already it
// closes c and returns an error matching net.ErrClosed.
func (b *Bed) track(c io.Closer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		c.Close()
		return fmt.Errorf("ustacktest: the bed is closed: %w", net.ErrClosed)
	}
	b.closers = append(b.closers, c)
	return nil
}

// Stack returns the bed's stack: the client side, which dials the kernel
// at KernelAddr4 and KernelAddr6.
func (b *Bed) Stack() *stack.Stack { return b.st }

// Device returns the bed's TUN device (its name and counters).
func (b *Bed) Device() *tun.Device { return b.dev }

// KernelAddr4 is the kernel's IPv4 address in the namespace, where
// servers listen: 198.18.0.1 (on a /24).
func (b *Bed) KernelAddr4() netip.Addr { return kernel4.Addr() }

// KernelAddr6 is the kernel's IPv6 address in the namespace: fd00:18::1
// (on a /64).
func (b *Bed) KernelAddr6() netip.Addr { return kernel6.Addr() }

// StackAddr4 is the stack's IPv4 address, the source of its IPv4 dials:
// 198.18.0.2.
func (b *Bed) StackAddr4() netip.Addr { return stack4.Addr() }

// StackAddr6 is the stack's IPv6 address: fd00:18::2.
func (b *Bed) StackAddr6() netip.Addr { return stack6.Addr() }

// Do runs fn on an OS thread in the bed's namespace and returns its error.
// Sockets fn opens stay in the namespace; goroutines fn starts do not run
// there. fn must not unlock the OS thread.
func (b *Bed) Do(fn func() error) error { return b.ns.Do(fn) }

// Listen is net.Listen in the bed's kernel, for a server written in Go.
// Use a literal address, such as ":0" or "198.18.0.1:80" (name lookups
// would run in the namespace, which has no resolver). The listener is
// closed when the bed closes, if not before.
func (b *Bed) Listen(network, address string) (net.Listener, error) {
	l, err := b.ns.Listen(network, address)
	if err != nil {
		return nil, err
	}
	if err := b.track(l); err != nil {
		return nil, err
	}
	return l, nil
}

// ListenPacket is net.ListenPacket in the bed's kernel; see Listen.
func (b *Bed) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := b.ns.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	if err := b.track(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Command returns an *exec.Cmd that runs the program name with args in
// the bed's network namespace (the rest of its environment is the
// caller's), for testing a server binary. name is looked up in PATH now,
// as exec.Command does. The command enters the namespace through nsenter
// (util-linux), which execs the program, so Cmd.Process is the program
// itself; Cmd.Path and the start of Cmd.Args name nsenter and its flags.
// The bed kills a command still running when it closes; as with any
// exec.Cmd, the caller must Wait for a command it started.
func (b *Bed) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(b.ctx, name, args...)
	if cmd.Err != nil {
		return cmd
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		cmd.Err = fmt.Errorf("ustacktest: Bed.Command needs nsenter (Debian package util-linux): %w", err)
		return cmd
	}
	// /proc/PID/fd/N stays valid for the child: this process outlives the
	// exec, and the bed keeps the namespace file open until Close.
	nsPath := "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(int(b.ns.File().Fd()))
	cmd.Args = append([]string{nsenter, "--net=" + nsPath, "--", cmd.Path}, args...)
	cmd.Path = nsenter
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// SeenPorts returns the client ports of the TCP connections the server at
// addr (a kernel address and port in the bed) accepted from the stack, in
// order: one per handshake the server answered with a SYN-ACK, as seen on
// the wire. A port that appears twice was reused.
func (b *Bed) SeenPorts(addr netip.AddrPort) []uint16 { return b.wire.tcpPorts(addr) }

// SeenUDPPorts returns the source port of every datagram the stack sent to
// addr, in order.
func (b *Bed) SeenUDPPorts(addr netip.AddrPort) []uint16 { return b.wire.udpPorts(addr) }

// Capture writes a pcap file (LINKTYPE_RAW: IP packets, no link header) to
// path with every packet between the stack and the kernel so far, both
// directions, as the wire carried them (no offloads: each packet is a
// real segment with its checksum). tcpdump -r and Wireshark read it. It
// fails if Options.NoCapture is set, or if the capture outgrew 128 MiB
// (the file then holds the packets up to that point).
func (b *Bed) Capture(path string) (err error) {
	if !b.wire.capture {
		return errors.New("ustacktest: no capture: Options.NoCapture is set")
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("ustacktest: capture: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("ustacktest: capture: %w", cerr)
		}
	}()
	return b.wire.writePcap(f)
}

// WriteCapture writes the capture to w in pcap format; see Capture.
func (b *Bed) WriteCapture(w io.Writer) error {
	if !b.wire.capture {
		return errors.New("ustacktest: no capture: Options.NoCapture is set")
	}
	return b.wire.writePcap(w)
}
