// Package seccomp installs a system call filter that takes from a
// running gateway what it never needs once it is serving: running
// programs, changing namespaces or mounts, tracing or reading other
// processes, loading kernel code, and the like. It is a deny list, not an
// allow list: the Go runtime, gVisor and the host sockets keep every call
// they make, so the filter cannot break a rare path; a denied call fails
// with EPERM rather than killing the process. System calls of another ABI
// than the binary's own (i386 or x32 on x86-64) are denied as a whole, so
// that the list cannot be sidestepped through them.
//
// The package is Linux-only: on other systems it is empty.
package seccomp
