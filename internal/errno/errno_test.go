package errno

import (
	"errors"
	"syscall"
	"testing"
)

// TestWrap checks the Windows form on every system: an *Error matches its
// portable name and its Winsock error, and errors.As finds the latter.
func TestWrap(t *testing.T) {
	for e, w := range winsock {
		t.Run(e.Error(), func(t *testing.T) {
			err := wrap(e)
			if !errors.Is(err, e) {
				t.Errorf("errors.Is(wrap(%d), %d) = false", e, e)
			}
			if !errors.Is(err, w) {
				t.Errorf("errors.Is(wrap(%d), WSA %d) = false", e, w)
			}
			var got syscall.Errno
			if !errors.As(err, &got) || got != w {
				t.Errorf("errors.As(wrap(%d)) = %d, want the Winsock error %d", e, got, w)
			}
			if errors.Is(err, syscall.EPERM) {
				t.Errorf("wrap(%d) matches an unrelated errno", e)
			}
		})
	}
	if err := wrap(syscall.EPERM); err != syscall.EPERM {
		t.Errorf("wrap(EPERM), which has no Winsock form, = %#v, want the errno itself", err)
	}
}

// TestOf checks what this system reports.
func TestOf(t *testing.T) {
	err := Of(syscall.ECONNREFUSED)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Of(ECONNREFUSED) = %v, does not match ECONNREFUSED", err)
	}
	_, wrapped := err.(*Error)
	if wrapped != useWSA {
		t.Errorf("Of(ECONNREFUSED) = %#v: wrapped %v, want %v on this system", err, wrapped, useWSA)
	}
	if got, want := Is(syscall.Errno(10061), syscall.ECONNREFUSED), useWSA; got != want {
		t.Errorf("Is(10061, ECONNREFUSED) = %v, want %v", got, want)
	}
}
