package nsexec

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// PIDWatch reports when a process, which need not be the caller's child,
// exits: through a pidfd in Go's poller.
type PIDWatch struct {
	once    sync.Once
	f       *os.File
	done    chan struct{} // closed when the process exits
	stopped chan struct{} // closed when the watching goroutine ends
}

// WatchPID starts watching process pid. It fails if there is no such
// process.
func WatchPID(pid int) (*PIDWatch, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("sandbox: PID %d: no such process", pid)
		}
		return nil, fmt.Errorf("sandbox: PID %d: pidfd_open: %w", pid, err)
	}
	w := &PIDWatch{f: os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid)), done: make(chan struct{}), stopped: make(chan struct{})}
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.f.Close()
		return nil, err
	}
	go func() {
		defer close(w.stopped)
		// A pidfd turns readable when the process exits. Close ends the
		// wait too (with an error), which is then not an exit.
		var exited bool
		rc.Read(func(fd uintptr) bool {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, _ := unix.Poll(p, 0)
			exited = n > 0
			return exited
		})
		if exited {
			close(w.done)
		}
	}()
	return w, nil
}

// Done is closed when the process exits; never if Close comes first.
func (w *PIDWatch) Done() <-chan struct{} { return w.done }

// Close stops watching and waits for the watcher to end. It is
// idempotent.
func (w *PIDWatch) Close() {
	w.once.Do(func() { w.f.Close() })
	<-w.stopped
}
