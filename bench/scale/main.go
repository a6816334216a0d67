//go:build linux

// Command scale opens and holds many established TCP connections in one
// ustack over one TUN, then closes them all and checks that every port
// came back. Run it as root:
//
//	go run ./bench/scale -n 250000 -csv docs/bench/scale.csv
//
// The stack dials 32 kernel listeners in the TUN's private namespace
// through the default IANA range (16,384 ports), so the ports are shared
// across destinations (portalloc.PerDestination, the stack's default for
// TCP). It reports the time to open them all, connections per second
// while opening, ustack's memory per connection, and the allocator's time
// per allocate+release at that occupancy. In the same run it times
// gVisor's own port manager holding the same 4-tuples, and the kernel's
// connect() with IP_BIND_ADDRESS_NO_PORT from a second namespace.
//
// The kernel cannot give each of its ends a descriptor: a process may
// hold 20,000 at most here. The kernel's ends therefore stay in the
// listeners' accept queues, established but never accepted; each
// listener's backlog (twice its share of the stack's and the kernel
// client's connections) is allowed by the namespace's own
// net.core.somaxconn. The kernel client's sockets are spread over child
// processes (this program with -kernel-child), 18,000 each. See
// docs/BENCHMARKS.md (Scale) for every setting.
package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	cryptorand "gvisor.dev/gvisor/pkg/rand"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
)

var (
	kernelAddr = netip.MustParsePrefix("198.18.0.1/24")
	stackAddr  = netip.MustParsePrefix("198.18.0.2/24")
	vethServer = netip.MustParsePrefix("198.18.1.1/24") // the listeners' namespace
	vethClient = netip.MustParsePrefix("198.18.1.2/24") // the kernel client's namespace
)

var (
	nConns    = flag.Int("n", 250000, "connections to open and hold")
	nListen   = flag.Int("listeners", 32, "kernel listeners (destinations)")
	workers   = flag.Int("workers", 64, "concurrent dials")
	allocOps  = flag.Int("alloc-ops", 1000000, "allocate+release operations timed at full occupancy")
	gvisorOps = flag.Int("gvisor-ops", 20000, "gVisor port manager reserve+release operations timed at full occupancy")
	kernelN   = flag.Int("kernel-conns", 250000, "kernel connect() calls timed, held by child processes of 18,000 sockets each (a process may hold 20,000 descriptors)")
	kChild    = flag.Int("kernel-child", 0, "internal: run as a kernel client child making this many connects")
	kOffset   = flag.Int("kernel-offset", 0, "internal: the kernel child's first connection number")
	csvPath   = flag.String("csv", "", "write time, connections, heap and RSS samples to this CSV file")
	sampleEv  = flag.Duration("sample", 250*time.Millisecond, "sampling interval for -csv")
)

