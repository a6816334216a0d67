//go:build !windows

package portalloc

import (
	"syscall"
	"time"
)

// threadCPUTime is the calling thread's CPU time (RUSAGE_THREAD, a Linux
// call); 0 where the system refuses it, and cpu-ns/op then reads 0.
func threadCPUTime() time.Duration {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
