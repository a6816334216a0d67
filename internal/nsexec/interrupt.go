package nsexec

import (
	"os"
	"syscall"
)

// Interrupt is the cause (context.Cause) of a context that a signal to
// the process ended, such as SIGINT or SIGTERM: the caller (ustack's
// command line) catches the signals, and the library it calls passes them
// on rather than ending the command. Child.Run sends Signal to the
// command, then each signal received on More, until the command exits.
type Interrupt struct {
	// Signal is the signal that ended the context.
	Signal os.Signal
	// More delivers the signals that arrive after it, to pass on too; nil
	// if there are none to pass on.
	More <-chan os.Signal
}

func (i *Interrupt) Error() string { return "interrupted by " + i.Signal.String() }

// ExitCode is the exit code of a process killed by i's signal, 128+N, as
// shells report it (130 for SIGINT); 1 if the signal has no number.
func (i *Interrupt) ExitCode() int {
	if s, ok := i.Signal.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}
