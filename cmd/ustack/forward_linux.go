package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/api"
	"github.com/ustacknet/ustack/sandbox"
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
	change := func(method, verb string) *cobra.Command {
		return &cobra.Command{
			Use:   verb + " --api PATH SPEC",
			Short: verb + " a forward",
			Args: func(c *cobra.Command, args []string) error {
				if len(args) != 1 {
					return usageError{fmt.Errorf("forward %s takes one SPEC, [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]", verb)}
				}
				if _, err := sandbox.ParseForward(args[0]); err != nil {
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
				var got string
				if err := cl.Do(c.Context(), method, "/v1/forwards?spec="+url.QueryEscape(args[0]), nil, &got); err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "%s: %s\n", map[string]string{"add": "added", "remove": "removed"}[verb], got)
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
			var got []string
			if err := cl.Do(c.Context(), http.MethodGet, "/v1/forwards", nil, &got); err != nil {
				return err
			}
			for _, s := range got {
				fmt.Fprintln(c.OutOrStdout(), s)
			}
			return nil
		},
	}
	c.AddCommand(change(http.MethodPost, "add"), list, change(http.MethodDelete, "remove"))
	return c
}
