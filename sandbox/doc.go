// Package sandbox gives a network namespace its network from a ustack
// stack, as slirp4netns and pasta do. The Gateway side runs in the host's
// namespace: it owns the stack on the sandbox's TUN device, carries the
// guest's TCP connections over host sockets through a relay that
// translates segments to socket calls on one epoll loop (package
// internal/tcprelay; relayside.go), carries its UDP flows between the
// stack's endpoints and host sockets on two goroutines for all of them
// (package internal/udprelay; udpside.go), answers
// DNS at the DNS address, and forwards host ports into the guest. The
// process side creates the TUN device and serves it: Run
// (run_linux.go) makes new namespaces for a command, Attach
// (attach_linux.go) serves a namespace that already exists (and, left
// unconfigured, attaches to a TAP device made there beforehand, as
// rootlesskit makes one for slirp4netns). Both check their Options once
// (options.go, config.go; a refused field is a *ConfigError), leave the
// namespaces, the device's hand-back and the command's supervision to
// package internal/nsexec, and stop when their context ends (an
// *Interrupt cause passes a signal on to the command). NewSlirpAPI
// speaks slirp4netns's control protocol over a Gateway (package slirpapi), and
// the Gateway can send IPv6 router advertisements for guests that
// configure themselves (package internal/ra).
//
// The defaults follow slirp4netns: guest 10.0.2.100/24, gateway 10.0.2.2,
// DNS 10.0.2.3, MTU 65520, IPv6 fd00::100/64 with gateway fd00::2 and DNS
// fd00::3. Unlike slirp4netns, the host's loopback is closed unless
// Policy.AllowHostLoopback is set.
//
// The package is Linux-only: on other systems it is empty, and the
// commands built on it (ustack sandbox, ustack slirp4netns) fail at once.
package sandbox
