package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/netns/netnstest"
	"github.com/ustacknet/ustack/internal/privtest"
	"github.com/ustacknet/ustack/internal/testnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Every test here that touches a real device runs it in a namespace of its
// own (netnstest.New), with addresses from 198.18.0.0/15 and fd00::/8.

// openIn opens cfg in ns and closes the device when the test ends.
func openIn(t testing.TB, ns *netns.NS, cfg Config) *Device {
	t.Helper()
	cfg.NetNS = ns.File()
	d, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// TestRoundTrip connects a kernel socket inside the namespace and the
// gVisor stack through the device, both ways for TCP and once for UDP.
func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name        string
		cfg         Config
		kernel      netip.Addr // the kernel's address, where its sockets listen
		stackAddrs  []netip.Prefix
		stackListen netip.Addr // where the stack listens; the kernel dials it
	}{{
		name:   "ipv4",
		cfg:    Config{Addrs: []netip.Prefix{kernel4}, Up: true},
		kernel: kernel4.Addr(), stackAddrs: []netip.Prefix{stack4}, stackListen: stack4.Addr(),
	}, {
		name:   "ipv6",
		cfg:    Config{Name: "ustk6", Addrs: []netip.Prefix{kernel6}, Up: true},
		kernel: kernel6.Addr(), stackAddrs: []netip.Prefix{stack6}, stackListen: stack6.Addr(),
	}, {
		name:   "multiqueue",
		cfg:    Config{Name: "ustk-mq%d", MultiQueue: true, Queues: 4, Addrs: []netip.Prefix{kernel4}, Up: true},
		kernel: kernel4.Addr(), stackAddrs: []netip.Prefix{stack4}, stackListen: stack4.Addr(),
	}, {
		name:   "no offload",
		cfg:    Config{NoOffload: true, MultiQueue: true, Queues: 2, Addrs: []netip.Prefix{kernel4, kernel6}, Up: true},
		kernel: kernel6.Addr(), stackAddrs: []netip.Prefix{stack4, stack6}, stackListen: stack4.Addr(),
	}, {
		name:   "jumbo mtu",
		cfg:    Config{MTU: 9000, Addrs: []netip.Prefix{kernel4, kernel6}, Up: true},
		kernel: kernel6.Addr(), stackAddrs: []netip.Prefix{stack4, stack6}, stackListen: stack4.Addr(),
	}, {
		// The stack's address is outside the device's subnet: the kernel
		// reaches it only through Config.Routes.
		name:   "routes",
		cfg:    Config{Addrs: []netip.Prefix{kernel4}, Up: true, Routes: []netip.Prefix{netip.MustParsePrefix("198.18.4.0/24"), netip.MustParsePrefix("fd00:4::/64")}},
		kernel: kernel4.Addr(), stackAddrs: []netip.Prefix{netip.MustParsePrefix("198.18.4.9/32")}, stackListen: netip.MustParseAddr("198.18.4.9"),
	}, {
		name:   "water ipv4 and ipv6",
		cfg:    Config{Driver: DriverWater, Name: "ustk-w%d", Addrs: []netip.Prefix{kernel4, kernel6}, Up: true},
		kernel: kernel6.Addr(), stackAddrs: []netip.Prefix{stack4, stack6}, stackListen: stack4.Addr(),
	}, {
		name:   "water jumbo mtu and routes",
		cfg:    Config{Driver: DriverWater, MTU: 9000, Addrs: []netip.Prefix{kernel4}, Up: true, Routes: []netip.Prefix{netip.MustParsePrefix("198.18.4.0/24")}},
		kernel: kernel4.Addr(), stackAddrs: []netip.Prefix{netip.MustParsePrefix("198.18.4.9/32")}, stackListen: netip.MustParseAddr("198.18.4.9"),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t)
			d := openIn(t, ns, tt.cfg)
			checkLink(t, ns, d, tt.cfg)
			if got, want := d.Offload(), !tt.cfg.NoOffload && tt.cfg.Driver != DriverWater; got != want {
				t.Errorf("Offload() = %v, want %v", got, want)
			}
			s := newStack(t, d.LinkEndpoint(), tt.stackAddrs...)

			// Stack dials the kernel.
			l, err := ns.Listen("tcp", netip.AddrPortFrom(tt.kernel, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			stop := echo(t, l)
			c := dialTCP(t, s, netip.MustParseAddrPort(l.Addr().String()))
			exchange(t, c, 1<<20)
			c.Close()
			stop()

			// Kernel dials the stack.
			sl := listenTCP(t, s, netip.AddrPortFrom(tt.stackListen, 7))
			stop = echo(t, sl)
			kc, err := ns.Dial("tcp", netip.AddrPortFrom(tt.stackListen, 7).String())
			if err != nil {
				t.Fatalf("dial the stack from the kernel: %v", err)
			}
			exchange(t, kc, 1<<20)
			kc.Close()
			stop()

			// UDP, stack to kernel and back.
			pc, err := ns.ListenPacket("udp", netip.AddrPortFrom(tt.kernel, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			raddr := fullAddr(netip.MustParseAddrPort(pc.LocalAddr().String()))
			uc, err := gonet.DialUDP(s, nil, &raddr, protoOf(tt.kernel))
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			if _, err := uc.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			pc.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 64)
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("kernel reading UDP: %v", err)
			}
			if _, err := pc.WriteTo(append([]byte("pong:"), buf[:n]...), from); err != nil {
				t.Fatal(err)
			}
			uc.SetDeadline(time.Now().Add(10 * time.Second))
			n, err = uc.Read(buf)
			if err != nil {
				t.Fatalf("stack reading UDP: %v", err)
			}
			if got := string(buf[:n]); got != "pong:ping" {
				t.Errorf("UDP reply %q, want pong:ping", got)
			}
		})
	}
}

