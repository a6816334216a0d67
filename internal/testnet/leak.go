package testnet

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/refs"
)

// LeakCheckedMain runs m for a TestMain and returns the exit code: it
// fails the package if a test leaks a goroutine or, with trackRefs, a
// gVisor reference-counted object (a PacketBuffer or its buffer chunks)
// that was never DecRef'd.
func LeakCheckedMain(m *testing.M, trackRefs bool) int {
	if trackRefs {
		refs.SetLeakMode(refs.LeaksPanic)
	}
	code := m.Run()
	if code == 0 && trackRefs {
		if err := refLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}

// refLeaks runs gVisor's leak check, which panics in LeaksPanic mode.
func refLeaks() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("gVisor reference leaks: %v", p)
		}
	}()
	refs.DoRepeatedLeakCheck()
	return nil
}
