// Package nsexec puts a process's network in Linux namespaces: it starts
// a command in new network and PID namespaces (and a user namespace when
// not root) by re-executing the running binary (Start, IsInit, Init),
// enters a namespace that exists already to make a device there
// (OpenNetNS, OpenDevice, through nsenter(1) when not root), hands the
// guest's TUN device back to the parent over a socket (SCM_RIGHTS), and
// supervises the command as PID 1 of its PID namespace, passing signals
// on to it (Child.Run, WatchPID for a process it did not start).
//
// The package knows nothing of the gateway that serves the device: its
// callers (package sandbox) validate their configuration and give it a
// Guest, the guest side's settings. Messages are worded for the user of
// ustack sandbox and start with "sandbox:".
//
// Everything but Interrupt is Linux-only.
package nsexec