// checkLink compares the kernel's view of the device with cfg.
func checkLink(t *testing.T, ns *netns.NS, d *Device, cfg Config) {
	t.Helper()
	link, err := ns.Handle().LinkByName(d.Name())
	if err != nil {
		t.Fatalf("device %q not in the namespace: %v", d.Name(), err)
	}
	if link.Type() != "tuntap" {
		t.Errorf("link type %q, want tuntap", link.Type())
	}
	wantMTU := cfg.MTU
	if wantMTU == 0 {
		wantMTU = DefaultMTU
	}
	if got := link.Attrs().MTU; got != wantMTU || d.MTU() != wantMTU || int(d.LinkEndpoint().MTU()) != wantMTU {
		t.Errorf("MTU: kernel %d, Device %d, endpoint %d; want %d", got, d.MTU(), d.LinkEndpoint().MTU(), wantMTU)
	}
	if up := link.Attrs().Flags&net.FlagUp != 0; up != cfg.Up {
		t.Errorf("link up = %v, want %v", up, cfg.Up)
	}
	switch {
	case cfg.Name == "":
		if !strings.HasPrefix(d.Name(), "tun") {
			t.Errorf("kernel-picked name %q, want tunN", d.Name())
		}
	case strings.Contains(cfg.Name, "%d"):
		if p := strings.TrimSuffix(cfg.Name, "%d"); !strings.HasPrefix(d.Name(), p) || d.Name() == p {
			t.Errorf("name %q, want %q with a number", d.Name(), cfg.Name)
		}
	case d.Name() != cfg.Name:
		t.Errorf("name %q, want %q", d.Name(), cfg.Name)
	}
	addrs, err := ns.Handle().AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		if a.IP.IsGlobalUnicast() || a.IP.IsPrivate() {
			got = append(got, a.IPNet.String())
		}
	}
	var want []string
	for _, p := range cfg.Addrs {
		want = append(want, p.String())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("kernel addresses %v, want %v", got, want)
	}
	for _, r := range cfg.Routes {
		routes, err := ns.Handle().RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: ipNet(r)}, netlink.RT_FILTER_DST)
		if err != nil {
			t.Fatal(err)
		}
		if len(routes) != 1 || routes[0].LinkIndex != link.Attrs().Index {
			t.Errorf("routes to %v: %v, want one via %s", r, routes, d.Name())
		}
	}
	if cfg.Driver == DriverWater {
		checkWaterCloexec(t, d)
		return
	}
	if want := max(cfg.Queues, 1); len(d.fds) != want {
		t.Errorf("%d queues open, want %d", len(d.fds), want)
	}
}