func main() {
	flag.Parse()
	if *kChild > 0 {
		if err := kernelChild(*kChild, *kOffset, *nListen); err != nil {
			fmt.Fprintln(os.Stderr, "scale: kernel child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, TUN)")
	}
	if *nConns < 1 || *nListen < 1 || *nConns > *nListen*portalloc.IANA.Size() {
		return fmt.Errorf("-n %d with -listeners %d: want 1 to %d (a range of ports per listener)", *nConns, *nListen, *nListen*portalloc.IANA.Size())
	}
	// Room for the stack's connections and the kernel client's, twice.
	backlog := max(8192, 2*((*nConns+*kernelN) / *nListen))
	ns, err := netns.New()
	if err != nil {
		return err
	}
	defer ns.Close()
	// Kernel settings, inside the listeners' namespace only.
	sysctls := []struct{ path, value string }{
		// A listener's backlog is capped at somaxconn; each holds its
		// share of the connections, never accepted.
		{"/proc/sys/net/core/somaxconn", strconv.Itoa(backlog)},
		// Half-open connections while the stack dials quickly.
		{"/proc/sys/net/ipv4/tcp_max_syn_backlog", strconv.Itoa(backlog)},
		// A full accept queue must not look like a flood.
		{"/proc/sys/net/ipv4/tcp_syncookies", "0"},
	}
	if err := ns.Do(func() error {
		for _, s := range sysctls {
			if err := os.WriteFile(s.path, []byte(s.value), 0); err != nil {
				return fmt.Errorf("%s: %w", s.path, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	for _, s := range sysctls {
		progress("namespace sysctl %s = %s", strings.TrimPrefix(s.path, "/proc/sys/"), s.value)
	}
	dev, err := tun.Open(tun.Config{Name: "usc%d", MTU: 1500, NetNS: ns.File(), Addrs: []netip.Prefix{kernelAddr}, Up: true})
	if err != nil {
		return fmt.Errorf("tun: %w", err)
	}
	defer dev.Close()

	// Kernel listeners: raw sockets, so the backlog is ours (package net
	// asks for the host's somaxconn, read once per process).
	var dsts []netip.AddrPort
	var lfds []int
	defer func() {
		for _, fd := range lfds {
			unix.Close(fd)
		}
	}()
	if err := ns.Do(func() error {
		for i := range *nListen {
			addr := netip.AddrPortFrom(kernelAddr.Addr(), uint16(10000+i))
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			lfds = append(lfds, fd)
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
				return fmt.Errorf("bind %v: %w", addr, err)
			}
			if err := unix.Listen(fd, backlog); err != nil {
				return fmt.Errorf("listen %v: %w", addr, err)
			}
			dsts = append(dsts, addr)
		}
		return nil
	}); err != nil {
		return err
	}

	st, err := stack.New(stack.Config{Link: dev.LinkEndpoint(), Addrs: []netip.Prefix{stackAddr}})
	if err != nil {
		return err
	}
	defer st.Close()

	var held atomic.Int64
	samples := startSampler(&held)
	runtime.GC()
	heap0, rss0 := heapInUse(), rss()

	// Open.
	conns := make([]*stack.TCPConn, *nConns)
	var failed atomic.Int64
	var errMu sync.Mutex
	errs := map[string]int{}
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(conns) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				c, err := st.DialTCPAddrPort(ctx, netip.AddrPort{}, dsts[i%len(dsts)])
				cancel()
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					errs[err.Error()]++
					errMu.Unlock()
					continue
				}
				conns[i] = c
				if n := held.Add(1); n%25000 == 0 {
					progress("%d connections held", n)
				}
			}
		}()
	}
	wg.Wait()
	openTime := time.Since(start)
	for e, n := range errs {
		progress("dial failure (%d): %s", n, e)
	}
	runtime.GC()
	heap1, rss1 := heapInUse(), rss()
	snap := st.Ports()[portalloc.TCP]
	kernelSeen, err := kernelTCPInUse(ns)
	if err != nil {
		return err
	}
	conntrack := conntrackCount(ns)

	// The allocator at this occupancy, beside gVisor's port manager
	// holding the same 4-tuples.
	allocNs := timeAllocator(st, dsts)
	gvNs, gvErr := timeGVisor(conns, dsts)
	kernelNs, kernelRate, kernelErr := timeKernel(ns, dsts)
	// The kernel's handshakes complete behind its non-blocking connects:
	// wait (bounded) for the listeners' namespace to count them.
	bothSeen := kernelSeen
	if kernelErr == nil {
		want := kernelSeen + *kernelN
		for deadline := time.Now().Add(60 * time.Second); bothSeen < want && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if bothSeen, err = kernelTCPInUse(ns); err != nil {
				return err
			}
		}
	}

	// Close: resets, so no TIME_WAIT holds a port (the kernel's ends sit
	// unaccepted and would never send their FIN).
	closeStart := time.Now()
	for _, c := range conns {
		if c != nil {
			c.SetLinger(0)
			c.Close()
			held.Add(-1)
		}
	}
	released := waitReleased(st, 30*time.Second)
	closeTime := time.Since(closeStart)
	after := st.Ports()[portalloc.TCP]
	// Let go of the closed connections and return the memory, so that
	// the samples show it come back.
	clear(conns)
	runtime.GC()
	debug.FreeOSMemory()
	heap2, rss2 := heapInUse(), rss()
	time.Sleep(2 * *sampleEv) // a last sample or two of the freed state
	samples.stop()
	if *csvPath != "" {
		if err := samples.write(*csvPath); err != nil {
			return err
		}
	}

	n := *nConns - int(failed.Load())
	fmt.Printf("### Scale: %d connections to %d kernel listeners through %s (%d ports)\n\n", *nConns, *nListen, snap.Range, snap.Range.Size())
	fmt.Println("| measure | value |")
	fmt.Println("| --- | ---: |")
	fmt.Printf("| connections held | %d (%d failed) |\n", n, failed.Load())
	fmt.Printf("| kernel sockets in the namespace (sockstat TCP inuse) | %d |\n", kernelSeen)
	fmt.Printf("| conntrack entries in the namespace | %s |\n", conntrack)
	fmt.Printf("| pool: ports in use / connections / destinations | %d / %d / %d |\n", snap.InUse, snap.Connections, snap.Destinations)
	fmt.Printf("| time to open them all | %.1f s |\n", openTime.Seconds())
	fmt.Printf("| connections per second while opening | %.0f |\n", float64(n)/openTime.Seconds())
	fmt.Printf("| Go heap per connection | %.0f B |\n", float64(heap1-heap0)/float64(max(n, 1)))
	fmt.Printf("| process RSS per connection | %.0f B |\n", float64(rss1-rss0)/float64(max(n, 1)))
	fmt.Printf("| ustack allocate+release at this occupancy, wall | %.1f ns (%.2fx an empty exclusive pool, %.1f ns, same run) |\n", allocNs, allocNs/allocBaseline, allocBaseline)
	fmt.Printf("| ustack allocate+release at this occupancy, thread CPU | %.1f ns (%.2fx an empty exclusive pool, %.1f ns, same run) |\n", allocCPU, allocCPU/allocBaselineCPU, allocBaselineCPU)
	if gvErr != nil {
		fmt.Printf("| gVisor port manager reserve+release, same 4-tuples | error: %v |\n", gvErr)
	} else {
		fmt.Printf("| gVisor port manager reserve+release, same 4-tuples | %.1f ns wall (%.1fx ustack), %.1f ns CPU (%.1fx ustack) |\n", gvNs, gvNs/allocNs, gvCPU, gvCPU/allocCPU)
	}
	if kernelErr != nil {
		fmt.Printf("| kernel connect(), IP_BIND_ADDRESS_NO_PORT | error: %v |\n", kernelErr)
	} else {
		fmt.Printf("| kernel non-blocking connect() with IP_BIND_ADDRESS_NO_PORT (port choice, hashing, SYN), second namespace, mean over %d | %.0f ns per call wall (%.1fx ustack's allocator), %.0f ns CPU (%.1fx), %.0f calls/s |\n",
			*kernelN, kernelNs, kernelNs/allocNs, kernelCPU, kernelCPU/allocCPU, kernelRate)
		fmt.Printf("| the same, the last 18,000 or fewer (up to %d held) | %.0f ns wall (%.1fx), %.0f ns CPU (%.1fx) |\n",
			*kernelN, kernelLastNs, kernelLastNs/allocNs, kernelLastCPU, kernelLastCPU/allocCPU)
	}
	fmt.Printf("| listeners' namespace sockets with the kernel client's too | %d |\n", bothSeen)
	fmt.Printf("| time to reset them all and get every port back | %.1f s |\n", closeTime.Seconds())
	fmt.Printf("| after close: ports in use / connections | %d / %d |\n", after.InUse, after.Connections)
	fmt.Printf("| after close and GC: Go heap / RSS above the start | %.0f MiB / %.0f MiB |\n", (float64(heap2)-float64(heap0))/(1<<20), (float64(rss2)-float64(rss0))/(1<<20))
	fmt.Println()
	if failed.Load() != 0 {
		return fmt.Errorf("%d dials failed", failed.Load())
	}
	if !released {
		return fmt.Errorf("ports still held 30 s after the last close: %d in use, %d connections", after.InUse, after.Connections)
	}
	return nil
}

