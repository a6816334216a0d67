//go:build !linux

package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, "conform: needs Linux (network namespaces and TUN devices), not %s\n", runtime.GOOS)
	os.Exit(1)
}
