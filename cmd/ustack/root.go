package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// exitStatus carries the sandboxed command's exit code out of cobra.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("command exited with status %d", int(e)) }

// usageError marks errors caused by bad flags or arguments; they exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var es exitStatus
	if errors.As(err, &es) {
		return int(es)
	}
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		return 2
	}
	return 1
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "ustack",
		Short:         "A user-space TCP/UDP network stack with its own ephemeral port allocator",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{err}
	})
	root.AddCommand(newDemoCmd(), newPingCmd(), newRunCmd(), newPortsCmd(), newSandboxCmd(), newForwardCmd(), newSlirpCmd())
	return root
}

// noArgs rejects positional arguments as a usage error (exit 2).
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q; see --help", c.CommandPath(), args)}
	}
	return nil
}