// waitReleased waits (bounded) until the TCP pool holds nothing.
func waitReleased(st *stack.Stack, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		s := st.Ports()[portalloc.TCP]
		if s.InUse == 0 && s.Connections == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// allocBaseline is the same-run baseline of timeAllocator; the cpu
// figures are the timing thread's own CPU time per operation, which
// time-slicing on a loaded machine does not inflate.
var allocBaseline, allocBaselineCPU, allocCPU, gvCPU, kernelCPU, kernelLastNs, kernelLastCPU float64

// timed runs fn n times on a locked thread and returns the wall and
// thread CPU nanoseconds per call.
func timed(n int, fn func(i int)) (wall, cpu float64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c0 := threadCPU()
	start := time.Now()
	for i := range n {
		fn(i)
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n), float64((threadCPU() - c0).Nanoseconds()) / float64(n)
}

func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeAllocator times allocate+release toward the destinations in turn on
// the stack's own TCP pool, as full as the run left it.
func timeAllocator(st *stack.Stack, dsts []netip.AddrPort) float64 {
	pool := st.Allocator().Pool(portalloc.TCP)
	reqs := make([]portalloc.Request, len(dsts))
	for i, d := range dsts {
		reqs[i] = portalloc.Request{Local: stackAddr.Addr(), Remote: d}
	}
	// The same-run baseline: an empty pool with exclusive ports, whose
	// allocate+release docs/BENCHMARKS.md holds to 100 ns.
	base, err := portalloc.NewPool(portalloc.TCP, portalloc.PoolConfig{})
	if err != nil {
		panic(err)
	}
	baseline, baselineCPU := 0.0, 0.0
	for round := range 3 {
		ns, cpu := timed(*allocOps, func(int) {
			port, _ := base.Allocate(portalloc.Request{})
			base.Release(port)
		})
		if round == 0 || ns < baseline {
			baseline, baselineCPU = ns, cpu
		}
	}
	progress("baseline: empty exclusive pool, %.1f ns (%.1f ns CPU) per allocate+release (best of 3)", baseline, baselineCPU)
	allocBaseline, allocBaselineCPU = baseline, baselineCPU
	var failed error
	best, bestCPU := 0.0, 0.0
	for round := range 3 {
		ns, cpu := timed(*allocOps, func(i int) {
			req := reqs[i%len(reqs)]
			port, err := pool.Allocate(req)
			if err != nil {
				failed = err
				return
			}
			pool.ReleaseTo(port, req.Remote)
		})
		if round == 0 || ns < best {
			best, bestCPU = ns, cpu
		}
	}
	if failed != nil {
		progress("allocator: %v", failed)
		return 0
	}
	allocCPU = bestCPU
	progress("ustack allocator at occupancy: %.1f ns (%.1f ns CPU) per allocate+release (best of 3)", best, bestCPU)
	return best
}

// timeGVisor fills a fresh gVisor port manager with the 4-tuples of the
// held connections, as gVisor's own connect path would have reserved
// them, then times a connect's port choice and reservation and its
// release. gVisor's TCP connect (registerEndpoint) picks with
// PickEphemeralPort and reserves each candidate with its destination;
// ReservePort with port 0 would not share a TCP port at all.
func timeGVisor(conns []*stack.TCPConn, dsts []netip.AddrPort) (float64, error) {
	pm := ports.NewPortManager()
	if err := pm.SetPortRange(portalloc.IANA.First, portalloc.IANA.Last); err != nil {
		return 0, fmt.Errorf("SetPortRange: %v", err)
	}
	rng := cryptorand.RNGFrom(cryptorand.Reader)
	local := tcpip.AddrFrom4(stackAddr.Addr().As4())
	res := func(port uint16, dst netip.AddrPort) ports.Reservation {
		return ports.Reservation{
			Networks:  []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber},
			Transport: header.TCPProtocolNumber,
			Addr:      local,
			Port:      port,
			Dest:      tcpip.FullAddress{Addr: tcpip.AddrFrom4(dst.Addr().As4()), Port: dst.Port()},
		}
	}
	for _, c := range conns {
		if c == nil {
			continue
		}
		if _, err := pm.ReservePort(rng, res(c.LocalAddrPort().Port(), c.RemoteAddrPort()), nil); err != nil {
			return 0, fmt.Errorf("filling: %v", err)
		}
	}
	var failed tcpip.Error
	ns, cpu := timed(*gvisorOps, func(i int) {
		dst := dsts[i%len(dsts)]
		var r ports.Reservation
		if _, err := pm.PickEphemeralPort(rng, func(p uint16) (bool, tcpip.Error) {
			r = res(p, dst)
			if _, err := pm.ReservePort(rng, r, nil); err != nil {
				return false, nil
			}
			return true, nil
		}); err != nil {
			failed = err
			return
		}
		pm.ReleasePort(r)
	})
	if failed != nil {
		return 0, fmt.Errorf("pick: %v", failed)
	}
	gvCPU = cpu
	progress("gVisor port manager at occupancy: %.1f ns (%.1f ns CPU) per reserve+release", ns, cpu)
	runtime.KeepAlive(pm)
	return ns, nil
}

