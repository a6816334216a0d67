package privtest

import (
	"os"
	"syscall"
	"testing"
)

func TestReason(t *testing.T) {
	noTun := &os.PathError{Op: "open", Path: tunPath, Err: syscall.ENOENT}
	tests := []struct {
		name string
		f    facts
		want string
	}{
		{"root with tun", facts{euid: 0}, ""},
		{"not linux", facts{goos: "darwin", euid: 0}, "needs Linux (network namespaces and /dev/net/tun); this is darwin"},
		{"not root", facts{euid: 1000}, "needs root (CAP_NET_ADMIN); running as uid 1000"},
		{"not root and no tun", facts{euid: 1000, tunErr: noTun}, "needs root (CAP_NET_ADMIN); running as uid 1000"},
		{"root without caps", facts{euid: 0, missingCaps: []string{"CAP_NET_ADMIN"}}, "needs root (CAP_NET_ADMIN); uid 0 lacks [CAP_NET_ADMIN]"},
		{"root, capget fails", facts{euid: 0, capErr: syscall.EINVAL}, "needs root (CAP_NET_ADMIN); cannot read capabilities: invalid argument"},
		{"root without tun", facts{euid: 0, tunErr: noTun}, "needs /dev/net/tun: open /dev/net/tun: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reason(tt.f); got != tt.want {
				t.Errorf("reason(%+v)\n got %q\nwant %q", tt.f, got, tt.want)
			}
		})
	}
}

// recorder is a testing.TB that records Skip and Fatalf instead of ending
// the test; everything else goes to the real test.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skip(args ...any)               { r.skipped = args[0].(string) }
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = format }

func TestRequire(t *testing.T) {
	unprivileged := facts{euid: 1000}
	tests := []struct {
		name        string
		f           facts
		mustRun     bool
		wantSkipped bool
		wantFatal   bool
	}{
		{"privileged runs", facts{euid: 0}, false, false, false},
		{"privileged runs when required", facts{euid: 0}, true, false, false},
		{"unprivileged skips", unprivileged, false, true, false},
		{"unprivileged fails when required", unprivileged, true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{TB: t}
			require(r, tt.f, tt.mustRun)
			if got := r.skipped != ""; got != tt.wantSkipped {
				t.Errorf("skipped = %v (%q), want %v", got, r.skipped, tt.wantSkipped)
			}
			if got := r.fatal != ""; got != tt.wantFatal {
				t.Errorf("failed = %v (%q), want %v", got, r.fatal, tt.wantFatal)
			}
		})
	}
}

// TestRequireHere runs the real probe: it must agree with what this process
// can actually do, and with USTACK_REQUIRE_PRIV=1 it must not skip.
func TestRequireHere(t *testing.T) {
	f := probe()
	t.Logf("probe: euid=%d missing=%v capErr=%v tunErr=%v -> %q", f.euid, f.missingCaps, f.capErr, f.tunErr, reason(f))
	Require(t)
	// Reaching here means Require let the test run: check that it was right.
	if os.Geteuid() != 0 {
		t.Fatalf("Require let a test run as uid %d", os.Geteuid())
	}
	fd, err := syscall.Open(tunPath, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("Require let a test run, but opening %s fails: %v", tunPath, err)
	}
	syscall.Close(fd)
}
