package testnet

import (
	"testing"
	"time"
)

// WaitFor is the suite's one polling primitive, for a condition that gives
// no event to wait on (a socket state, a counter, a file appearing in
// another process's namespace). Where a channel, a blocking read with a
// deadline or a notification exists, wait on that instead.
//
// WaitFor calls cond until it returns nil, first at once, then with a
// pause that grows from 1 ms to 16 ms between calls. If cond has not
// returned nil within bound, WaitFor fails the test with Fatalf, naming
// what was awaited, the bound, and cond's last error, which should say
// what the state was. Like Fatalf, it must be called from the goroutine
// running the test.
func WaitFor(tb testing.TB, bound time.Duration, what string, cond func() error) {
	tb.Helper()
	if err := Await(bound, cond); err != nil {
		tb.Fatalf("waited %v for %s: %v", bound, what, err)
	}
}

// Await is WaitFor for callers that are not a test's goroutine or that
// handle the failure themselves: it polls cond the same way and returns
// nil once cond does, or cond's last error once bound has passed.
func Await(bound time.Duration, cond func() error) error {
	deadline := time.Now().Add(bound)
	pause := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return err
		}
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(2*pause, 16*time.Millisecond)
	}
}