// timeKernel times the kernel's connect() from a second namespace, joined
// to the listeners' by a veth pair, with IP_BIND_ADDRESS_NO_PORT (bind to
// the address, let connect pick the port per 4-tuple): -kernel-conns
// connections round-robin to the same listeners, held until the end by
// child processes of up to 18,000 sockets each.
func timeKernel(srv *netns.NS, dsts []netip.AddrPort) (nsPerConnect, rate float64, err error) {
	cli, err := netns.New()
	if err != nil {
		return 0, 0, err
	}
	defer cli.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "vsc", MTU: 1500},
		PeerName:      "vss",
		PeerNamespace: netlink.NsFd(int(srv.File().Fd())),
	}
	if err := cli.Handle().LinkAdd(veth); err != nil {
		return 0, 0, fmt.Errorf("veth: %w", err)
	}
	for _, end := range []struct {
		ns   *netns.NS
		name string
		addr netip.Prefix
	}{{cli, "vsc", vethClient}, {srv, "vss", vethServer}} {
		h := end.ns.Handle()
		l, err := h.LinkByName(end.name)
		if err != nil {
			return 0, 0, err
		}
		ipn := &net.IPNet{IP: end.addr.Addr().AsSlice(), Mask: net.CIDRMask(end.addr.Bits(), 32)}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
			return 0, 0, err
		}
		if err := h.LinkSetUp(l); err != nil {
			return 0, 0, err
		}
	}
	gw := net.IP(vethServer.Addr().AsSlice())
	l, err := cli.Handle().LinkByName("vsc")
	if err != nil {
		return 0, 0, err
	}
	dst := &net.IPNet{IP: net.IP(kernelAddr.Masked().Addr().AsSlice()), Mask: net.CIDRMask(kernelAddr.Bits(), 32)}
	if err := cli.Handle().RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: gw}); err != nil {
		return 0, 0, fmt.Errorf("route: %w", err)
	}
	// The client namespace gets the stack's range, so that the kernel
	// picks among the same 16,384 ports per destination.
	if err := cli.Do(func() error {
		r := portalloc.IANA
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte(fmt.Sprintf("%d %d", r.First, r.Last)), 0)
	}); err != nil {
		return 0, 0, err
	}
	// A process holds at most 20,000 descriptors: spread the sockets over
	// child processes (this program again, -kernel-child), each of which
	// holds its share until its standard input closes.
	const perChild = 18000
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
	}
	var children []child
	defer func() {
		for _, c := range children {
			c.stdin.Close()
			c.cmd.Wait()
		}
	}()
	var connectTime, connectCPU time.Duration
	var lastNs, lastCPU float64
	start := time.Now()
	for off := 0; off < *kernelN; off += perChild {
		n := min(perChild, *kernelN-off)
		cmd := exec.Command("/proc/self/exe", "-kernel-child", strconv.Itoa(n), "-kernel-offset", strconv.Itoa(off), "-listeners", strconv.Itoa(len(dsts)))
		cmd.ExtraFiles = []*os.File{cli.File()} // fd 3 in the child
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return 0, 0, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return 0, 0, err
		}
		if err := cmd.Start(); err != nil {
			return 0, 0, err
		}
		children = append(children, child{cmd, stdin})
		var wallNs, cpuNs int64
		var got int
		if _, err := fmt.Fscanf(stdout, "ok %d %d %d\n", &got, &wallNs, &cpuNs); err != nil || got != n {
			return 0, 0, fmt.Errorf("kernel child at %d: %d connects, %v", off, got, err)
		}
		connectTime += time.Duration(wallNs)
		connectCPU += time.Duration(cpuNs)
		lastNs, lastCPU = float64(wallNs)/float64(n), float64(cpuNs)/float64(n)
		progress("kernel connect(): %d held, the last %d at %.0f ns (%.0f ns CPU) each", off+n, n, lastNs, lastCPU)
	}
	el := time.Since(start)
	nsPer := float64(connectTime.Nanoseconds()) / float64(*kernelN)
	kernelCPU = float64(connectCPU.Nanoseconds()) / float64(*kernelN)
	kernelLastNs, kernelLastCPU = lastNs, lastCPU
	progress("kernel connect(): %.0f ns (%.0f ns CPU) each over all %d, %.0f conns/s", nsPer, kernelCPU, *kernelN, float64(*kernelN)/el.Seconds())
	return nsPer, float64(*kernelN) / el.Seconds(), nil
}

