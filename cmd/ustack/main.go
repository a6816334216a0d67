// Command ustack runs the ustack user-space network stack: a demonstration
// of its port allocator, a stack over a TUN device, and tools to inspect a
// running instance.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "ustack:", err)
		os.Exit(exitCode(err))
	}
}
