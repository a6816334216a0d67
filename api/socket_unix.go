//go:build unix

package api

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// defaultTransport is a unix socket on Unix systems.
const defaultTransport = unixSocket

// listenUnix creates the unix socket at path with mode 0600.
func listenUnix(path string) (endpoint, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return endpoint{}, fmt.Errorf("api: %s exists and is not a socket; choose another --api path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return endpoint{}, fmt.Errorf("api: %s is in use by another running ustack; choose another --api path", path)
		}
		if err := os.Remove(path); err != nil {
			return endpoint{}, fmt.Errorf("api: removing stale socket: %w", err)
		}
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return endpoint{}, fmt.Errorf("api: listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return endpoint{}, fmt.Errorf("api: %w", err)
	}
	return endpoint{ln: ln, remove: func() error { return os.Remove(path) }}, nil
}
