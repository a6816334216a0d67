package nsexec

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestOpenNetNSErrors(t *testing.T) {
	// A FIFO given by mistake: refused, not waited on.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/proc/self/ns/uts", "is not a network namespace"},
		{"/proc/self/ns/net", "ustack's own network namespace"},
		{"/no/such/ns", "no such file"},
		{fifo, "is not a network namespace"},
	} {
		f, err := OpenNetNS(tc.path)
		if err == nil {
			f.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenNetNS(%s): %v, want %q", tc.path, err, tc.want)
		}
	}
}
