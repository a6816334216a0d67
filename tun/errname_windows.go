package tun

import "syscall"

// errnoName returns "": Windows errors have no short symbolic names, and
// their messages already say what they are.
func errnoName(syscall.Errno) string { return "" }
