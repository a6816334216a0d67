// Command ustack runs the ustack user-space network stack: a demonstration
// of its port allocator, a stack over a TUN device, a network for a
// sandboxed command, and tools to inspect a running instance.
//
// Setting USTACK_CPUPROFILE=FILE writes a CPU profile of the run to FILE,
// and USTACK_MEMPROFILE=FILE an allocation profile (every allocation of
// the run) when it ends, for `go tool pprof`.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

func main() {
	sandboxInit()
	os.Exit(realMain())
}

func realMain() int {
	if path := os.Getenv("USTACK_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ustack: USTACK_CPUPROFILE:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "ustack: USTACK_CPUPROFILE:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if path := os.Getenv("USTACK_MEMPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ustack: USTACK_MEMPROFILE:", err)
			return 1
		}
		runtime.MemProfileRate = 4096
		defer func() {
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				fmt.Fprintln(os.Stderr, "ustack: USTACK_MEMPROFILE:", err)
			}
			f.Close()
		}()
	}
	root := newRootCmd()
	root.SetArgs(slirpArgs(os.Args[1:]))
	if err := root.Execute(); err != nil {
		var es exitStatus
		if !errors.As(err, &es) {
			fmt.Fprintln(os.Stderr, "ustack:", err)
		}
		return exitCode(err)
	}
	return 0
}
