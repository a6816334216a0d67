package packetio

import (
	"flag"
	"os"
	"testing"

	"github.com/ustacknet/ustack/internal/testnet"
)

// TestMain fails the package if a test leaks a goroutine or a gVisor
// reference-counted object. Leak tracking is off when benchmarking: it
// allocates per object, which would hide the allocs/op the benchmarks
// measure.
func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testnet.LeakCheckedMain(m, flag.Lookup("test.bench").Value.String() == ""))
}
