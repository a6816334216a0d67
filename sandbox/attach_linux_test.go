package sandbox

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWatchPID(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w, err := watchPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.done:
		t.Fatal("reported an exit while the process runs")
	case <-time.After(50 * time.Millisecond):
	}
	cmd.Process.Kill()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("no exit reported 5 s after the process was killed")
	}
	cmd.Wait()
	w.Close()

	// Closing while the process lives ends the watcher without an exit.
	cmd = exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	w, err = watchPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	select {
	case <-w.done:
		t.Error("Close reported as an exit")
	default:
	}

	if _, err := watchPID(1 << 22); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Errorf("watchPID of a PID above pid_max: %v, want 'no such process'", err)
	}
}

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
		f, err := openNetNS(tc.path)
		if err == nil {
			f.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("openNetNS(%s): %v, want %q", tc.path, err, tc.want)
		}
	}
}
