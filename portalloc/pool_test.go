package portalloc

import (
	"errors"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func newTestPool(t testing.TB, r Range, pol Policy) *Pool {
	t.Helper()
	p, err := NewPool(TCP, PoolConfig{Range: r, Policy: pol, Rand: rand.NewPCG(1, 2)})
	if err != nil {
		t.Fatalf("NewPool(%v): %v", r, err)
	}
	return p
}

func allocN(t testing.TB, p *Pool, n int) []uint16 {
	t.Helper()
	var got []uint16
	for i := 0; i < n; i++ {
		port, err := p.Allocate(Request{})
		if err != nil {
			t.Fatalf("Allocate #%d: %v", i, err)
		}
		got = append(got, port)
	}
	return got
}

func mustReserve(t testing.TB, p *Pool, ports ...uint16) {
	t.Helper()
	for _, port := range ports {
		if err := p.Reserve(port); err != nil {
			t.Fatalf("Reserve(%d): %v", port, err)
		}
	}
}

func mustRelease(t testing.TB, p *Pool, ports ...uint16) {
	t.Helper()
	for _, port := range ports {
		if err := p.Release(port); err != nil {
			t.Fatalf("Release(%d): %v", port, err)
		}
	}
}

// vetoSet returns a Veto that refuses exactly the given ports.
func vetoSet(ports ...uint16) func(uint16) bool {
	return func(port uint16) bool {
		for _, v := range ports {
			if v == port {
				return true
			}
		}
		return false
	}
}

func vetoAll(uint16) bool { return true }

// step is one operation of a sequential-order script. Exactly one of
// alloc, release, reserve and exclude is set.
type step struct {
	alloc   bool
	veto    func(uint16) bool
	want    uint16          // port an alloc must return
	wantErr *ExhaustedError // or the exhaustion it must report
	release uint16
	reserve uint16
	exclude Range
}

func alloc(want uint16) step { return step{alloc: true, want: want} }
func allocVeto(veto func(uint16) bool, want uint16) step {
	return step{alloc: true, veto: veto, want: want}
}
func exhausted(e ExhaustedError) step { return step{alloc: true, wantErr: &e} }
func exhaustedVeto(veto func(uint16) bool, e ExhaustedError) step {
	return step{alloc: true, veto: veto, wantErr: &e}
}
func release(port uint16) step { return step{release: port} }
func reserve(port uint16) step { return step{reserve: port} }
func exclude(r Range) step     { return step{exclude: r} }

func runSteps(t *testing.T, p *Pool, steps []step) {
	t.Helper()
	for i, s := range steps {
		switch {
		case s.alloc:
			port, err := p.Allocate(Request{Veto: s.veto})
			if s.wantErr != nil {
				var got *ExhaustedError
				if !errors.As(err, &got) {
					t.Fatalf("step %d: Allocate = %d, %v; want %v", i, port, err, s.wantErr)
				}
				if diff := cmp.Diff(s.wantErr, got, equateAddrs); diff != "" {
					t.Fatalf("step %d: ExhaustedError (-want +got):\n%s", i, diff)
				}
				if !errors.Is(err, ErrExhausted) || !errors.Is(err, syscall.EADDRNOTAVAIL) {
					t.Fatalf("step %d: %v does not match ErrExhausted and EADDRNOTAVAIL", i, err)
				}
				continue
			}
			if err != nil || port != s.want {
				t.Fatalf("step %d: Allocate = %d, %v; want %d", i, port, err, s.want)
			}
		case s.release != 0:
			if err := p.Release(s.release); err != nil {
				t.Fatalf("step %d: Release(%d): %v", i, s.release, err)
			}
		case s.reserve != 0:
			if err := p.Reserve(s.reserve); err != nil {
				t.Fatalf("step %d: Reserve(%d): %v", i, s.reserve, err)
			}
		case s.exclude != Range{}:
			if err := p.Exclude(s.exclude); err != nil {
				t.Fatalf("step %d: Exclude(%v): %v", i, s.exclude, err)
			}
		default:
			t.Fatalf("step %d is empty", i)
		}
	}
}

func TestSequentialOrder(t *testing.T) {
	r5 := Range{40000, 40004}
	full5 := func(inUse, excluded int) ExhaustedError {
		return ExhaustedError{Protocol: TCP, Range: r5, InUse: inUse, Excluded: excluded}
	}
	for _, tc := range []struct {
		name  string
		rng   Range
		steps []step
		stats Stats
	}{
		{
			name:  "in order then exhausted",
			rng:   r5,
			steps: []step{alloc(40000), alloc(40001), alloc(40002), alloc(40003), alloc(40004), exhausted(full5(5, 0))},
			stats: Stats{Allocations: 5, Exhausted: 1},
		},
		{
			name: "wrap reuses the oldest released port",
			rng:  r5,
			steps: []step{
				alloc(40000), alloc(40001), alloc(40002), release(40000),
				alloc(40003), alloc(40004), alloc(40000), exhausted(full5(5, 0)),
			},
			stats: Stats{Allocations: 6, Releases: 1, Exhausted: 1, Wraps: 1},
		},
		{
			name: "skips reserved ports",
			rng:  r5,
			steps: []step{
				reserve(40001), reserve(40003),
				alloc(40000), alloc(40002), alloc(40004), exhausted(full5(5, 0)),
			},
			stats: Stats{Allocations: 3, Reservations: 2, Exhausted: 1},
		},
		{
			name: "skips a port reserved ahead of the cursor",
			rng:  r5,
			steps: []step{
				alloc(40000), reserve(40001), alloc(40002),
			},
			stats: Stats{Allocations: 2, Reservations: 1},
		},
		{
			name: "skips excluded ports",
			rng:  r5,
			steps: []step{
				exclude(Range{40001, 40002}),
				alloc(40000), alloc(40003), alloc(40004), exhausted(full5(3, 2)),
			},
			stats: Stats{Allocations: 3, Exhausted: 1},
		},
		{
			name: "exhaustion then recovery",
			rng:  r5,
			steps: []step{
				alloc(40000), alloc(40001), alloc(40002), alloc(40003), alloc(40004),
				exhausted(full5(5, 0)), exhausted(full5(5, 0)),
				release(40002), alloc(40002),
				exhausted(full5(5, 0)),
				release(40004), release(40000), alloc(40004), alloc(40000),
			},
			stats: Stats{Allocations: 8, Releases: 3, Exhausted: 3, Wraps: 2},
		},
		{
			name: "cursor follows the last allocated port, not the last released",
			rng:  r5,
			steps: []step{
				alloc(40000), alloc(40001), alloc(40002),
				release(40001), alloc(40003),
				release(40000), alloc(40004),
				alloc(40000), alloc(40001), exhausted(full5(5, 0)),
			},
			stats: Stats{Allocations: 7, Releases: 2, Exhausted: 1, Wraps: 1},
		},
		{
			name: "veto skips a port without losing it",
			rng:  r5,
			steps: []step{
				alloc(40000),
				allocVeto(vetoSet(40001), 40002),
				alloc(40003), alloc(40004),
				alloc(40001), // the vetoed port, after the wrap
				exhausted(full5(5, 0)),
			},
			stats: Stats{Allocations: 5, Exhausted: 1, Wraps: 1, Vetoes: 1},
		},
		{
			name: "veto refuses the ports after the cursor, allocation wraps",
			rng:  r5,
			steps: []step{
				alloc(40000), alloc(40001), alloc(40002), release(40000),
				allocVeto(vetoSet(40003, 40004), 40000),
				alloc(40003),
			},
			stats: Stats{Allocations: 5, Releases: 1, Wraps: 1, Vetoes: 2},
		},
		{
			name: "all vetoed",
			rng:  r5,
			steps: []step{
				alloc(40000), reserve(40002),
				exhaustedVeto(vetoAll, ExhaustedError{Protocol: TCP, Range: r5, InUse: 2, Vetoed: 3}),
				alloc(40001), // the failed call did not move the cursor
			},
			stats: Stats{Allocations: 2, Reservations: 1, Exhausted: 1, Vetoes: 3},
		},
		{
			name: "all vetoed on a full range asks nobody",
			rng:  r5,
			steps: []step{
				alloc(40000), alloc(40001), alloc(40002), alloc(40003), alloc(40004),
				exhaustedVeto(vetoAll, full5(5, 0)),
			},
			stats: Stats{Allocations: 5, Exhausted: 1},
		},
		{
			name: "single-port range",
			rng:  Range{40000, 40000},
			steps: []step{
				alloc(40000),
				exhausted(ExhaustedError{Protocol: TCP, Range: Range{40000, 40000}, InUse: 1}),
				release(40000), alloc(40000), release(40000), alloc(40000),
			},
			stats: Stats{Allocations: 3, Releases: 2, Exhausted: 1, Wraps: 2},
		},
		{
			name: "range ending at 65535 wraps without overflow",
			rng:  Range{65533, 65535},
			steps: []step{
				alloc(65533), alloc(65534), alloc(65535),
				exhausted(ExhaustedError{Protocol: TCP, Range: Range{65533, 65535}, InUse: 3}),
				release(65534), alloc(65534),
				release(65533), release(65535), alloc(65535), alloc(65533),
			},
			stats: Stats{Allocations: 6, Releases: 3, Exhausted: 1, Wraps: 2},
		},
		{
			name: "range starting at 1",
			rng:  Range{1, 3},
			steps: []step{
				alloc(1), alloc(2), alloc(3), release(1), alloc(1),
			},
			stats: Stats{Allocations: 4, Releases: 1, Wraps: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPool(t, tc.rng, Sequential)
			runSteps(t, p, tc.steps)
			if diff := cmp.Diff(tc.stats, p.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWholePortSpace allocates every port from 1 to 65535 in order, checks
// exhaustion and recovery, and that the cursor wraps at 65535.
func TestWholePortSpace(t *testing.T) {
	p := newTestPool(t, Range{1, 65535}, Sequential)
	for want := 1; want <= 65535; want++ {
		got, err := p.Allocate(Request{})
		if err != nil || int(got) != want {
			t.Fatalf("Allocate = %d, %v; want %d", got, err, want)
		}
	}
	_, err := p.Allocate(Request{})
	var ee *ExhaustedError
	if !errors.As(err, &ee) {
		t.Fatalf("Allocate on a full space = %v, want *ExhaustedError", err)
	}
	want := ExhaustedError{Protocol: TCP, Range: Range{1, 65535}, InUse: 65535}
	if diff := cmp.Diff(&want, ee, equateAddrs); diff != "" {
		t.Errorf("ExhaustedError (-want +got):\n%s", diff)
	}
	if got, want := err.Error(), "portalloc: tcp ephemeral ports exhausted: range 1-65535 (65535 ports), 65535 in use, 0 excluded"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	mustRelease(t, p, 777, 65535, 1)
	runSteps(t, p, []step{alloc(1), alloc(777), alloc(65535)})
	wantStats := Stats{Allocations: 65538, Releases: 3, Exhausted: 1, Wraps: 1}
	if diff := cmp.Diff(wantStats, p.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

func TestExhaustedErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  ExhaustedError
		want string
	}{
		{"plain", ExhaustedError{Protocol: UDP, Range: Range{1, 10}, InUse: 8, Excluded: 2},
			"portalloc: udp ephemeral ports exhausted: range 1-10 (10 ports), 8 in use, 2 excluded"},
		{"vetoed", ExhaustedError{Protocol: TCP, Range: Range{1, 10}, InUse: 7, Vetoed: 3},
			"portalloc: tcp ephemeral ports exhausted: range 1-10 (10 ports), 7 in use, 0 excluded, 3 free but refused by the caller (e.g. in TIME_WAIT)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPortErrors(t *testing.T) {
	r := Range{40000, 40009}
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, p *Pool)
		op      func(p *Pool) error
		want    *PortError
		wantMsg string
		is      error
	}{
		{
			name:    "double release",
			setup:   func(t *testing.T, p *Pool) { allocN(t, p, 1); mustRelease(t, p, 40000) },
			op:      func(p *Pool) error { return p.Release(40000) },
			want:    &PortError{Op: "release", Protocol: TCP, Port: 40000, Err: ErrNotHeld},
			wantMsg: "portalloc: release tcp port 40000: port is not held",
			is:      ErrNotHeld,
		},
		{
			name:    "release of a port never held",
			op:      func(p *Pool) error { return p.Release(12345) },
			want:    &PortError{Op: "release", Protocol: TCP, Port: 12345, Err: ErrNotHeld},
			wantMsg: "portalloc: release tcp port 12345: port is not held",
			is:      ErrNotHeld,
		},
		{
			name:    "release of an excluded port that is not held",
			setup:   func(t *testing.T, p *Pool) { p.Exclude(Range{40003, 40003}) },
			op:      func(p *Pool) error { return p.Release(40003) },
			want:    &PortError{Op: "release", Protocol: TCP, Port: 40003, Err: ErrNotHeld},
			wantMsg: "portalloc: release tcp port 40003: port is not held",
			is:      ErrNotHeld,
		},
		{
			name:    "release of port 0",
			op:      func(p *Pool) error { return p.Release(0) },
			want:    &PortError{Op: "release", Protocol: TCP, Port: 0, Err: ErrInvalidPort},
			wantMsg: "portalloc: release tcp port 0: port 0 is not a valid port",
			is:      ErrInvalidPort,
		},
		{
			name:    "reserve of port 0",
			op:      func(p *Pool) error { return p.Reserve(0) },
			want:    &PortError{Op: "reserve", Protocol: TCP, Port: 0, Err: ErrInvalidPort},
			wantMsg: "portalloc: reserve tcp port 0: port 0 is not a valid port",
			is:      ErrInvalidPort,
		},
		{
			name:    "reserve of an allocated port",
			setup:   func(t *testing.T, p *Pool) { allocN(t, p, 1) },
			op:      func(p *Pool) error { return p.Reserve(40000) },
			want:    &PortError{Op: "reserve", Protocol: TCP, Port: 40000, Err: syscall.EADDRINUSE},
			wantMsg: "portalloc: reserve tcp port 40000: port is already in use",
			is:      syscall.EADDRINUSE,
		},
		{
			name:    "reserve of a reserved port outside the range",
			setup:   func(t *testing.T, p *Pool) { mustReserve(t, p, 80) },
			op:      func(p *Pool) error { return p.Reserve(80) },
			want:    &PortError{Op: "reserve", Protocol: TCP, Port: 80, Err: syscall.EADDRINUSE},
			wantMsg: "portalloc: reserve tcp port 80: port is already in use",
			is:      syscall.EADDRINUSE,
		},
		{
			name:    "reserve of an excluded port that is held",
			setup:   func(t *testing.T, p *Pool) { p.Exclude(Range{40005, 40005}); mustReserve(t, p, 40005) },
			op:      func(p *Pool) error { return p.Reserve(40005) },
			want:    &PortError{Op: "reserve", Protocol: TCP, Port: 40005, Err: syscall.EADDRINUSE},
			wantMsg: "portalloc: reserve tcp port 40005: port is already in use",
			is:      syscall.EADDRINUSE,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPool(t, r, Sequential)
			if tc.setup != nil {
				tc.setup(t, p)
			}
			before := p.Snapshot()
			err := tc.op(p)
			var pe *PortError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *PortError", err)
			}
			if diff := cmp.Diff(*tc.want, *pe, cmpopts.EquateErrors(), equateAddrs); diff != "" {
				t.Errorf("PortError (-want +got):\n%s", diff)
			}
			if err.Error() != tc.wantMsg {
				t.Errorf("Error() = %q, want %q", err, tc.wantMsg)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
			if diff := cmp.Diff(before, p.Snapshot()); diff != "" {
				t.Errorf("a failed call changed the pool (-before +after):\n%s", diff)
			}
		})
	}
}

func TestExcludeAndReserve(t *testing.T) {
	r := Range{40000, 40004}
	t.Run("excluding a held port keeps it held", func(t *testing.T) {
		p := newTestPool(t, r, Sequential)
		mustReserve(t, p, 40001)
		if err := p.Exclude(Range{40000, 40002}); err != nil {
			t.Fatal(err)
		}
		if !p.Held(40001) {
			t.Fatalf("Held(40001) = false after Exclude, want true")
		}
		if p.Held(40000) {
			t.Fatalf("Held(40000) = true: excluding must not hold a port")
		}
		runSteps(t, p, []step{alloc(40003), alloc(40004),
			exhausted(ExhaustedError{Protocol: TCP, Range: r, InUse: 3, Excluded: 3})})
		// Releasing it leaves it excluded: still not allocatable.
		mustRelease(t, p, 40001)
		if p.Held(40001) {
			t.Fatalf("Held(40001) = true after Release")
		}
		runSteps(t, p, []step{exhausted(ExhaustedError{Protocol: TCP, Range: r, InUse: 2, Excluded: 3})})
		if err := p.Unexclude(Range{40001, 40001}); err != nil {
			t.Fatal(err)
		}
		runSteps(t, p, []step{alloc(40001),
			exhausted(ExhaustedError{Protocol: TCP, Range: r, InUse: 3, Excluded: 2})})
	})
	t.Run("unexcluding a held port keeps it held", func(t *testing.T) {
		p := newTestPool(t, r, Sequential)
		if err := p.Exclude(Range{40000, 40000}); err != nil {
			t.Fatal(err)
		}
		mustReserve(t, p, 40000) // reserving an excluded port works
		if err := p.Unexclude(Range{40000, 40004}); err != nil {
			t.Fatal(err)
		}
		if !p.Held(40000) {
			t.Fatalf("Held(40000) = false after Unexclude")
		}
		runSteps(t, p, []step{alloc(40001)})
		mustRelease(t, p, 40000)
		runSteps(t, p, []step{alloc(40002), alloc(40003), alloc(40004), alloc(40000)})
	})
	t.Run("reserving an excluded port", func(t *testing.T) {
		p := newTestPool(t, r, Sequential)
		if err := p.Exclude(Range{40000, 40004}); err != nil {
			t.Fatal(err)
		}
		runSteps(t, p, []step{exhausted(ExhaustedError{Protocol: TCP, Range: r, Excluded: 5})})
		mustReserve(t, p, 40002)
		if !p.Held(40002) || p.InUse() != 1 {
			t.Fatalf("Held(40002) = %v, InUse = %d; want true, 1", p.Held(40002), p.InUse())
		}
		mustRelease(t, p, 40002)
		if err := p.Release(40002); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("second Release(40002) = %v, want ErrNotHeld", err)
		}
		want := []Range{{40000, 40004}}
		if diff := cmp.Diff(want, p.Snapshot().Excluded); diff != "" {
			t.Errorf("Excluded (-want +got):\n%s", diff)
		}
	})
	t.Run("exclude twice and unexclude of free ports", func(t *testing.T) {
		p := newTestPool(t, r, Sequential)
		for range 2 {
			if err := p.Exclude(Range{40001, 40003}); err != nil {
				t.Fatal(err)
			}
		}
		if got := p.Snapshot().Free; got != 2 {
			t.Fatalf("Free = %d after excluding 3 of 5, want 2", got)
		}
		// Unexcluding ports that were never excluded is a no-op.
		if err := p.Unexclude(Range{30000, 40001}); err != nil {
			t.Fatal(err)
		}
		runSteps(t, p, []step{alloc(40000), alloc(40001), alloc(40004),
			exhausted(ExhaustedError{Protocol: TCP, Range: r, InUse: 3, Excluded: 2})})
	})
	t.Run("invalid ranges", func(t *testing.T) {
		p := newTestPool(t, r, Sequential)
		for _, tc := range []struct {
			err  error
			want string
		}{
			{p.Exclude(Range{0, 5}), "portalloc: exclude tcp ports 0-5: first port is 0; port 0 is never allocated, so the range must start at 1 or above"},
			{p.Exclude(Range{9, 5}), "portalloc: exclude tcp ports 9-5: first port 9 is greater than last port 5"},
			{p.Unexclude(Range{0, 0}), "portalloc: unexclude tcp ports 0-0: first port is 0; port 0 is never allocated, so the range must start at 1 or above"},
		} {
			if got := errString(tc.err); got != tc.want {
				t.Errorf("error = %q, want %q", got, tc.want)
			}
		}
	})
	t.Run("reserve outside the range", func(t *testing.T) {
		p := newTestPool(t, r, Sequential)
		mustReserve(t, p, 1, 65535, 39999, 40005)
		s := p.Snapshot()
		if s.InUse != 4 || s.Free != 5 {
			t.Fatalf("InUse, Free = %d, %d; want 4, 5", s.InUse, s.Free)
		}
		if diff := cmp.Diff([]uint16{1, 39999, 40005, 65535}, s.Ports); diff != "" {
			t.Errorf("Ports (-want +got):\n%s", diff)
		}
	})
}

func TestSetRange(t *testing.T) {
	t.Run("held ports outside the new range stay held", func(t *testing.T) {
		p := newTestPool(t, Range{40000, 40009}, Sequential)
		allocN(t, p, 5) // 40000-40004; cursor 40005
		if err := p.SetRange(Range{50000, 50004}); err != nil {
			t.Fatal(err)
		}
		s := p.Snapshot()
		if s.Cursor != 50000 || s.Free != 5 || s.InUse != 5 {
			t.Fatalf("after SetRange: Cursor %d Free %d InUse %d; want 50000, 5, 5", s.Cursor, s.Free, s.InUse)
		}
		for port := uint16(40000); port <= 40004; port++ {
			if !p.Held(port) {
				t.Errorf("Held(%d) = false after SetRange", port)
			}
		}
		runSteps(t, p, []step{alloc(50000)})
		mustRelease(t, p, 40002) // releasable, and the new range's Free does not change
		if got := p.Snapshot().Free; got != 4 {
			t.Errorf("Free = %d after releasing a port outside the range, want 4", got)
		}
		// Back to the old range: 40000, 40001, 40003, 40004 still held.
		if err := p.SetRange(Range{40000, 40009}); err != nil {
			t.Fatal(err)
		}
		s = p.Snapshot()
		if s.Cursor != 40000 || s.Free != 6 || s.InUse != 5 {
			t.Fatalf("back in the old range: Cursor %d Free %d InUse %d; want 40000, 6, 5", s.Cursor, s.Free, s.InUse)
		}
		runSteps(t, p, []step{alloc(40002), alloc(40005)})
		mustRelease(t, p, 50000)
		if got := p.Snapshot().Free; got != 4 {
			t.Errorf("Free = %d, want 4", got)
		}
	})
	t.Run("cursor inside the new range stays", func(t *testing.T) {
		p := newTestPool(t, Range{40000, 40009}, Sequential)
		allocN(t, p, 5) // cursor 40005
		if err := p.SetRange(Range{40003, 40007}); err != nil {
			t.Fatal(err)
		}
		s := p.Snapshot()
		if s.Cursor != 40005 || s.Free != 3 {
			t.Fatalf("Cursor %d Free %d; want 40005, 3", s.Cursor, s.Free)
		}
		runSteps(t, p, []step{alloc(40005), alloc(40006), alloc(40007),
			exhausted(ExhaustedError{Protocol: TCP, Range: Range{40003, 40007}, InUse: 8})})
	})
	t.Run("cursor below the new range", func(t *testing.T) {
		p := newTestPool(t, Range{40000, 40009}, Sequential)
		allocN(t, p, 2)
		if err := p.SetRange(Range{40005, 40009}); err != nil {
			t.Fatal(err)
		}
		runSteps(t, p, []step{alloc(40005)})
	})
	t.Run("excluded count follows the range", func(t *testing.T) {
		p := newTestPool(t, Range{40000, 40004}, Sequential)
		if err := p.Exclude(Range{40003, 40007}); err != nil {
			t.Fatal(err)
		}
		if err := p.SetRange(Range{40004, 40008}); err != nil {
			t.Fatal(err)
		}
		runSteps(t, p, []step{alloc(40008),
			exhausted(ExhaustedError{Protocol: TCP, Range: Range{40004, 40008}, InUse: 1, Excluded: 4})})
	})
	t.Run("invalid range changes nothing", func(t *testing.T) {
		p := newTestPool(t, Range{40000, 40004}, Sequential)
		allocN(t, p, 1)
		before := p.Snapshot()
		err := p.SetRange(Range{5, 1})
		if got, want := errString(err), "portalloc: set tcp range 5-1: first port 5 is greater than last port 1"; got != want {
			t.Errorf("SetRange(5-1) = %q, want %q", got, want)
		}
		if diff := cmp.Diff(before, p.Snapshot()); diff != "" {
			t.Errorf("pool changed (-before +after):\n%s", diff)
		}
	})
}

func TestSnapshot(t *testing.T) {
	p := newTestPool(t, Range{40000, 40009}, Sequential)
	for _, r := range []Range{{40005, 40006}, {40008, 40008}, {30000, 30000}, {40007, 40007}, {40004, 40004}} {
		if err := p.Exclude(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Unexclude(Range{40004, 40004}); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, p, 40006, 20000)
	runSteps(t, p, []step{alloc(40000), alloc(40001), alloc(40002), release(40001)})
	want := Snapshot{
		Protocol: TCP,
		Range:    Range{40000, 40009},
		Policy:   Sequential,
		Cursor:   40003,
		InUse:    4,
		Ports:    []uint16{20000, 40000, 40002, 40006},
		Free:     4, // 40001, 40003, 40004, 40009
		Excluded: []Range{{30000, 30000}, {40005, 40008}},
		Stats:    Stats{Allocations: 3, Reservations: 2, Releases: 1},
	}
	if diff := cmp.Diff(want, p.Snapshot()); diff != "" {
		t.Errorf("Snapshot (-want +got):\n%s", diff)
	}

	// After the last port of the range the cursor is reported as First,
	// the port tried next.
	q := newTestPool(t, Range{40000, 40001}, Sequential)
	allocN(t, q, 2)
	if got := q.Snapshot().Cursor; got != 40000 {
		t.Errorf("Cursor after allocating the last port = %d, want 40000", got)
	}
	empty := newTestPool(t, Range{1, 2}, Random).Snapshot()
	wantEmpty := Snapshot{Protocol: TCP, Range: Range{1, 2}, Policy: Random, Cursor: 1, Ports: []uint16{}, Free: 2}
	if diff := cmp.Diff(wantEmpty, empty); diff != "" {
		t.Errorf("empty Snapshot (-want +got):\n%s", diff)
	}
}

func TestNewPoolErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proto Protocol
		cfg   PoolConfig
		want  string
	}{
		{"bad range", TCP, PoolConfig{Range: Range{0, 10}}, "portalloc: tcp pool: PoolConfig.Range 0-10: first port is 0; port 0 is never allocated, so the range must start at 1 or above"},
		{"reversed range", UDP, PoolConfig{Range: Range{10, 1}}, "portalloc: udp pool: PoolConfig.Range 10-1: first port 10 is greater than last port 1"},
		{"bad policy", SCTP, PoolConfig{Policy: 7}, "portalloc: sctp pool: PoolConfig.Policy 7 is unknown; want sequential, random or hash"},
		{"bad icmp range", ICMP, PoolConfig{Range: Range{5, 4}}, "portalloc: icmp pool: PoolConfig.Range 5-4: first port 5 is greater than last port 4"},
		{"bad protocol", 4, PoolConfig{}, "portalloc: unknown protocol 4; want tcp, udp, sctp or icmp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPool(tc.proto, tc.cfg)
			if got := errString(err); got != tc.want || p != nil {
				t.Errorf("NewPool = %v, %q; want nil, %q", p, got, tc.want)
			}
		})
	}
	p := newTestPool(t, Range{1, 2}, Sequential)
	if got, want := errString(p.SetPolicy(9)), "portalloc: set tcp policy: unknown policy 9; want sequential, random or hash"; got != want {
		t.Errorf("SetPolicy(9) = %q, want %q", got, want)
	}
}

func TestAllocator(t *testing.T) {
	a, err := New(Config{
		UDP:  PoolConfig{Range: Linux, Policy: Random},
		SCTP: PoolConfig{Range: BSD},
		ICMP: PoolConfig{Range: Range{1, 3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Pools are independent name spaces.
	tcp, udp := a.Pool(TCP), a.Pool(UDP)
	if err := tcp.Reserve(50000); err != nil {
		t.Fatal(err)
	}
	if err := udp.Reserve(50000); err != nil {
		t.Errorf("UDP Reserve(50000) while TCP holds it: %v", err)
	}
	if a.Pool(9) != nil {
		t.Errorf("Pool(9) is not nil")
	}
	var got []string
	for _, s := range a.Snapshots() {
		got = append(got, s.Protocol.String()+" "+s.Range.String()+" "+s.Policy.String())
	}
	want := []string{"tcp 49152-65535 sequential", "udp 32768-60999 random", "sctp 1024-4999 sequential", "icmp 1-3 sequential"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Snapshots (-want +got):\n%s", diff)
	}
	_, err = New(Config{UDP: PoolConfig{Range: Range{9, 1}}})
	if err == nil || !strings.HasPrefix(err.Error(), "Config.UDP: portalloc: udp pool: PoolConfig.Range 9-1") {
		t.Errorf("New with a bad UDP range = %v", err)
	}
	_, err = New(Config{ICMP: PoolConfig{Range: Range{0, 1}}})
	if err == nil || !strings.HasPrefix(err.Error(), "Config.ICMP: portalloc: icmp pool: PoolConfig.Range 0-1") {
		t.Errorf("New with a bad ICMP range = %v", err)
	}
	// ICMP identifiers follow the same rules: sequential, wrapping, and
	// independent of the port pools.
	icmp := a.Pool(ICMP)
	var ids []uint16
	for range 3 {
		id, err := icmp.Allocate(Request{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := icmp.Release(2); err != nil {
		t.Fatal(err)
	}
	id, err := icmp.Allocate(Request{})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, id)
	if diff := cmp.Diff([]uint16{1, 2, 3, 2}, ids); diff != "" {
		t.Errorf("ICMP identifiers (-want +got):\n%s", diff)
	}
}

// TestRandomStart checks that RandomStart puts the cursor somewhere in the
// range and that allocation is then sequential from there.
func TestRandomStart(t *testing.T) {
	p, err := NewPool(TCP, PoolConfig{Range: Range{40000, 40999}, RandomStart: true, Rand: rand.NewPCG(7, 8)})
	if err != nil {
		t.Fatal(err)
	}
	c := p.Snapshot().Cursor
	if c < 40000 || c > 40999 {
		t.Fatalf("Cursor %d outside the range", c)
	}
	runSteps(t, p, []step{alloc(c)})
	if c < 40999 {
		runSteps(t, p, []step{alloc(c + 1)})
	}
}

// TestExhaustedErrorReuse checks that repeated identical failures share one
// error, and that an error once returned never changes.
func TestExhaustedErrorReuse(t *testing.T) {
	r := Range{40000, 40001}
	p := newTestPool(t, r, Sequential)
	allocN(t, p, 2)
	_, err1 := p.Allocate(Request{})
	_, err2 := p.Allocate(Request{})
	if err1 == nil || err1 != err2 {
		t.Fatalf("identical failures returned %p and %p, want one error", err1, err2)
	}
	mustReserve(t, p, 1)
	_, err3 := p.Allocate(Request{})
	if err3 == err1 {
		t.Fatalf("a failure with a different InUse returned the previous error")
	}
	want := &ExhaustedError{Protocol: TCP, Range: r, InUse: 2}
	if diff := cmp.Diff(want, err1, equateAddrs); diff != "" {
		t.Errorf("first error changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&ExhaustedError{Protocol: TCP, Range: r, InUse: 3}, err3, equateAddrs); diff != "" {
		t.Errorf("third error (-want +got):\n%s", diff)
	}
	if got := p.Stats().Exhausted; got != 3 {
		t.Errorf("Stats.Exhausted = %d, want 3", got)
	}
}

// TestRetryNotCounted: an exhaustion the caller will retry (Request.Retry)
// returns the same error but is not counted; a plain one is.
func TestRetryNotCounted(t *testing.T) {
	for _, pol := range []Policy{Sequential, Random, Hash} {
		p := newTestPool(t, Range{40000, 40000}, pol)
		if _, err := p.Allocate(Request{}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Allocate(Request{Retry: true}); !errors.Is(err, ErrExhausted) {
			t.Fatalf("%v: full pool with Retry: %v, want ErrExhausted", pol, err)
		}
		if got := p.Stats().Exhausted; got != 0 {
			t.Errorf("%v: Exhausted = %d after a Retry failure, want 0", pol, got)
		}
		if _, err := p.Allocate(Request{}); !errors.Is(err, ErrExhausted) {
			t.Fatalf("%v: full pool: %v, want ErrExhausted", pol, err)
		}
		if got := p.Stats().Exhausted; got != 1 {
			t.Errorf("%v: Exhausted = %d after a plain failure, want 1", pol, got)
		}
		// Every free port vetoed: the same rule.
		p.Release(40000)
		vetoAll := func(uint16) bool { return true }
		p.Allocate(Request{Veto: vetoAll, Retry: true})
		p.Allocate(Request{Veto: vetoAll})
		if got := p.Stats().Exhausted; got != 2 {
			t.Errorf("%v: Exhausted = %d after vetoed Retry and plain failures, want 2", pol, got)
		}
	}
}