// checkWaterCloexec checks that the water driver's descriptor has
// FD_CLOEXEC, which water itself does not set.
func checkWaterCloexec(t *testing.T, d *Device) {
	t.Helper()
	w, ok := d.inner.(*waterEndpoint)
	if !ok {
		t.Fatalf("endpoint %T, want the water endpoint", d.inner)
	}
	rc, err := w.rw.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFD, 0) })
	if ferr != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("water's descriptor: F_GETFD = %#x, %v; want FD_CLOEXEC set", flags, ferr)
	}
}

// linkNames lists the interfaces in ns.
func linkNames(t *testing.T, ns *netns.NS) []string {
	t.Helper()
	links, err := ns.Handle().LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

// fdCounts counts the process's descriptors, and among them eventfds.
func fdCounts(t *testing.T) (all, eventfds int) {
	t.Helper()
	runtime.GC() // let finalizers close what earlier tests dropped
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == "anon_inode:[eventfd]" {
			eventfds++
		}
	}
	return len(ents), eventfds
}

// TestClose covers the ways a device and its stack can end: the device
// first (it must take its NIC out of the stack), the stack first, and a
// device never attached. Each must stop every goroutine (TestMain checks),
// delete the device in the kernel and give back every descriptor,
// including fdbased's stop eventfds.
func TestClose(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, d *Device)
	}{
		{"device first", func(t *testing.T, d *Device) {
			s := newStack(t, d.LinkEndpoint(), stack4)
			if !d.LinkEndpoint().IsAttached() {
				t.Fatal("endpoint not attached after CreateNIC")
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if s.HasNIC(nicID) {
				t.Errorf("the stack still has the NIC after Device.Close")
			}
			if d.LinkEndpoint().IsAttached() {
				t.Errorf("endpoint attached after Device.Close")
			}
		}},
		{"stack first", func(t *testing.T, d *Device) {
			s := newStack(t, d.LinkEndpoint(), stack4)
			s.Destroy()
			if d.LinkEndpoint().IsAttached() {
				t.Errorf("endpoint attached after Stack.Destroy")
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"no offload, device first", func(t *testing.T, d *Device) {
			newStack(t, d.LinkEndpoint(), stack4)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"never attached", func(t *testing.T, d *Device) {
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"multiqueue, traffic in flight", func(t *testing.T, d *Device) {
			s := newStack(t, d.LinkEndpoint(), stack4)
			// A dial into the void keeps the stack writing SYNs.
			go gonet.DialTCP(s, fullAddr(netip.MustParseAddrPort("198.18.0.77:9")), protoOf(kernel4.Addr()))
			waitNICPackets(t, s, "the first SYN written to the device", func(st tcpip.NICStats) uint64 { return st.Tx.Packets.Value() })
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			var pkts gvstack.PacketBufferList
			defer pkts.Reset()
			pkts.PushBack(gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{}))
			if n, err := d.LinkEndpoint().WritePackets(pkts); n != 0 || !isClosedForSend(err) {
				t.Errorf("WritePackets after Close = %d, %v; want 0, %v", n, err, &tcpip.ErrClosedForSend{})
			}
			s.Destroy() // ends the dial
		}},
	}
	// The same endings with the water driver (one queue, no offloads).
	for _, tt := range slices.Clone(tests) {
		if !strings.HasPrefix(tt.name, "no offload") {
			tests = append(tests, struct {
				name string
				run  func(t *testing.T, d *Device)
			}{"water, " + tt.name, tt.run})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t)
			cfg := Config{Name: "ustk0", Addrs: []netip.Prefix{kernel4}, Up: true, NetNS: ns.File()}
			if strings.HasPrefix(tt.name, "water, ") {
				cfg.Driver = DriverWater
			}
			if strings.HasPrefix(tt.name, "multiqueue") {
				cfg.MultiQueue, cfg.Queues = true, 3
			}
			cfg.NoOffload = strings.HasPrefix(tt.name, "no offload")
			allBefore, evBefore := fdCounts(t)
			d, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Without offloads fdbased makes a stop eventfd per queue;
			// with them each reader has a duplicate descriptor.
			_, ev := fdCounts(t)
			if _, water := d.inner.(*waterEndpoint); !water && !d.Offload() && ev <= evBefore {
				t.Fatalf("no new eventfd after Open: the stop eventfd check below would prove nothing")
			}
			var readerFiles []*os.File
			if v, ok := d.inner.(*vnetEndpoint); ok {
				readerFiles = v.files
				if len(readerFiles) != len(d.fds) {
					t.Fatalf("%d reader descriptors for %d queues", len(readerFiles), len(d.fds))
				}
			}
			tt.run(t, d)
			if err := d.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if names := linkNames(t, ns); !slices.Equal(names, []string{"lo"}) {
				t.Errorf("links after Close = %v, want [lo]", names)
			}
			for i, f := range readerFiles {
				if f.Fd() != ^uintptr(0) {
					t.Errorf("reader descriptor %d still open after Close", i)
				}
			}
			allAfter, evAfter := fdCounts(t)
			if evAfter != evBefore {
				t.Errorf("eventfds: %d before Open, %d after Close", evBefore, evAfter)
			}
			if allAfter > allBefore {
				t.Errorf("descriptors: %d before Open, %d after Close", allBefore, allAfter)
			}
		})
	}
}

func isClosedForSend(err tcpip.Error) bool {
	_, ok := err.(*tcpip.ErrClosedForSend)
	return ok
}

// TestEndpointAttachesOnce re-adds the endpoint to a stack after its NIC was
// removed. fdbased cannot restart its readers, so the endpoint must stay
// detached rather than start readers that stop at once and release their
// buffers twice.
func TestEndpointAttachesOnce(t *testing.T) {
	ns := netnstest.New(t)
	d := openIn(t, ns, Config{Addrs: []netip.Prefix{kernel4}, Up: true})
	s := newStack(t, d.LinkEndpoint(), stack4)
	if err := s.RemoveNIC(nicID); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNIC(nicID+1, d.LinkEndpoint()); err != nil {
		t.Fatal(err)
	}
	if d.LinkEndpoint().IsAttached() {
		t.Errorf("endpoint attached again after its NIC was removed")
	}
}

// TestOpenErrors checks each failure's errno, message and error classes,
// and that a failed Open leaves no device and no descriptor behind.
func TestOpenErrors(t *testing.T) {
	const busy = `device or resource busy (EBUSY): choose another Config.Name, or leave it empty for the kernel to pick one`
	tests := []struct {
		name    string
		setup   func(t *testing.T, ns *netns.NS) // makes the clash
		cfg     Config
		wantMsg string
		errno   unix.Errno
		class   error // os.ErrExist etc., or nil
	}{{
		name: "name of a TUN device held by another descriptor",
		setup: func(t *testing.T, ns *netns.NS) {
			openIn(t, ns, Config{Name: "ustk0"})
		},
		cfg:     Config{Name: "ustk0"},
		wantMsg: `tun: create device "ustk0": a device named "ustk0" already exists, ` + busy,
		errno:   unix.EBUSY, class: os.ErrExist,
	}, {
		// Without IFF_TUN_EXCL the kernel would attach a new queue to it.
		name: "name of a multi-queue TUN device",
		setup: func(t *testing.T, ns *netns.NS) {
			openIn(t, ns, Config{Name: "ustk-mq", MultiQueue: true, Queues: 2})
		},
		cfg:     Config{Name: "ustk-mq", MultiQueue: true, Queues: 2},
		wantMsg: `tun: create device "ustk-mq": a device named "ustk-mq" already exists, ` + busy,
		errno:   unix.EBUSY, class: os.ErrExist,
	}, {
		name:    "name of the loopback device",
		cfg:     Config{Name: "lo"},
		wantMsg: `tun: create device "lo": a device named "lo" already exists, ` + busy,
		errno:   unix.EBUSY, class: os.ErrExist,
	}, {
		name: "name of a bridge",
		setup: func(t *testing.T, ns *netns.NS) {
			if err := ns.Handle().LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ustk-br0"}}); err != nil {
				t.Fatal(err)
			}
		},
		cfg:     Config{Name: "ustk-br0"},
		wantMsg: `tun: create device "ustk-br0": a device named "ustk-br0" already exists, ` + busy,
		errno:   unix.EBUSY, class: os.ErrExist,
	}, {
		// Configuration fails after the device exists: Open must delete it.
		name:    "duplicate route",
		cfg:     Config{Name: "ustk0", Up: true, Routes: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("198.18.1.0/24")}},
		wantMsg: `tun: add route 198.18.1.0/24 on "ustk0": file exists (EEXIST)`,
		errno:   unix.EEXIST, class: os.ErrExist,
	}, {
		name:    "IPv6 address on a device with an MTU below 1280",
		cfg:     Config{Name: "ustk0", MTU: 1000, Addrs: []netip.Prefix{kernel4, kernel6}},
		wantMsg: `tun: add address fd00::1/64 on "ustk0": invalid argument (EINVAL)`,
		errno:   unix.EINVAL,
	}, {
		// water cannot pass IFF_TUN_EXCL; Open refuses a taken name first.
		name: "water: name of a TUN device held by another descriptor",
		setup: func(t *testing.T, ns *netns.NS) {
			openIn(t, ns, Config{Name: "ustk0"})
		},
		cfg:     Config{Driver: DriverWater, Name: "ustk0"},
		wantMsg: `tun: create device "ustk0": a device named "ustk0" already exists, file exists (EEXIST): choose another Config.Name, or leave it empty for the kernel to pick one`,
		errno:   unix.EEXIST, class: os.ErrExist,
	}, {
		name:    "water: name of the loopback device",
		cfg:     Config{Driver: DriverWater, Name: "lo"},
		wantMsg: `tun: create device "lo": a device named "lo" already exists, file exists (EEXIST): choose another Config.Name, or leave it empty for the kernel to pick one`,
		errno:   unix.EEXIST, class: os.ErrExist,
	}, {
		name:    "water: duplicate route",
		cfg:     Config{Driver: DriverWater, Name: "ustk0", Up: true, Routes: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("198.18.1.0/24")}},
		wantMsg: `tun: add route 198.18.1.0/24 on "ustk0": file exists (EEXIST)`,
		errno:   unix.EEXIST, class: os.ErrExist,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t)
			if tt.setup != nil {
				tt.setup(t, ns)
			}
			linksBefore := linkNames(t, ns)
			fdsBefore, _ := fdCounts(t)
			cfg := tt.cfg
			cfg.NetNS = ns.File()
			d, err := Open(cfg)
			if err == nil {
				d.Close()
				t.Fatalf("Open succeeded, want %q", tt.wantMsg)
			}
			checkErr(t, err, tt.wantMsg, tt.errno, tt.class)
			if got := linkNames(t, ns); !slices.Equal(got, linksBefore) {
				t.Errorf("links after the failed Open = %v, want %v", got, linksBefore)
			}
			if fds, _ := fdCounts(t); fds > fdsBefore {
				t.Errorf("descriptors: %d before the failed Open, %d after", fdsBefore, fds)
			}
		})
	}
}