// kernelChild is the -kernel-child mode: in the namespace open on
// descriptor 3, make n non-blocking connects with IP_BIND_ADDRESS_NO_PORT
// to the listeners in turn (from the offset-th), report "ok n wall-ns
// cpu-ns" for the connect calls on standard output, then hold the sockets
// until standard input closes.
func kernelChild(n, offset, listeners int) error {
	runtime.LockOSThread()
	if err := unix.Setns(3, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns: %w", err)
	}
	src := &unix.SockaddrInet4{Addr: vethClient.Addr().As4()}
	var wall, cpu time.Duration
	for i := range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("socket #%d: %w", offset+i, err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
			return err
		}
		if err := unix.Bind(fd, src); err != nil {
			return fmt.Errorf("bind #%d: %w", offset+i, err)
		}
		port := 10000 + (offset+i)%listeners
		c0 := threadCPU()
		t0 := time.Now()
		// Non-blocking: the call picks the port, hashes the connection
		// in and sends the SYN; the handshake completes behind it.
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: kernelAddr.Addr().As4()}); err != nil && err != unix.EINPROGRESS {
			return fmt.Errorf("connect #%d to port %d: %w", offset+i, port, err)
		}
		wall += time.Since(t0)
		cpu += threadCPU() - c0
	}
	fmt.Printf("ok %d %d %d\n", n, wall.Nanoseconds(), cpu.Nanoseconds())
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// kernelTCPInUse reads the namespace's count of TCP sockets in use.
func kernelTCPInUse(ns *netns.NS) (int, error) {
	n := -1
	err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/sockstat")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "TCP:" && f[1] == "inuse" {
				n, err = strconv.Atoi(f[2])
				return err
			}
		}
		return errors.New("no TCP line in sockstat")
	})
	return n, err
}

