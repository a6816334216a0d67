// Package privtest gates tests that need root and /dev/net/tun.
//
// Every privileged test in ustack starts with Require. On a machine without
// the privileges the test is skipped with a reason; with
// USTACK_REQUIRE_PRIV=1 in the environment (as CI sets it) it fails instead,
// so that a suite which should have exercised real devices cannot pass by
// skipping them all.
package privtest

import (
	"fmt"
	"os"
	"testing"
)

// EnvRequire is the environment variable that turns skips into failures
// when it is set to "1".
const EnvRequire = "USTACK_REQUIRE_PRIV"

// tunPath is the TUN clone device that privileged tests open.
const tunPath = "/dev/net/tun"

// Require skips t, or fails it when USTACK_REQUIRE_PRIV=1, unless the
// process runs as root with CAP_NET_ADMIN and CAP_SYS_ADMIN (to configure
// links and to create and enter network namespaces) and can open
// /dev/net/tun. It returns normally only when the test may go on.
func Require(t testing.TB) {
	t.Helper()
	require(t, probe(), MustRun())
}

// Reason returns why privileged code cannot run in this process (what is
// missing: root, a capability or /dev/net/tun), or "" if it can. It is what
// Require skips or fails with.
func Reason() string { return reason(probe()) }

// MustRun reports whether USTACK_REQUIRE_PRIV=1 forbids skipping.
func MustRun() bool { return os.Getenv(EnvRequire) == "1" }

// facts is what Require looks at, gathered by probe so that the decision
// itself (reason) is a pure function.
type facts struct {
	goos        string // set when the system is not Linux
	euid        int
	missingCaps []string // effective capabilities we need but lack
	capErr      error    // capget failed
	tunErr      error    // opening /dev/net/tun failed
}

// reason returns why a privileged test cannot run given f, or "" if it can.
func reason(f facts) string {
	switch {
	case f.goos != "":
		return fmt.Sprintf("needs Linux (network namespaces and /dev/net/tun); this is %s", f.goos)
	case f.euid != 0:
		return fmt.Sprintf("needs root (CAP_NET_ADMIN); running as uid %d", f.euid)
	case f.capErr != nil:
		return fmt.Sprintf("needs root (CAP_NET_ADMIN); cannot read capabilities: %v", f.capErr)
	case len(f.missingCaps) > 0:
		return fmt.Sprintf("needs root (CAP_NET_ADMIN); uid 0 lacks %v", f.missingCaps)
	case f.tunErr != nil:
		return fmt.Sprintf("needs /dev/net/tun: %v", f.tunErr)
	}
	return ""
}

// require is Require with the facts and the environment passed in.
func require(t testing.TB, f facts, mustRun bool) {
	t.Helper()
	why := reason(f)
	switch {
	case why == "":
		return
	case mustRun:
		t.Fatalf("%s (and %s=1 forbids skipping)", why, EnvRequire)
	default:
		t.Skip(why)
	}
}
