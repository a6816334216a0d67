//go:build linux

package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/conformance"
	"github.com/ustacknet/ustack/internal/privtest"
)

// Environment variables of TestConformance.
const (
	// envLong runs the real-scale variants: 3-minute zero windows, 1 GiB
	// each way with loss, and the scenarios that only make sense at real
	// scale (guest-vanishes waits for the relay's 60 s FIN timeout).
	envLong = "USTACK_LONG"
	// envPending runs the scenarios that fail against today's relay
	// (pendingToday). The list shrinks as the relay is fixed, and this
	// variable goes with its last entry.
	envPending = "USTACK_CONFORMANCE_PENDING"
)

// pendingToday names the scenarios that fail against today's relay, and
// why (issue 14's findings). Without USTACK_CONFORMANCE_PENDING=1 they
// are skipped with that reason.
var pendingToday = map[string]string{
	"keepalive":      "C1: keepalive probes, old zero-length segments, get no ACK; the guest kills the connection after 3.1 s",
	"zerowindow-up":  "C1: the guest's zero-window probes get no ACK",
	"syn-flood":      "M2, M3: no SYN-RECEIVED timeout; the host connections of half-open handshakes stay open",
	"stalled-flows":  "M1: up to 2 MiB per flow buffered in user space; peak RSS about 850 MiB",
	"udp-burst":      "item 7: the guest's TUN queue overflows while new UDP flows are set up; about 28% arrive",
	"guest-vanishes": "M2: no FIN-WAIT or idle timeout; the host connection stays open past 65 s",
}

// pendingTodayLong names the scenarios whose real-scale variant
// (USTACK_LONG=1) fails against today's relay while the default one
// passes.
var pendingTodayLong = map[string]string{
	"zerowindow-down": "C2: every probe the relay sends counts as a retry; the flow is reset after about 120 s of zero window",
}

// maxStalledRSS bounds ustack's peak RSS (KiB) with the stalled-flows
// scenario's 256 stalled flows: twice pasta's 30 MiB as measured on
// these machines (bench/conformance.sh measures both in one run).
const maxStalledRSS = 64 << 10

// TestConformance runs internal/conformance's scenarios with the kernel
// as the guest inside `ustack sandbox --allow-host-loopback`, against a
// peer on the run namespace's loopback (10.0.2.2 in the guest), each in
// a sandbox of its own.
func TestConformance(t *testing.T) {
	long := os.Getenv(envLong) == "1"
	pending := os.Getenv(envPending) == "1"
	privtest.Require(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft is needed (scripts/test.sh installs nftables): %v", err)
	}
	for _, s := range conformance.All() {
		t.Run(s.Name, func(t *testing.T) {
			if s.LongOnly && !long {
				t.Skipf("runs only at real scale: %s=1", envLong)
			}
			why := pendingToday[s.Name]
			if long && why == "" {
				why = pendingTodayLong[s.Name]
			}
			if why != "" && !pending {
				t.Skipf("fails against today's relay (%s); %s=1 runs it", why, envPending)
			}
			p := s.Params
			if long {
				p = s.Long
			}
			if p.Hold > 0 {
				// Mostly idle: the zero windows overlap.
				t.Parallel()
			}
			r := newSandboxRun(t)
			l, err := r.ns.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var pid atomic.Int64
			var peakKiB atomic.Int64
			srv := conformance.Serve(l, conformance.Config{
				Listen:       r.ns.Listen,
				ListenPacket: r.ns.ListenPacket,
				Event: func(_, event string) {
					if event == "stalled" {
						peakKiB.Store(int64(hwmKiB(int(pid.Load()))))
					}
				},
			})
			t.Cleanup(func() { srv.Close() })
			arg := fmt.Sprintf("%s,10.0.2.2:%d,%v", s.Name, l.Addr().(*net.TCPAddr).Port, long)
			cmd, out, done := r.start([]string{"--allow-host-loopback"}, guest("conform", arg)...)
			pid.Store(int64(cmd.Process.Pid))
			bound := p.Hold + p.Limit + 2*time.Minute
			select {
			case err := <-done:
				done <- err
			case <-time.After(bound):
				t.Fatalf("the guest did not finish in %v\n%s", bound, out)
			}
			line := ""
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(l, "RESULT ") {
					line = l
				}
			}
			if !strings.HasPrefix(line, "RESULT "+s.Name+" PASS") {
				t.Fatalf("%s\n\n%s\nsandbox output:\n%s", s.Doc, line, out)
			}
			t.Log(line)
			if s.Name == "stalled-flows" {
				kib := peakKiB.Load()
				t.Logf("ustack's peak RSS with %d stalled flows: %d MiB", p.Count, kib>>10)
				if kib == 0 || kib > maxStalledRSS {
					t.Errorf("peak RSS %d KiB with %d stalled flows; want at most %d KiB", kib, p.Count, maxStalledRSS)
				}
			}
		})
	}
}

// hwmKiB returns a process's peak resident set size (VmHWM), or 0.
func hwmKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			var n int
			fmt.Sscan(f[1], &n)
			return n
		}
	}
	return 0
}
