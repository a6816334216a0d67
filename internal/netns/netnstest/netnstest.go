//go:build linux

package netnstest

import (
	"testing"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/privtest"
)

// New returns a fresh namespace for a test, closed when the test ends. It
// skips the test (or fails it, with USTACK_REQUIRE_PRIV=1) when the process
// lacks the privileges; see privtest.Require.
func New(t testing.TB) *netns.NS {
	t.Helper()
	privtest.Require(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("closing namespace: %v", err)
		}
	})
	return ns
}
