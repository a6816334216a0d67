package portalloc

import "time"

// threadCPUTime is not measured on Windows: cpu-ns/op reads 0 there.
func threadCPUTime() time.Duration { return 0 }
