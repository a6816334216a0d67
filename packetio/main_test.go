package packetio

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/refs"
)

// TestMain fails the package if a test leaks a goroutine or a gVisor
// reference-counted object (a PacketBuffer or its buffer chunks) that was
// never DecRef'd. Leak tracking is off when benchmarking: it allocates per
// object, which would hide the allocs/op the benchmarks measure.
func TestMain(m *testing.M) {
	flag.Parse()
	track := flag.Lookup("test.bench").Value.String() == ""
	if track {
		refs.SetLeakMode(refs.LeaksPanic)
	}
	code := m.Run()
	if code == 0 && track {
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
	os.Exit(code)
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
