// Command ustack runs the ustack user-space network stack: a demonstration
// of its port allocator, a stack over a TUN device, and tools to inspect a
// running instance.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	sandboxInit()
	if err := newRootCmd().Execute(); err != nil {
		var es exitStatus
		if !errors.As(err, &es) {
			fmt.Fprintln(os.Stderr, "ustack:", err)
		}
		os.Exit(exitCode(err))
	}
}
