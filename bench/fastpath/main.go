//go:build linux

package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"
)

var (
	dur     = flag.Duration("d", 3*time.Second, "measured time per run (after a warm-up)")
	warm    = flag.Duration("warmup", 500*time.Millisecond, "warm-up before each measurement")
	conns   = flag.Int("n", 10000, "memory: idle connections")
	workers = flag.Int("w", 4, "connrate: concurrent workers")
	mq      = flag.Bool("mq", false, "open the ustack TUN with MultiQueue (one queue per CPU) in every run (throughput also has a multi-queue column)")
	cpuProf = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memProf = flag.String("memprofile", "", "write an allocation profile (all allocations) to this file at the end")
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: fastpath [flags] throughput|connrate|memory|udp|ping|water|all\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 1 {
		flag.Usage()
		os.Exit(2)
	}
	cmd := flag.Arg(0)
	if cmd == "memchild" {
		os.Exit(memChild(flag.Args()[1:]))
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "fastpath needs root: it creates network namespaces and TUN devices")
		os.Exit(1)
	}
	runs := map[string]func() error{
		"throughput": runThroughput,
		"connrate":   runConnRate,
		"memory":     runMemory,
		"udp":        runUDP,
		"ping":       runPing,
		"water":      runWater,
	}
	var order []string
	switch cmd {
	case "all":
		order = []string{"throughput", "connrate", "memory", "udp", "ping", "water"}
	default:
		if runs[cmd] == nil {
			flag.Usage()
			os.Exit(2)
		}
		order = []string{cmd}
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if *memProf != "" {
		runtime.MemProfileRate = 4096
		defer func() {
			f, err := os.Create(*memProf)
			if err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	fmt.Println(machine())
	fmt.Println()
	for _, c := range order {
		if err := runs[c](); err != nil {
			fmt.Fprintf(os.Stderr, "fastpath %s: %v\n", c, err)
			pprof.StopCPUProfile()
			os.Exit(1)
		}
	}
}

// machine describes where the figures come from.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					model = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("machine: %d cores (%s), Linux %s, %s, GOMAXPROCS %d; command: fastpath %s",
		runtime.NumCPU(), model, kernel, runtime.Version(), runtime.GOMAXPROCS(0), strings.Join(os.Args[1:], " "))
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}
