package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ustacknet/ustack/internal/seccomp"
	"github.com/ustacknet/ustack/sandbox"
	"github.com/ustacknet/ustack/tun"
	"golang.org/x/sys/unix"
)

// control is what ustack sandbox and ustack slirp4netns set up around
// sandbox.Run and Attach: the signals and --exit-fd that stop them, and
// the end of the set-up (seccomp, then --ready-fd).
type control struct {
	seccompFlag string // the flag that asks for seccomp, for messages
	seccomp     bool
	ready       *os.File // --ready-fd, nil if not given
	readyFD     int
}

// startControl checks and opens --ready-fd and --exit-fd, and returns the
// context for Run or Attach: it ends with a *sandbox.Interrupt cause at
// the first SIGINT or SIGTERM (which Run passes on to the command, with
// those that follow), or when --exit-fd turns readable. From here on
// SIGINT and SIGTERM no longer end ustack itself. stop releases it all.
func startControl(parent context.Context, readyFD, exitFD int, seccompFlag string, doSeccomp bool) (ctx context.Context, ctl *control, stop func(), err error) {
	ready, exit, err := controlFDs(readyFD, exitFD)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, stopSignals := signalContext(parent)
	ctx, stopRead := stopOnRead(ctx, exit)
	stop = func() {
		stopRead()
		stopSignals()
	}
	return ctx, &control{seccompFlag: seccompFlag, seccomp: doSeccomp, ready: ready, readyFD: readyFD}, stop, nil
}

// readyHook is an Options.Ready that calls serve (if not nil) and then
// ends the set-up: once the network is up it installs the system call
// filter if asked, as nothing is left to run or mount (the command, if
// any, was started before and is not under the filter), and then, as
// slirp4netns does, writes "1" to --ready-fd and closes it.
func (ctl *control) readyHook(serve func(*sandbox.Gateway, *tun.Device) error) func(*sandbox.Gateway, *tun.Device) error {
	return func(gw *sandbox.Gateway, dev *tun.Device) error {
		if serve != nil {
			if err := serve(gw, dev); err != nil {
				return err
			}
		}
		if ctl.seccomp {
			if err := seccomp.Install(); err != nil {
				return fmt.Errorf("--%s: %w", ctl.seccompFlag, err)
			}
		}
		if ctl.ready == nil {
			return nil
		}
		_, err := ctl.ready.Write([]byte("1"))
		ctl.ready.Close()
		if err != nil {
			return fmt.Errorf("--ready-fd %d: %w", ctl.readyFD, err)
		}
		return nil
	}
}

// signalContext returns a context that ends, with a *sandbox.Interrupt
// cause, at the first SIGINT or SIGTERM; the signals after it go to the
// Interrupt's More. The signals are caught until stop is called.
func signalContext(parent context.Context) (context.Context, func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithCancelCause(parent)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case s := <-sigs:
			cancel(&sandbox.Interrupt{Signal: s, More: sigs})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel(nil)
		<-done
	}
}

// stopOnRead returns a context that ends when f (--exit-fd) turns
// readable: any byte, the end of the stream or an error. A nil f gives
// ctx. The returned function releases the context and closes f.
func stopOnRead(ctx context.Context, f *os.File) (context.Context, func()) {
	if f == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		f.Read(make([]byte, 1))
		cancel()
	}()
	return ctx, func() {
		cancel()
		f.Close()
	}
}

// controlFDs opens --ready-fd and --exit-fd, after checking both.
func controlFDs(readyFD, exitFD int) (ready, exit *os.File, err error) {
	check := func(flag string, fd int) error {
		if fd == -1 {
			return nil
		}
		if fd < 0 {
			return fmt.Errorf("invalid argument %d for \"--%s\" flag: want an open descriptor (0 or more)", fd, flag)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("invalid argument %d for \"--%s\" flag: not an open descriptor (%v)", fd, flag, err)
		}
		return nil
	}
	if err := check("ready-fd", readyFD); err != nil {
		return nil, nil, err
	}
	if err := check("exit-fd", exitFD); err != nil {
		return nil, nil, err
	}
	if readyFD >= 0 && readyFD == exitFD {
		return nil, nil, fmt.Errorf("--ready-fd and --exit-fd are both %d: want two descriptors", readyFD)
	}
	open := func(fd int, name string) *os.File {
		if fd < 0 {
			return nil
		}
		unix.CloseOnExec(fd) // not inherited by the sandboxed command
		return os.NewFile(uintptr(fd), name)
	}
	return open(readyFD, "ready-fd"), open(exitFD, "exit-fd"), nil
}
