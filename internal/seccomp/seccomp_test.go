//go:build linux

package seccomp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The filter is for good and for the whole process, so it is tried in a
// child: this test binary run again with childEnv set.
const childEnv = "USTACK_SECCOMP_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// child installs the filter with threads already running, then checks
// what is refused and that ordinary work goes on. It prints one line per
// check and exits 0 if all hold.
func child() int {
	// Threads that exist before the filter: TSYNC must reach them. Each
	// goroutine holds a thread of its own from before Install (locked,
	// then counted in ready) and makes its call on it after.
	var wg, ready sync.WaitGroup
	start := make(chan struct{})
	results := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // the thread ends with the goroutine
			ready.Done()
			<-start
			results <- unix.Unshare(unix.CLONE_NEWUTS)
		}()
	}
	ready.Wait()
	if err := Install(); err != nil {
		fmt.Println("install:", err)
		return 1
	}
	close(start)
	wg.Wait()
	close(results)
	bad := 0
	for err := range results {
		if !errors.Is(err, unix.EPERM) {
			fmt.Println("unshare on another thread:", err)
			bad++
		}
	}
	if err := syscall.Exec("/bin/true", []string{"true"}, nil); !errors.Is(err, unix.EPERM) {
		fmt.Println("execve:", err)
		bad++
	}
	if err := exec.Command("/bin/true").Run(); err == nil {
		fmt.Println("os/exec ran a program")
		bad++
	}
	if _, _, e := unix.Syscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0); e != unix.EPERM {
		fmt.Println("ptrace:", e)
		bad++
	}
	// Ordinary work: sockets, goroutines, timers, memory.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	b := make([]byte, 2)
	if _, err := c.Read(b); err != nil || string(b) != "ok" {
		fmt.Println("read:", err)
		bad++
	}
	_ = make([]byte, 64<<20)
	// A timer is part of the ordinary work under test: the sleep must
	// work, and last, under the filter.
	slept := time.Now()
	time.Sleep(10 * time.Millisecond)
	if d := time.Since(slept); d < 10*time.Millisecond {
		fmt.Println("a 10 ms sleep took", d)
		bad++
	}
	if bad > 0 {
		return 1
	}
	fmt.Println("filter holds")
	return 0
}

func TestFilter(t *testing.T) {
	if _, ok := nativeArch(); !ok {
		t.Skipf("no filter for this architecture")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "filter holds") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestProgramLayout(t *testing.T) {
	raw, err := program(0xc000003e)
	if err != nil {
		t.Fatal(err)
	}
	if want := 4 + len(Denied) + 2; len(raw) != want {
		t.Fatalf("%d instructions, want %d", len(raw), want)
	}
}