func checkErr(t *testing.T, err error, wantMsg string, errno unix.Errno, class error) {
	t.Helper()
	if err.Error() != wantMsg {
		t.Errorf("error\n got %s\nwant %s", err, wantMsg)
	}
	if !errors.Is(err, errno) {
		t.Errorf("errors.Is(err, %s) = false", unix.ErrnoName(errno))
	}
	if class != nil && !errors.Is(err, class) {
		t.Errorf("errors.Is(err, %v) = false", class)
	}
}

// TestOpenWithoutCapNetAdmin opens a device on a thread that has lost
// CAP_NET_ADMIN: the kernel refuses to create it with EPERM.
func TestOpenWithoutCapNetAdmin(t *testing.T) {
	ns := netnstest.New(t)
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, with its reduced capabilities and
		// its namespace, ends with this goroutine.
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.File().Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		if err := privtest.DropCap(unix.CAP_NET_ADMIN); err != nil {
			errc <- fmt.Errorf("dropping CAP_NET_ADMIN: %w", err)
			return
		}
		d, err := Open(Config{Name: "ustk-eperm"}) // in this thread's namespace
		if err == nil {
			d.Close()
			err = errors.New("Open succeeded without CAP_NET_ADMIN")
		}
		errc <- err
	}()
	err := <-errc
	checkErr(t, err, `tun: create device "ustk-eperm": operation not permitted (EPERM): needs CAP_NET_ADMIN: run as root or in a user namespace that owns the network namespace`, unix.EPERM, os.ErrPermission)
	if names := linkNames(t, ns); !slices.Equal(names, []string{"lo"}) {
		t.Errorf("links = %v, want [lo]", names)
	}
}

