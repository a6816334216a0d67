// Package netns creates private network namespaces and runs code in them,
// from inside one Go process.
//
// A network namespace belongs to an OS thread, not to a process: unshare
// and setns change only the calling thread, while the Go scheduler moves
// goroutines between threads. This package therefore does all namespace
// work on a fresh goroutine locked to its thread, and switches that thread
// back to the namespace it came from before unlocking it. If switching back
// fails the goroutine exits still locked, and the runtime then terminates
// the thread rather than reuse it in the wrong namespace (or, if it is the
// process's main thread, which cannot end, parks it for good).
//
// What is created inside a namespace stays there: a socket or a TUN device
// opened on a thread in the namespace keeps belonging to it, whichever
// goroutine uses it later. Everything else, including other goroutines of
// the caller and all of gVisor's, runs in the original namespace. So create
// sockets with NS.Listen, NS.ListenPacket and NS.Dial, run other
// namespace-bound code with NS.Do, and configure links, addresses and routes
// with the netlink handle from NS.Handle, which works from any goroutine.
//
// Namespaces made by New have no name and no mount in /run/netns: they
// disappear when the last thing that refers to them (the NS, a socket, a
// TUN device's file descriptor) is closed, so nothing is left behind even
// if the process dies.
//
// The package is Linux-only: on other systems it is empty.
package netns
