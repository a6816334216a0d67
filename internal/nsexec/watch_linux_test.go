package nsexec

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestWatchPID(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w, err := WatchPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Done():
		t.Fatal("reported an exit while the process runs")
	case <-time.After(50 * time.Millisecond):
	}
	cmd.Process.Kill()
	select {
	case <-w.Done():
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
	w, err = WatchPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	w.Close() // idempotent
	select {
	case <-w.Done():
		t.Error("Close reported as an exit")
	default:
	}

	if _, err := WatchPID(1 << 22); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Errorf("watchPID of a PID above pid_max: %v, want 'no such process'", err)
	}
}