// TestOpenWithoutTunDevice points Open at a clone device that does not
// exist, as on a machine without the tun module. It needs no privileges.
func TestOpenWithoutTunDevice(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "net", "tun")
	old := devPath
	devPath = missing
	defer func() { devPath = old }()
	_, err := Open(Config{})
	if err == nil {
		t.Fatal("Open succeeded without a clone device")
	}
	checkErr(t, err, "tun: "+missing+" does not exist: load the tun module (modprobe tun) or run with /dev/net/tun available", unix.ENOENT, os.ErrNotExist)
}

// TestOpenInCurrentNamespace opens a device with a nil Config.NetNS from a
// thread inside the namespace: the device must appear there.
func TestOpenInCurrentNamespace(t *testing.T) {
	ns := netnstest.New(t)
	var d *Device
	if err := ns.Do(func() (err error) {
		d, err = Open(Config{Name: "ustk-here", Up: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if names := linkNames(t, ns); !slices.Equal(names, []string{"lo", "ustk-here"}) {
		t.Errorf("links in the namespace = %v, want [lo ustk-here]", names)
	}
	if _, err := netlink.LinkByName("ustk-here"); err == nil {
		t.Errorf("device visible in the host namespace")
	}
}

// TestTeardownUnderLoad removes the NIC while the kernel floods the stack
// with UDP. The stack removes a NIC holding its lock and waits for the
// link's readers, while every inbound packet takes that lock: a reader that
// delivered inline would deadlock here (it did, before the handoff).
func TestTeardownUnderLoad(t *testing.T) {
	tests := []struct {
		name     string
		teardown func(s *gvstack.Stack, d *Device) error
	}{
		{"Stack.Destroy", func(s *gvstack.Stack, d *Device) error { s.Destroy(); return nil }},
		{"Stack.RemoveNIC", func(s *gvstack.Stack, d *Device) error {
			if err := s.RemoveNIC(nicID); err != nil {
				return fmt.Errorf("RemoveNIC: %v", err)
			}
			return nil
		}},
		{"Device.Close", func(s *gvstack.Stack, d *Device) error { return d.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for round := range 5 {
				ns := netnstest.New(t)
				d := openIn(t, ns, Config{MultiQueue: round%2 == 1, Addrs: []netip.Prefix{kernel4}, Up: true})
				s := newStack(t, d.LinkEndpoint(), stack4)
				// Unconnected, so that ICMP port unreachable does not turn
				// the next writes into errors.
				c, err := ns.ListenPacket("udp4", netip.AddrPortFrom(kernel4.Addr(), 0).String())
				if err != nil {
					t.Fatal(err)
				}
				to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(stack4.Addr(), 9))
				stop := make(chan struct{})
				flooded := make(chan int)
				go func() {
					// Bounded: at most 2 s or 200k datagrams.
					var n int
					payload := make([]byte, 512)
					for deadline := time.Now().Add(2 * time.Second); n < 200_000 && time.Now().Before(deadline); n++ {
						select {
						case <-stop:
							flooded <- n
							return
						default:
						}
						if _, err := c.WriteTo(payload, to); err != nil {
							break // the device is gone
						}
					}
					flooded <- n
				}()
				waitNICPackets(t, s, "the first flood datagram read from the device", func(st tcpip.NICStats) uint64 { return st.Rx.Packets.Value() })
				done := make(chan error, 1)
				go func() { done <- tt.teardown(s, d) }()
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(10 * time.Second):
					buf := make([]byte, 1<<20)
					t.Fatalf("teardown deadlocked; goroutines:\n%s", buf[:runtime.Stack(buf, true)])
				}
				close(stop)
				<-flooded
				c.Close()
			}
		})
	}
}

// TestGone: deleting an attached device in the kernel (ip link del) closes
// Gone, on both link endpoints; Close does not.
func TestGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"offload", Config{}},
		{"no offload", Config{NoOffload: true}},
		{"water", Config{Driver: DriverWater}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netnstest.New(t)
			cfg := tc.cfg
			cfg.Addrs, cfg.Up = []netip.Prefix{kernel4}, true
			d := openIn(t, ns, cfg)
			newStack(t, d.LinkEndpoint(), stack4)
			select {
			case <-d.Gone():
				t.Fatal("Gone closed while the device is there")
			case <-time.After(50 * time.Millisecond):
			}
			link, err := ns.Handle().LinkByName(d.Name())
			if err != nil {
				t.Fatal(err)
			}
			if err := ns.Handle().LinkDel(link); err != nil {
				t.Fatal(err)
			}
			select {
			case <-d.Gone():
			case <-time.After(5 * time.Second):
				t.Fatal("Gone not closed 5 s after the device was deleted")
			}
		})
	}
	// Close alone does not close it.
	ns := netnstest.New(t)
	cfg := Config{Addrs: []netip.Prefix{kernel4}, Up: true, NetNS: ns.File()}
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, d.LinkEndpoint(), stack4)
	s.Destroy()
	d.Close()
	select {
	case <-d.Gone():
		t.Fatal("Gone closed by Close")
	case <-time.After(50 * time.Millisecond):
	}
}

