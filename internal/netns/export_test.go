//go:build linux

package netns

// ErrGoexit exposes errGoexit to the external tests.
var ErrGoexit = errGoexit
