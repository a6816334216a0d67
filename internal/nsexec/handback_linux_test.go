package nsexec

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// socketPair returns the two ends of a hand-back socket.
func socketPair(t *testing.T) (parent, child *os.File) {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	parent, child = os.NewFile(uintptr(pair[0]), "parent"), os.NewFile(uintptr(pair[1]), "child")
	t.Cleanup(func() { parent.Close(); child.Close() })
	return parent, child
}

// The device's descriptor, name and MTU arrive as sent, and the
// descriptor is the same open file (a pipe stands in for the device).
func TestHandBackDevice(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mtu     int
		exitErr bool // the child's exit is seen as well as its message
	}{
		{"with MTU", 1500, false},
		{"without MTU", 0, false},
		{"child exited after sending", 65520, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent, child := socketPair(t)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			if err := sendDevice(child, r, "ustack0", tc.mtu); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			if tc.exitErr {
				exited <- nil
			}
			m := receiveDevice(parent, exited)
			if m.err != nil {
				t.Fatal(m.err)
			}
			got := os.NewFile(uintptr(m.fd), "received")
			defer got.Close()
			if m.name != "ustack0" || m.mtu != tc.mtu {
				t.Errorf("got name %q MTU %d, want ustack0 and %d", m.name, m.mtu, tc.mtu)
			}
			w.Write([]byte("x"))
			b := make([]byte, 1)
			if n, err := got.Read(b); n != 1 || b[0] != 'x' {
				t.Errorf("read through the received descriptor: %d %v, want the byte written to the pipe", n, err)
			}
		})
	}
}

// The child's refusals arrive as errors; a command that does not exist
// as a *NotFoundError.
func TestHandBackErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		send     func(child *os.File)
		want     string
		notFound bool
	}{
		{"error", func(c *os.File) { sendFail(c, msgError, "sandbox: no room") }, "sandbox: no room", false},
		{"not found", func(c *os.File) { sendFail(c, msgNotFound, `sandbox: command "nope": not found`) }, `sandbox: command "nope": not found`, true},
		{"closed", func(c *os.File) { c.Close() }, "sandbox: the sandbox process ended before creating its network", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent, child := socketPair(t)
			tc.send(child)
			m := receiveDevice(parent, make(chan error, 1))
			if m.err == nil || m.err.Error() != tc.want {
				t.Fatalf("error %v, want %q", m.err, tc.want)
			}
			var nf *NotFoundError
			if errors.As(m.err, &nf) != tc.notFound {
				t.Errorf("errors.As(*NotFoundError) = %v, want %v", !tc.notFound, tc.notFound)
			}
		})
	}
}
