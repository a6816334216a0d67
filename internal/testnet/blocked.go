package testnet

import (
	"fmt"
	"runtime"
	"strings"
)

// Blocked returns a condition for WaitFor that holds once at least n
// goroutines are parked (waiting on a channel, a select, a lock, a
// condition or the network poller) with fn on their stack. fn is a
// function's full name as a traceback prints it, such as
// "github.com/ustacknet/ustack/packetio.(*Link).read". A test uses it to
// know that calls it started in other goroutines have got as far as
// blocking, before it does what should unblock them.
func Blocked(n int, fn string) func() error {
	return func() error {
		states := goroutinesWith(fn)
		parkedN := 0
		for _, s := range states {
			if parked(s) {
				parkedN++
			}
		}
		if parkedN < n {
			return fmt.Errorf("%d goroutines parked in %s, want %d; states of those with it on their stack: %q", parkedN, fn, n, states)
		}
		return nil
	}
}

// Gone returns a condition for WaitFor that holds once no goroutine has fn
// on its stack: the goroutines running it have ended, not merely said so.
func Gone(fn string) func() error {
	return func() error {
		if states := goroutinesWith(fn); len(states) > 0 {
			return fmt.Errorf("%d goroutines still in %s, states %q", len(states), fn, states)
		}
		return nil
	}
}

// goroutinesWith returns the states of the goroutines with fn on their
// stack.
func goroutinesWith(fn string) []string {
	buf := make([]byte, 1<<16)
	for {
		m := runtime.Stack(buf, true)
		if m < len(buf) {
			buf = buf[:m]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var states []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if onStack(g, fn) {
			states = append(states, goroutineState(g))
		}
	}
	return states
}

// onStack reports whether the traceback of goroutine g has a frame of fn.
func onStack(g, fn string) bool {
	for _, line := range strings.Split(g, "\n") {
		if strings.HasPrefix(line, fn+"(") || strings.HasPrefix(line, fn+"...") {
			return true
		}
	}
	return false
}

// goroutineState returns the state in g's header line,
// "goroutine 7 [chan receive, 2 minutes]:" gives "chan receive".
func goroutineState(g string) string {
	head, _, _ := strings.Cut(g, "\n")
	_, s, ok := strings.Cut(head, "[")
	if !ok {
		return ""
	}
	s, _, _ = strings.Cut(s, "]")
	s, _, _ = strings.Cut(s, ",")
	return s
}

// parked reports whether a goroutine in state s waits for another one or
// for the network poller, as opposed to running, runnable, or in a system
// call that may return by itself.
func parked(s string) bool {
	switch s {
	case "", "running", "runnable", "syscall", "idle", "dead", "copystack", "preempted":
		return false
	}
	return !strings.HasPrefix(s, "sleep")
}