// TestTxQueueLen checks that Config.TxQueueLen sets the device's queue,
// and that it is the queue the kernel's packets wait in for the reader:
// with no reader yet, a burst larger than the queue fills it and the rest
// is dropped.
func TestTxQueueLen(t *testing.T) {
	privtest.Require(t)
	for _, tt := range []struct {
		name      string
		qlen      int // Config.TxQueueLen
		wantQLen  int // what the kernel reports
		burst     int // datagrams the kernel sends
		wantDrops int // at least; a few more are the kernel's own IPv6 packets
	}{
		{name: "default", qlen: 0, wantQLen: 500, burst: 200, wantDrops: 0},
		{name: "short", qlen: 64, wantQLen: 64, burst: 200, wantDrops: 200 - 64},
		{name: "long", qlen: 4096, wantQLen: 4096, burst: 3000, wantDrops: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t)
			d := openIn(t, ns, Config{Name: "ustk-q", TxQueueLen: tt.qlen, Addrs: []netip.Prefix{kernel4}, Up: true})
			link, err := ns.Handle().LinkByName(d.Name())
			if err != nil {
				t.Fatal(err)
			}
			if got := link.Attrs().TxQLen; got != tt.wantQLen {
				t.Fatalf("txqueuelen = %d, want %d", got, tt.wantQLen)
			}
			before := link.Attrs().Statistics.TxDropped
			if err := ns.Do(func() error {
				c, err := net.Dial("udp4", netip.AddrPortFrom(stack4.Addr(), 9).String())
				if err != nil {
					return err
				}
				defer c.Close()
				for range tt.burst {
					if _, err := c.Write([]byte("q")); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if link, err = ns.Handle().LinkByName(d.Name()); err != nil {
				t.Fatal(err)
			}
			drops := int(link.Attrs().Statistics.TxDropped - before)
			if drops < tt.wantDrops || drops > tt.wantDrops+16 {
				t.Errorf("%d of %d datagrams dropped with txqueuelen %d; want %d (up to 16 more for the kernel's own packets)", drops, tt.burst, tt.wantQLen, tt.wantDrops)
			}
		})
	}
}

// waitNICPackets waits (bounded) until count, applied to the stack's NIC
// counters, is at least 1: what names the packet awaited.
func waitNICPackets(t *testing.T, s *gvstack.Stack, what string, count func(tcpip.NICStats) uint64) {
	t.Helper()
	testnet.WaitFor(t, 10*time.Second, what, func() error {
		if n := count(s.NICInfo()[nicID].Stats); n == 0 {
			return errors.New("the NIC counts no such packet")
		}
		return nil
	})
}
