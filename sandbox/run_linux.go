package sandbox

import (
	"context"
	"errors"

	"github.com/ustacknet/ustack/internal/nsexec"
	"github.com/ustacknet/ustack/tun"
)

// Run starts o.Command in a new network namespace (and a new user
// namespace when not root) whose only network is a TUN device served by
// a Gateway, waits for it, tears everything down, and returns the
// command's exit code (128+N if it was killed by signal N; 127 and a
// *NotFoundError if it does not exist).
//
// The end of ctx stops the command. If its cause (context.Cause) is an
// *Interrupt, as when the caller catches SIGINT and SIGTERM, the signal
// is passed on to the command, with those that follow, and Run returns
// the command's exit code when it exits; if the Interrupt comes before
// the command has started, it never starts and Run returns 128+N. For
// any other cause the command gets SIGTERM, and SIGKILL 5 s later.
func Run(ctx context.Context, o Options) (int, error) {
	if len(o.Command) == 0 {
		return 0, errors.New("sandbox: no command given")
	}
	guest, err := o.check()
	if err != nil {
		return 0, err
	}
	child, err := nsexec.Start(nsexec.Spec{Self: o.Self, Args: o.Command, Guest: guest, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr})
	if err != nil {
		var nf *NotFoundError
		if errors.As(err, &nf) {
			return 127, err
		}
		return 1, err
	}
	dev, err := tun.FromFD(child.FD, child.Name, o.MTU) // closes the descriptor on failure
	if err != nil {
		child.Kill()
		return 0, err
	}
	defer dev.Close()
	gw, err := o.serve(dev)
	if err != nil {
		child.Kill()
		return 0, err
	}
	defer gw.Close()
	return child.Run(ctx)
}
