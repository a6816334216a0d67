package tun

import (
	"errors"
	"net"
	"os"
	"testing"

	"github.com/ustacknet/ustack/internal/privtest"
)

// These tests need FreeBSD and root: they make tun(4) devices in the
// host's only network stack (privtest gates Linux namespaces, which
// FreeBSD lacks), so they give the devices no addresses or routes and send
// nothing. They are compiled on Linux by scripts/crossbuild.sh (go test
// -c), and have not been run.

func requireFreeBSDRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if privtest.MustRun() {
		t.Fatalf("needs root to make tun(4) devices; running as uid %d (%s=1 forbids skipping)", os.Geteuid(), privtest.EnvRequire)
	}
	t.Skipf("needs root to make tun(4) devices; running as uid %d", os.Geteuid())
}

// TestOpenFreeBSD opens a device by cloning, by unit, and renamed, and
// checks its interface while open and after Close.
func TestOpenFreeBSD(t *testing.T) {
	requireFreeBSDRoot(t)
	first, err := Open(Config{MTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"clone", Config{MTU: 1400}},
		{"renamed", Config{Name: "ustacktest0", MTU: 1280}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Open(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tt.cfg.Name != "" && d.Name() != tt.cfg.Name {
				t.Errorf("Name() = %q, want %q", d.Name(), tt.cfg.Name)
			}
			ifi, err := net.InterfaceByName(d.Name())
			if err != nil {
				d.Close()
				t.Fatalf("interface %s of the open device: %v", d.Name(), err)
			}
			if ifi.MTU != tt.cfg.MTU || ifi.Flags&net.FlagUp != 0 || ifi.Flags&net.FlagBroadcast == 0 {
				t.Errorf("interface %s: MTU %d, flags %v; want MTU %d, broadcast, down", d.Name(), ifi.MTU, ifi.Flags, tt.cfg.MTU)
			}
			// Its unit is taken: opening it again is refused.
			if _, err := Open(Config{Name: d.Name()}); !errors.Is(err, os.ErrExist) {
				t.Errorf("Open of the taken name %s: %v, want an error matching os.ErrExist", d.Name(), err)
			}
			if err := d.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if _, err := net.InterfaceByName(d.Name()); err == nil {
				t.Errorf("interface %s still exists after Close", d.Name())
			}
		})
	}
}
