package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// usageError marks errors caused by bad flags or arguments; they exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
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
	root.AddCommand(newDemoCmd())
	return root
}
