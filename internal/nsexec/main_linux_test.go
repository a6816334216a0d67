package nsexec

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the namespace child's side when Start re-executes the
// test binary (Spec.Self), and checks for leaked goroutines otherwise.
func TestMain(m *testing.M) {
	if IsInit() {
		args := os.Args[1:]
		for i, a := range args {
			if a == "--" {
				args = args[i+1:]
				break
			}
		}
		os.Exit(Init(args))
	}
	goleak.VerifyTestMain(m)
}
