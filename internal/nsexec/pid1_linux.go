package nsexec

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// initLoop is PID 1 of the sandbox's PID namespace: it runs the command,
// passes signals on to it, reaps every orphan, and returns the command's
// exit code (128+N if signal N killed it). When it returns, the kernel
// kills whatever else is left in the namespace. (As PID 1 it gets no
// signal it has no handler for, so it catches those worth passing on.)
func initLoop(path string, args []string) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCHLD)
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ustack sandbox: starting %s: %v\n", path, err)
		return 127
	}
	for {
		// Reap everything that has exited.
		for {
			var ws syscall.WaitStatus
			wpid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil || wpid <= 0 {
				break
			}
			if wpid == pid {
				if ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return ws.ExitStatus()
			}
		}
		s := <-sigs
		if s != syscall.SIGCHLD {
			syscall.Kill(pid, s.(syscall.Signal))
		}
	}
}
