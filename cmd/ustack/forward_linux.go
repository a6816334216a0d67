package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/api"
	"github.com/ustacknet/ustack/portfwd"
)

func newForwardCmd() *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "forward add|list|remove --api PATH [SPEC]",
		Short: "Add, list or remove port forwards of a running sandbox",
		Long: `forward changes the port forwards of a running "ustack sandbox --api PATH".
SPEC is [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp], as for sandbox -p.`,
	}
	c.PersistentFlags().StringVar(&path, "api", "", "API socket of the running sandbox (its --api PATH)")
	client := func() (*api.Client, error) {
		if path == "" {
			return nil, usageError{errors.New("--api PATH is required: the API socket of the running sandbox")}
		}
		return api.NewClient(path), nil
	}
	// change is add or remove: verb names it, done is its past tense and
	// do its client call.
	change := func(verb, done string, do func(*api.Client, *cobra.Command, portfwd.Forward) (portfwd.Forward, error)) *cobra.Command {
		var f portfwd.Forward
		return &cobra.Command{
			Use:   verb + " --api PATH SPEC",
			Short: verb + " a forward",
			Args: func(c *cobra.Command, args []string) error {
				if len(args) != 1 {
					return usageError{fmt.Errorf("forward %s takes one SPEC, %s", verb, portfwd.Syntax)}
				}
				var err error
				if f, err = portfwd.Parse(args[0]); err != nil {
					return usageError{err}
				}
				return nil
			},
			RunE: func(c *cobra.Command, args []string) error {
				cl, err := client()
				if err != nil {
					return err
				}
				defer cl.Close()
				got, err := do(cl, c, f)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "%s: %s\n", done, got)
				return nil
			},
		}
	}
	list := &cobra.Command{
		Use:   "list --api PATH",
		Short: "list the forwards",
		Args:  noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			defer cl.Close()
			got, err := cl.Forwards(c.Context())
			if err != nil {
				return err
			}
			for _, f := range got {
				fmt.Fprintln(c.OutOrStdout(), f)
			}
			return nil
		},
	}
	c.AddCommand(
		change("add", "added", func(cl *api.Client, c *cobra.Command, f portfwd.Forward) (portfwd.Forward, error) {
			return cl.AddForward(c.Context(), f)
		}),
		list,
		change("remove", "removed", func(cl *api.Client, c *cobra.Command, f portfwd.Forward) (portfwd.Forward, error) {
			return cl.RemoveForward(c.Context(), f)
		}))
	return c
}
