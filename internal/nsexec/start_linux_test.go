package nsexec

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/ustacknet/ustack/internal/privtest"
	"golang.org/x/sys/unix"
)

// Start makes the namespaces and the device the Guest describes, and the
// command runs there, under PID 1 of a PID namespace of its own, once Run
// lets it. The test binary is Self (TestMain calls Init).
func TestStart(t *testing.T) {
	privtest.Require(t)
	g := Guest{IfName: "nsx0", MTU: 1400, TxQueueLen: 100,
		Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.7.100/24")}, Gateways: []netip.Addr{netip.MustParseAddr("198.18.7.2")}}
	pidNS, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	// Exit codes name what is wrong: 10 the MTU, 11 the default route,
	// 12 the PID namespace (not this test's).
	script := `ip -o link show nsx0 | grep -q " mtu 1400 " || exit 10
awk '$1 == "nsx0" && $2 == "00000000" { found = 1 } END { exit !found }' /proc/net/route || exit 11
[ "$(readlink /proc/self/ns/pid)" != "` + pidNS + `" ] || exit 12
exit 7`
	var out bytes.Buffer
	c, err := Start(Spec{Self: os.Args[0], Args: []string{"sh", "-c", script}, Guest: g, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	// The device lives while the parent holds it.
	defer unix.Close(c.FD)
	if c.Name != "nsx0" {
		t.Errorf("device name %q, want nsx0", c.Name)
	}
	code, err := c.Run(context.Background())
	if err != nil || code != 7 {
		t.Fatalf("Run = %d, %v; want 7 (the command's)\n%s", code, err, out.String())
	}
}

// A command that does not exist: a *NotFoundError, and nothing left
// running.
func TestStartNotFound(t *testing.T) {
	privtest.Require(t)
	g := Guest{IfName: "nsx0", MTU: 1500, TxQueueLen: 100}
	_, err := Start(Spec{Self: os.Args[0], Args: []string{"/no/such/command"}, Guest: g})
	var nf *NotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("Start: %v, want a *NotFoundError", err)
	}
}
