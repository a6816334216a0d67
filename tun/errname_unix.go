//go:build unix

package tun

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// errnoName returns the errno's symbolic name, such as "EPERM".
func errnoName(e syscall.Errno) string { return unix.ErrnoName(e) }
