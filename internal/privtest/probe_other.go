//go:build !linux

package privtest

import (
	"os"
	"runtime"
)

// probe reports that this system is not Linux: the privileged tests need
// its network namespaces and TUN clone device.
func probe() facts { return facts{goos: runtime.GOOS, euid: os.Geteuid()} }