// conntrackCount reports the namespace's conntrack entries, or why not.
func conntrackCount(ns *netns.NS) string {
	s := "off (no nf_conntrack in the namespace)"
	ns.Do(func() error {
		if b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count"); err == nil {
			s = strings.TrimSpace(string(b))
		}
		return nil
	})
	return s
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// rss returns the process's resident set size in bytes.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sampler records connections and memory over time.
type sampler struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	rows [][4]float64 // seconds, connections, heap MiB, RSS MiB
}

func startSampler(held *atomic.Int64) *sampler {
	s := &sampler{done: make(chan struct{})}
	start := time.Now()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(*sampleEv)
		defer t.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			s.mu.Lock()
			s.rows = append(s.rows, [4]float64{time.Since(start).Seconds(), float64(held.Load()),
				float64(m.HeapInuse+m.StackInuse) / (1 << 20), float64(rss()) / (1 << 20)})
			s.mu.Unlock()
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() { close(s.done); s.wg.Wait() }

func (s *sampler) write(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"seconds", "connections", "heap_mib", "rss_mib"})
	for _, r := range s.rows {
		w.Write([]string{strconv.FormatFloat(r[0], 'f', 2, 64), strconv.FormatFloat(r[1], 'f', 0, 64),
			strconv.FormatFloat(r[2], 'f', 1, 64), strconv.FormatFloat(r[3], 'f', 1, 64)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
