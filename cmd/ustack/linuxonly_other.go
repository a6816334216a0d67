//go:build !linux

package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
)

// The sandbox (ustack sandbox, ustack slirp4netns, ustack forward, and
// demo --tun) is built on Linux network namespaces; elsewhere these fail
// at once with a message that says so.

// sandboxInit has nothing to do: no sandbox child runs here.
func sandboxInit() {}

// slirpArgs leaves the arguments alone: there is no slirp4netns mode here.
func slirpArgs(args []string) []string { return args }

func newSandboxCmd() *cobra.Command {
	return linuxOnlyCmd("sandbox", "Run a command in a network namespace networked by ustack (Linux only)")
}

func newSlirpCmd() *cobra.Command {
	return linuxOnlyCmd("slirp4netns", "Network an existing namespace, with slirp4netns's command line (Linux only)")
}

func newForwardCmd() *cobra.Command {
	return linuxOnlyCmd("forward", "Add, remove or list a running sandbox's port forwards (Linux only)")
}

// linuxOnlyCmd is a command that fails at once, whatever its arguments.
func linuxOnlyCmd(name, short string) *cobra.Command {
	return &cobra.Command{
		Use:                name,
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(c *cobra.Command, _ []string) error {
			return errLinuxOnly("ustack " + name)
		},
	}
}

func errLinuxOnly(what string) error {
	return fmt.Errorf("%s needs Linux (network namespaces and TUN devices); this is %s/%s", what, runtime.GOOS, runtime.GOARCH)
}

func newTUNDemoEnv(stack.Config, tun.Driver) (*demoEnv, error) {
	return nil, errLinuxOnly("demo --tun")
}

func newTUNPingEnv(stack.Config) (*pingEnv, error) {
	return nil, errLinuxOnly("ping --tun")
}
