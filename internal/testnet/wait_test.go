package testnet

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestAwaitReturnsOnceCondHolds(t *testing.T) {
	n := 0
	err := Await(time.Minute, func() error {
		n++
		if n < 3 {
			return fmt.Errorf("n = %d", n)
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Await = %v after %d calls, want nil after 3", err, n)
	}
}

func TestAwaitGivesLastErrorAtBound(t *testing.T) {
	n := 0
	start := time.Now()
	err := Await(30*time.Millisecond, func() error { n++; return fmt.Errorf("call %d", n) })
	if want := fmt.Sprintf("call %d", n); err == nil || err.Error() != want {
		t.Fatalf("Await = %v, want the last error %q", err, want)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("Await gave up after %v, before its bound of 30ms", d)
	}
	if n < 2 {
		t.Fatalf("cond called %d times in 30ms, want at least 2", n)
	}
}

// fatalTB records Fatalf and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestWaitForFailsNamingWhatAndState(t *testing.T) {
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		WaitFor(f, 10*time.Millisecond, "the widget", func() error { return errors.New("widget count 7, want 8") })
	}()
	<-done
	for _, want := range []string{"10ms", "the widget", "widget count 7, want 8"} {
		if !strings.Contains(f.msg, want) {
			t.Errorf("WaitFor's failure %q does not mention %q", f.msg, want)
		}
	}
}

func blockHere(ch chan struct{}) { <-ch }

func TestBlocked(t *testing.T) {
	const fn = "github.com/ustacknet/ustack/internal/testnet.blockHere"
	if err := Blocked(1, fn)(); err == nil {
		t.Fatal("Blocked holds before any goroutine runs blockHere")
	}
	ch := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); blockHere(ch) }()
	WaitFor(t, 10*time.Second, "blockHere to block", Blocked(1, fn))
	if err := Gone(fn)(); err == nil {
		t.Fatal("Gone holds while blockHere runs")
	}
	close(ch)
	<-done
	if err := Blocked(1, fn)(); err == nil {
		t.Fatal("Blocked still holds after blockHere returned")
	}
	WaitFor(t, 10*time.Second, "blockHere's goroutine to end", Gone(fn))
}
