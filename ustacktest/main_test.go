//go:build linux

package ustacktest_test

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/ustacknet/ustack/internal/privtest"
	"github.com/ustacknet/ustack/internal/testnet"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// TestParallelBeds runs eight beds at once.
	if p := flag.Lookup("test.parallel"); p != nil && p.Value.String() != "" {
		if n, err := strconv.Atoi(p.Value.String()); err == nil && n < 8 {
			flag.Set("test.parallel", "8")
		}
	}
	// The examples build beds, and an example cannot skip itself: without
	// the privileges they are left out, saying why (or, with
	// USTACK_REQUIRE_PRIV=1, they run and fail).
	if why := privtest.Reason(); why != "" && !privtest.MustRun() {
		fmt.Printf("ustacktest: skipping the examples: %s\n", why)
		skip := "^Example"
		if f := flag.Lookup("test.skip"); f != nil && f.Value.String() != "" {
			skip = f.Value.String() + "|" + skip
		}
		flag.Set("test.skip", skip)
	}
	os.Exit(testnet.LeakCheckedMain(m, false))
}
