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

	"golang.org/x/sys/unix"
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
	euid        int
	missingCaps []string // effective capabilities we need but lack
	capErr      error    // capget failed
	tunErr      error    // opening /dev/net/tun failed
}

// probe gathers the facts about the running process.
func probe() facts {
	f := facts{euid: os.Geteuid()}
	f.missingCaps, f.capErr = missingCaps()
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		f.tunErr = &os.PathError{Op: "open", Path: tunPath, Err: err}
	} else {
		// Opening the clone device without TUNSETIFF creates nothing.
		unix.Close(fd)
	}
	return f
}

// missingCaps reports which of CAP_NET_ADMIN and CAP_SYS_ADMIN the calling
// thread lacks in its effective set.
func missingCaps() ([]string, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("capget: %w", err)
	}
	var missing []string
	for _, c := range []struct {
		bit  int
		name string
	}{{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}} {
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			missing = append(missing, c.name)
		}
	}
	return missing, nil
}

// reason returns why a privileged test cannot run given f, or "" if it can.
func reason(f facts) string {
	switch {
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

// DropCap removes capability c from the calling thread's effective set,
// for tests of what happens without it (lock the OS thread first, and
// end it after: the capability does not come back).
func DropCap(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Effective &^= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}
