package nsexec

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// stopGrace is how long Run waits for the command to exit after SIGTERM
// when its context ends for another reason than a signal, before it
// kills it.
const stopGrace = 5 * time.Second

// Run lets the command start, waits for it and returns its exit code
// (128+N if signal N killed it). While it runs, the end of ctx stops it:
//   - if ctx ended with an *Interrupt cause (context.Cause), the command
//     gets that signal, then every signal that arrives on its More, and
//     Run goes on waiting for it to exit (it may catch them);
//   - for any other cause the command gets SIGTERM, and is killed if it
//     has not exited 5 s later (exit code 137).
//
// If ctx has ended with an *Interrupt before Run, the command never
// starts: the child is killed and Run returns 128+N. Run closes the
// hand-back socket; the caller has taken FD before.
func (c *Child) Run(ctx context.Context) (int, error) {
	defer c.sock.Close()
	var in *Interrupt
	if ctx.Err() != nil && errors.As(context.Cause(ctx), &in) {
		c.kill()
		return in.ExitCode(), nil
	}
	if _, err := c.sock.Write([]byte{msgGo}); err != nil {
		c.kill()
		return 0, fmt.Errorf("sandbox: starting the command: %w", err)
	}
	select {
	case err := <-c.exited:
		return exitCode(err), nil
	case <-ctx.Done():
	}
	if !errors.As(context.Cause(ctx), &in) {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-c.exited:
			return exitCode(err), nil
		case <-time.After(stopGrace):
			c.kill()
			return 128 + int(syscall.SIGKILL), nil
		}
	}
	c.cmd.Process.Signal(in.Signal)
	for {
		select {
		case s := <-in.More:
			c.cmd.Process.Signal(s)
		case err := <-c.exited:
			return exitCode(err), nil
		}
	}
}

// Kill kills the child, which has not been let start (Run not called),
// and waits for it.
func (c *Child) Kill() {
	c.kill()
	c.sock.Close()
}

func (c *Child) kill() {
	c.cmd.Process.Kill()
	<-c.exited
}

// exitCode is the exit code for Wait's result: the process's, or 128+N
// if signal N killed it.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}
