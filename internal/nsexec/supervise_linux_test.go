package nsexec

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shellChild starts sh -c script as a Child that has handed back its
// device (none here), in a process group of its own that the cleanup
// kills (the script's sleeps included). It returns the child, its
// standard output, line by line, and the hand-back socket's child end,
// where Run's go-ahead arrives.
func shellChild(t *testing.T, script string) (*Child, *bufio.Reader, *os.File) {
	t.Helper()
	parent, child := socketPair(t)
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	exited, err := startLocked(cmd)
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(-pid, syscall.SIGKILL)
		child.Close()
	})
	return &Child{cmd: cmd, sock: parent, exited: exited}, bufio.NewReader(out), child
}

// waitGo waits for Run's go-ahead: from then on the context's end is
// passed to the command.
func waitGo(t *testing.T, sock *os.File) {
	t.Helper()
	b := make([]byte, 1)
	if n, err := sock.Read(b); n != 1 || b[0] != msgGo {
		t.Fatalf("read %q (%v) from the hand-back socket, want the go-ahead", b[:n], err)
	}
}

// waitLine waits for the script to print want.
func waitLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != want {
		t.Fatalf("the command printed %q (%v), want %q", line, err, want)
	}
}

// runResult is Child.Run's result, from a goroutine.
type runResult struct {
	code int
	err  error
}

func runChild(ctx context.Context, c *Child) <-chan runResult {
	done := make(chan runResult, 1)
	go func() {
		code, err := c.Run(ctx)
		done <- runResult{code, err}
	}()
	return done
}

func wantExit(t *testing.T, done <-chan runResult, want int) {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil || r.code != want {
			t.Fatalf("Run = %d, %v; want %d", r.code, r.err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run did not return 10 s after the command was told to stop (want exit %d)", want)
	}
}

const traps = `trap 'echo usr1' USR1; trap 'exit 43' TERM; echo ready; while :; do sleep 60 & wait; done`

// An Interrupt is passed on to the command, which may catch it; the
// signals on Interrupt.More follow it, and Run returns the command's
// own exit code.
func TestRunPassesInterrupts(t *testing.T) {
	c, out, sock := shellChild(t, traps)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := runChild(ctx, c)
	waitLine(t, out, "ready")
	waitGo(t, sock)
	more := make(chan os.Signal, 1)
	cancel(&Interrupt{Signal: syscall.SIGUSR1, More: more})
	waitLine(t, out, "usr1") // caught: the command goes on
	more <- syscall.SIGTERM
	wantExit(t, done, 43)
}

// Any other end of the context sends SIGTERM.
func TestRunStopsOnCancel(t *testing.T) {
	c, out, sock := shellChild(t, traps)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runChild(ctx, c)
	waitLine(t, out, "ready")
	waitGo(t, sock)
	cancel()
	wantExit(t, done, 43)
}

// An Interrupt before Run: the command never gets the go-ahead, it is
// killed, and Run returns 128+N for the signal.
func TestRunInterruptedBeforeStart(t *testing.T) {
	c, _, sock := shellChild(t, "sleep 60")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(&Interrupt{Signal: syscall.SIGTERM})
	wantExit(t, runChild(ctx, c), 128+int(syscall.SIGTERM))
	if n, err := sock.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("the hand-back socket gave %d bytes (%v), want EOF: no go-ahead", n, err)
	}
}

// The command's exit code, or 128+N when signal N killed it.
func TestRunExitCode(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -KILL $$", 137},
	} {
		t.Run(tc.script, func(t *testing.T) {
			c, out, _ := shellChild(t, tc.script)
			go io.Copy(io.Discard, out)
			wantExit(t, runChild(context.Background(), c), tc.want)
		})
	}
}
