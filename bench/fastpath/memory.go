//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/stack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// memResult is what a memory child reports.
type memResult struct {
	Conns      int     `json:"conns"`
	RSSBefore  int64   `json:"rss_before"`
	RSSAfter   int64   `json:"rss_after"`
	HeapBefore uint64  `json:"heap_before"`
	HeapAfter  uint64  `json:"heap_after"`
	DialSecs   float64 `json:"dial_secs"`
}

// runMemory measures the RSS per idle established TCP connection of a
// process that holds a ustack stack on a TUN with *conns connections to a
// kernel listener, with ustack's TCP settings and with gVisor's defaults.
// Each setting runs in a fresh child process; this process is the kernel
// side (its own memory is not counted).
func runMemory() error {
	type row struct {
		tune string
		r    memResult
	}
	rows := []*row{{tune: "ustack"}, {tune: "gvisor"}}
	for _, r := range rows {
		var err error
		if r.r, err = memRun(r.tune); err != nil {
			return fmt.Errorf("memory (%s settings): %w", r.tune, err)
		}
		progress("memory %s: %+v", r.tune, r.r)
	}
	per := func(r memResult) float64 { return float64(r.RSSAfter-r.RSSBefore) / float64(r.Conns) / 1024 }
	heap := func(r memResult) float64 {
		return float64(int64(r.HeapAfter)-int64(r.HeapBefore)) / float64(r.Conns) / 1024
	}
	u, g := rows[0].r, rows[1].r
	fmt.Printf("### Memory per idle established TCP connection (%d connections, MTU 1500)\n\n", u.Conns)
	fmt.Println("RSS growth of the process holding the stack, divided by the connections; the Go heap in use in brackets.")
	fmt.Println()
	fmt.Println("| TCP settings | RSS per connection | heap per connection | RSS before | RSS after | ratio to gVisor defaults |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: |")
	fmt.Printf("| ustack (tune()) | %.1f KiB | %.1f KiB | %d MiB | %d MiB | %s |\n", per(u), heap(u), u.RSSBefore>>20, u.RSSAfter>>20, ratio(per(u), per(g)))
	fmt.Printf("| gVisor defaults | %.1f KiB | %.1f KiB | %d MiB | %d MiB | 1.00x |\n", per(g), heap(g), g.RSSBefore>>20, g.RSSAfter>>20)
	fmt.Println()
	return nil
}

// memRun starts a child with the given settings in a fresh namespace whose
// kernel listener this process serves.
func memRun(tune string) (memResult, error) {
	var res memResult
	ns, err := netns.New()
	if err != nil {
		return res, err
	}
	defer ns.Close()
	l, err := ns.Listen("tcp4", "0.0.0.0:7100")
	if err != nil {
		return res, err
	}
	defer l.Close()
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	cmd := exec.Command(self, "memchild", "-n", strconv.Itoa(*conns), "-tune", tune)
	cmd.ExtraFiles = []*os.File{ns.File()} // fd 3
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	line, rerr := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Kill()
	cmd.Wait()
	if rerr != nil {
		return res, fmt.Errorf("child: %w", rerr)
	}
	return res, json.Unmarshal([]byte(line), &res)
}

// memChild is the measured process: it opens the TUN in the namespace at
// fd 3, builds the stack, dials n connections and reports its memory.
func memChild(args []string) int {
	fs := flag.NewFlagSet("memchild", flag.ExitOnError)
	n := fs.Int("n", 10000, "connections")
	tune := fs.String("tune", "ustack", "ustack or gvisor")
	fs.Parse(args)
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "memchild:", err)
		return 1
	}
	nsFile := os.NewFile(3, "netns")
	o := tunOptions{mtu: 1500}
	if *tune == "gvisor" {
		o.tuneGVisor = gvisorDefaults
	}
	p, err := newTUNPairIn(nsFile, o)
	if err != nil {
		return fail(err)
	}
	defer p.close()
	addr := netip.AddrPortFrom(p.serverAddr, 7100).String()
	// One warm-up connection, so that lazily built state is not counted.
	c0, err := p.dial("tcp4", addr)
	if err != nil {
		return fail(err)
	}
	defer c0.Close()
	var res memResult
	res.Conns = *n
	res.RSSBefore, res.HeapBefore = settle()
	t0 := time.Now()
	cs := make([]net.Conn, 0, *n)
	for range *n {
		c, err := p.dial("tcp4", addr)
		if err != nil {
			return fail(fmt.Errorf("after %d connections: %w", len(cs), err))
		}
		cs = append(cs, c)
	}
	res.DialSecs = time.Since(t0).Seconds()
	time.Sleep(2 * time.Second) // idle: last ACKs and timers settle
	res.RSSAfter, res.HeapAfter = settle()
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	runtime.KeepAlive(cs)
	// Wait to be killed, holding the connections.
	select {}
}

// settle collects garbage, returns freed memory to the OS and reports
// the RSS and the heap in use.
func settle() (int64, uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return rss(), ms.HeapInuse
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// gvisorDefaults puts back gVisor's own TCP defaults (those of
// tcp.NewProtocol) for everything tune() sets, for the comparison.
func gvisorDefaults(st *stack.Stack) {
	s := st.GVisor()
	rack := tcpip.TCPRACKLossDetection
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	cc := tcpip.CongestionControlOption("reno")
	opts := []tcpip.SettableTransportProtocolOption{
		&rack, &sack, &moderate, &cc,
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: tcp.MaxBufferSize},
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcp.MaxBufferSize},
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			fmt.Fprintln(os.Stderr, "gvisorDefaults:", err)
		}
	}
}
