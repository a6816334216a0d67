package ustacktest_test

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/ustacknet/ustack/internal/privtest"
	"github.com/ustacknet/ustack/internal/testnet"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The examples build beds, and an example cannot skip itself: without
	// the privileges they are left out, saying why (or, with
	// USTACK_REQUIRE_PRIV=1, they run and fail).
	if why := privtest.Reason(); why != "" && !privtest.MustRun() {
		fmt.Printf("ustacktest: skipping the examples: %s\n", why)
		flag.Set("test.skip", "^Example")
	}
	os.Exit(testnet.LeakCheckedMain(m, false))
}
