package main

import (
	"encoding/json"
	"errors"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/api"
)

func newPortsCmd() *cobra.Command {
	var path string
	var asJSON bool
	c := &cobra.Command{
		Use:   "ports --api PATH",
		Short: "Show a running instance's port allocator: range, policy, cursor, ports in use, counters",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if path == "" {
				return usageError{errors.New("--api PATH is required: the API socket of the running ustack")}
			}
			cl := api.NewClient(path)
			defer cl.Close()
			snaps, err := cl.Ports(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(snaps)
			}
			return api.FormatPorts(c.OutOrStdout(), snaps)
		},
	}
	c.Flags().StringVar(&path, "api", "", "API socket of the running ustack (its --api PATH)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return c
}
