package portalloc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var (
	dstA = netip.MustParseAddrPort("198.18.0.1:80")
	dstB = netip.MustParseAddrPort("198.18.0.2:80")
	dstC = netip.MustParseAddrPort("198.18.0.1:81") // A's address, another port
)

func newDestPool(t testing.TB, r Range) *Pool {
	t.Helper()
	p, err := NewPool(TCP, PoolConfig{Range: r, Sharing: PerDestination, Rand: rand.NewPCG(1, 2)})
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	return p
}

// towardOp is one step of a per-destination scenario: allocate toward dst
// (the zero AddrPort: for every destination), or release port toward dst.
type towardOp struct {
	release bool
	dst     netip.AddrPort
	port    uint16 // the port to release, or the port Allocate must give
	wantErr error  // matched with errors.Is
}

func allocTo(dst netip.AddrPort, want uint16) towardOp { return towardOp{dst: dst, port: want} }
func allocToFails(dst netip.AddrPort, err error) towardOp {
	return towardOp{dst: dst, wantErr: err}
}
func releaseTo(dst netip.AddrPort, port uint16) towardOp {
	return towardOp{release: true, dst: dst, port: port}
}

func TestPerDestinationSequence(t *testing.T) {
	r := Range{40000, 40003}
	for _, tc := range []struct {
		name    string
		reserve []uint16
		ops     []towardOp
	}{
		{"one port per destination at a time, cursor shared",
			nil, []towardOp{
				allocTo(dstA, 40000), allocTo(dstB, 40001), allocTo(dstA, 40002), allocTo(dstC, 40003),
				// Wrap: 40000 is held toward A only.
				allocTo(dstB, 40000), allocTo(dstA, 40001), allocTo(dstA, 40003),
				allocToFails(dstA, ErrExhausted),
				allocTo(dstC, 40000), releaseTo(dstA, 40001), allocTo(dstA, 40001),
			}},
		{"reserved ports are skipped for every destination",
			[]uint16{40001}, []towardOp{
				allocTo(dstA, 40000), allocTo(dstB, 40002), allocTo(dstB, 40003), allocTo(dstB, 40000),
				allocToFails(dstB, syscall.EADDRNOTAVAIL), allocTo(dstA, 40002),
			}},
		{"allocation for every destination skips ports connections hold",
			nil, []towardOp{
				allocTo(dstA, 40000), allocTo(netip.AddrPort{}, 40001), allocTo(dstB, 40002),
				allocTo(netip.AddrPort{}, 40003), allocToFails(netip.AddrPort{}, ErrExhausted),
				allocTo(dstB, 40000), releaseTo(dstA, 40000), allocToFails(netip.AddrPort{}, ErrExhausted),
				releaseTo(dstB, 40000), allocTo(netip.AddrPort{}, 40000),
			}},
		{"release toward the wrong destination",
			nil, []towardOp{
				allocTo(dstA, 40000),
				{release: true, dst: dstB, port: 40000, wantErr: ErrNotHeld},
				{release: true, dst: dstC, port: 40000, wantErr: ErrNotHeld},
				{release: true, port: 40000, wantErr: ErrNotHeld}, // Release, not ReleaseTo
				releaseTo(dstA, 40000),
				{release: true, dst: dstA, port: 40000, wantErr: ErrNotHeld},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newDestPool(t, r)
			mustReserve(t, p, tc.reserve...)
			for i, op := range tc.ops {
				if op.release {
					err := p.ReleaseTo(op.port, op.dst)
					if !errors.Is(err, op.wantErr) || (op.wantErr == nil && err != nil) {
						t.Fatalf("op %d: ReleaseTo(%d, %v) = %v; want %v", i, op.port, op.dst, err, op.wantErr)
					}
					continue
				}
				got, err := p.Allocate(Request{Remote: op.dst})
				if op.wantErr != nil {
					if !errors.Is(err, op.wantErr) {
						t.Fatalf("op %d: Allocate toward %v = %d, %v; want %v", i, op.dst, got, err, op.wantErr)
					}
					continue
				}
				if err != nil || got != op.port {
					t.Fatalf("op %d: Allocate toward %v = %d, %v; want %d", i, op.dst, got, err, op.port)
				}
			}
		})
	}
}

func TestPerDestinationExhaustedNamesDestination(t *testing.T) {
	p := newDestPool(t, Range{40000, 40001})
	mustReserve(t, p, 40001)
	if _, err := p.Allocate(Request{Remote: dstA}); err != nil {
		t.Fatal(err)
	}
	_, err := p.Allocate(Request{Remote: netip.MustParseAddrPort("[::ffff:198.18.0.1]:80")})
	var ee *ExhaustedError
	if !errors.As(err, &ee) {
		t.Fatalf("Allocate toward A again = %v; want an *ExhaustedError", err)
	}
	want := &ExhaustedError{Protocol: TCP, Range: Range{40000, 40001}, InUse: 2, Destination: dstA, HeldToward: 1}
	if diff := cmp.Diff(want, ee, equateAddrs); diff != "" {
		t.Errorf("ExhaustedError (-want +got):\n%s", diff)
	}
	const msg = "portalloc: tcp ephemeral ports exhausted toward 198.18.0.1:80: range 40000-40001 (2 ports), 1 held toward it, 2 in use, 0 excluded"
	if got := err.Error(); got != msg {
		t.Errorf("message:\n got %s\nwant %s", got, msg)
	}
	if !errors.Is(err, ErrExhausted) || !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("%v does not match ErrExhausted and EADDRNOTAVAIL", err)
	}
	if s := p.Stats(); s.Exhausted != 1 {
		t.Errorf("Stats.Exhausted = %d; want 1", s.Exhausted)
	}
	err = p.ReleaseTo(40000, dstB)
	if !errors.Is(err, ErrNotHeld) || !strings.Contains(err.Error(), "port 40000 toward 198.18.0.2:80") {
		t.Errorf("ReleaseTo toward B = %v; want ErrNotHeld naming port and destination", err)
	}
}

func TestPerDestinationExclusiveHolds(t *testing.T) {
	p := newDestPool(t, Range{40000, 40009})
	port, err := p.Allocate(Request{Remote: dstA})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Reserve(port); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Reserve(%d) held by a connection = %v; want EADDRINUSE", port, err)
	}
	if err := p.Release(port); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Release(%d) held by a connection = %v; want ErrNotHeld", port, err)
	}
	if !p.Held(port) || !p.HeldTo(port, dstA) || p.HeldTo(port, dstB) {
		t.Errorf("Held/HeldTo(%d) = %v, %v, %v; want true, true, false", port, p.Held(port), p.HeldTo(port, dstA), p.HeldTo(port, dstB))
	}
	// An excluded port held by a connection stays held; it comes back
	// excluded, not free.
	if err := p.Exclude(Range{port, port + 1}); err != nil {
		t.Fatal(err)
	}
	s := p.Snapshot()
	if s.InUse != 1 || s.Free != 8 || s.FreeToNew != 8 || s.Connections != 1 {
		t.Errorf("after Exclude: InUse %d Free %d FreeToNew %d Connections %d; want 1 8 8 1", s.InUse, s.Free, s.FreeToNew, s.Connections)
	}
	if err := p.ReleaseTo(port, dstA); err != nil {
		t.Fatal(err)
	}
	if p.Held(port) {
		t.Errorf("Held(%d) after release of an excluded port", port)
	}
	if err := p.Unexclude(Range{port, port + 1}); err != nil {
		t.Fatal(err)
	}
	want := Snapshot{Protocol: TCP, Range: Range{40000, 40009}, Cursor: 40001, Free: 10, Ports: []uint16{},
		PerDestination: true, FreeToNew: 10,
		Stats: Stats{Allocations: 1, Releases: 1}}
	if diff := cmp.Diff(want, p.Snapshot(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Snapshot (-want +got):\n%s", diff)
	}
}

func TestPerDestinationSnapshot(t *testing.T) {
	p := newDestPool(t, Range{40000, 40009})
	for _, dst := range []netip.AddrPort{dstA, dstB, dstC} {
		for range 3 {
			if _, err := p.Allocate(Request{Remote: dst}); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustReserve(t, p, 40009)
	// A holds 40000-40002, B 40003-40005, C 40006-40008.
	want := Snapshot{Protocol: TCP, Range: Range{40000, 40009}, Cursor: 40009,
		InUse: 10, Ports: []uint16{40000, 40001, 40002, 40003, 40004, 40005, 40006, 40007, 40008, 40009},
		Free: 0, PerDestination: true, Connections: 9, Destinations: 3, Shared: 9, FreeToNew: 9,
		Stats: Stats{Allocations: 9, Reservations: 1}}
	if diff := cmp.Diff(want, p.Snapshot(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Snapshot (-want +got):\n%s", diff)
	}
	// Each destination can still take the six ports it does not hold.
	for _, dst := range []netip.AddrPort{dstA, dstB, dstC} {
		for i := range 6 {
			if _, err := p.Allocate(Request{Remote: dst}); err != nil {
				t.Fatalf("Allocate #%d toward %v: %v", i, dst, err)
			}
		}
		if _, err := p.Allocate(Request{Remote: dst}); !errors.Is(err, ErrExhausted) {
			t.Fatalf("Allocate toward %v with all 9 held = %v; want exhaustion", dst, err)
		}
	}
	if c, d := p.Connections(); c != 27 || d != 3 {
		t.Errorf("Connections() = %d, %d; want 27, 3", c, d)
	}
}

func TestPerDestinationOffIgnoresRemote(t *testing.T) {
	p := newTestPool(t, Range{40000, 40001}, Sequential)
	got := []uint16{}
	for _, dst := range []netip.AddrPort{dstA, dstB} {
		port, err := p.Allocate(Request{Remote: dst})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, port)
	}
	if _, err := p.Allocate(Request{Remote: dstC}); !errors.Is(err, ErrExhausted) {
		t.Errorf("third Allocate on a 2-port pool without PerDestination = %v; want exhaustion", err)
	}
	if diff := cmp.Diff([]uint16{40000, 40001}, got); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	// ReleaseTo is Release there.
	if err := p.ReleaseTo(40000, dstA); err != nil {
		t.Errorf("ReleaseTo without PerDestination: %v", err)
	}
}

// TestPerDestinationWholeRange fills the IANA range toward 8 destinations
// (16384 ports each) and checks that every port is handed out once per
// destination and that all of them come back.
func TestPerDestinationWholeRange(t *testing.T) {
	p := newDestPool(t, IANA)
	var dsts []netip.AddrPort
	for i := range 8 {
		dsts = append(dsts, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), 80))
	}
	seen := make(map[[2]int]bool)
	for i := range IANA.Size() * len(dsts) {
		d := i % len(dsts)
		port, err := p.Allocate(Request{Remote: dsts[d]})
		if err != nil {
			t.Fatalf("Allocate #%d: %v", i, err)
		}
		k := [2]int{int(port), d}
		if seen[k] {
			t.Fatalf("Allocate #%d: port %d handed out twice toward %v", i, port, dsts[d])
		}
		seen[k] = true
	}
	for _, dst := range dsts {
		if _, err := p.Allocate(Request{Remote: dst}); !errors.Is(err, ErrExhausted) {
			t.Fatalf("Allocate toward %v on a full range = %v; want exhaustion", dst, err)
		}
	}
	if s := p.Snapshot(); s.Connections != len(seen) || s.Destinations != 8 || s.InUse != IANA.Size() {
		t.Fatalf("Snapshot: %d connections, %d destinations, %d in use; want %d, 8, %d", s.Connections, s.Destinations, s.InUse, len(seen), IANA.Size())
	}
	for k := range seen {
		if err := p.ReleaseTo(uint16(k[0]), dsts[k[1]]); err != nil {
			t.Fatal(err)
		}
	}
	if s := p.Snapshot(); s.Connections != 0 || s.Destinations != 0 || s.InUse != 0 || s.Free != IANA.Size() || s.FreeToNew != IANA.Size() {
		t.Fatalf("after releasing all: %+v", s)
	}
}

// benchDests returns n destinations.
func benchDests(n int) []netip.AddrPort {
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 80)
	}
	return out
}

// BenchmarkPerDestAllocRelease times an allocation toward a destination
// and its release, with the pool already holding connections: conns
// spread over dests destinations through the IANA range, as the sequential
// cursor leaves them.
//
// The first sub-benchmark is the baseline: an empty exclusive pool,
// Allocate(Request{}) then Release.
//
// Besides ns/op, each reports cpu-ns/op: the benchmark thread's own CPU
// time per operation, which time-slicing on a loaded machine does not
// inflate.
func BenchmarkPerDestAllocRelease(b *testing.B) {
	b.Run("baseline-exclusive", func(b *testing.B) {
		p := newTestPool(b, IANA, Sequential)
		b.ReportAllocs()
		defer threadCPU(b)()
		for range b.N {
			port, err := p.Allocate(Request{})
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Release(port); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, c := range []struct{ conns, dests int }{
		{0, 32}, {16384, 32}, {131072, 32}, {250000, 32}, {520000, 32}, {16383 * 4, 4}, {10000, 100},
	} {
		b.Run(fmt.Sprintf("conns=%d/dests=%d", c.conns, c.dests), func(b *testing.B) {
			p := newDestPool(b, IANA)
			dsts := benchDests(c.dests)
			for i := range c.conns {
				if _, err := p.Allocate(Request{Remote: dsts[i%c.dests]}); err != nil {
					b.Fatalf("fill #%d: %v", i, err)
				}
			}
			reqs := make([]Request, c.dests)
			for i := range reqs {
				reqs[i] = Request{Remote: dsts[i]}
			}
			b.ReportAllocs()
			b.ResetTimer()
			defer threadCPU(b)()
			for i := range b.N {
				req := reqs[i%len(reqs)]
				port, err := p.Allocate(req)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.ReleaseTo(port, req.Remote); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// threadCPU locks the goroutine to its thread and returns a function that
// reports the thread's CPU time per operation as cpu-ns/op.
func threadCPU(b *testing.B) func() {
	runtime.LockOSThread()
	start := threadCPUTime()
	return func() {
		b.ReportMetric(float64((threadCPUTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		runtime.UnlockOSThread()
	}
}

// BenchmarkPerDestMemory reports the live heap per held connection of a
// per-destination pool holding conns connections to dests destinations.
func BenchmarkPerDestMemory(b *testing.B) {
	for _, c := range []struct{ conns, dests int }{{250000, 32}, {10000, 100}, {10000, 10000}} {
		b.Run(fmt.Sprintf("conns=%d/dests=%d", c.conns, c.dests), func(b *testing.B) {
			dsts := benchDests(c.dests)
			var perConn float64
			for range b.N {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				p := newDestPool(b, IANA)
				for i := range c.conns {
					if _, err := p.Allocate(Request{Remote: dsts[i%c.dests]}); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perConn = float64(after.HeapAlloc-before.HeapAlloc) / float64(c.conns)
				runtime.KeepAlive(p)
			}
			b.ReportMetric(perConn, "B/conn")
		})
	}
}

func TestSharingConfig(t *testing.T) {
	for _, tc := range []struct {
		sharing Sharing
		want    Sharing
		wantErr string
	}{
		{SharingDefault, Exclusive, ""},
		{Exclusive, Exclusive, ""},
		{PerDestination, PerDestination, ""},
		{Sharing(9), 0, "portalloc: tcp pool: PoolConfig.Sharing 9 is unknown; want exclusive or per-destination"},
	} {
		t.Run(tc.sharing.String(), func(t *testing.T) {
			p, err := NewPool(TCP, PoolConfig{Sharing: tc.sharing})
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("NewPool = %v; want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Sharing(); got != tc.want {
				t.Errorf("Sharing() = %v; want %v", got, tc.want)
			}
		})
	}
	for _, s := range []string{"exclusive", "Per-Destination"} {
		v, err := ParseSharing(s)
		if err != nil {
			t.Fatalf("ParseSharing(%q): %v", s, err)
		}
		b, _ := v.MarshalText()
		var back Sharing
		if err := back.UnmarshalText(b); err != nil || back != v {
			t.Errorf("round trip of %q: %v, %v", s, back, err)
		}
	}
	if _, err := ParseSharing("shared"); err == nil || !strings.Contains(err.Error(), `"shared"; want exclusive or per-destination`) {
		t.Errorf("ParseSharing(shared) = %v", err)
	}
}

// TestPerDestinationIdleDestinations: destinations whose connections have
// all gone stay for reuse up to a bound, then are dropped; a dropped or
// recycled destination starts afresh.
func TestPerDestinationIdleDestinations(t *testing.T) {
	p := newDestPool(t, Range{40000, 40003})
	dsts := benchDests(3 * idleKeep)
	// One connection each, released at once: every destination goes idle.
	for i, dst := range dsts {
		port, err := p.Allocate(Request{Remote: dst})
		if err != nil {
			t.Fatalf("Allocate #%d: %v", i, err)
		}
		if want := uint16(40000 + i%4); port != want {
			t.Fatalf("Allocate #%d toward %v = %d; want %d", i, dst, port, want)
		}
		if err := p.ReleaseTo(port, dst); err != nil {
			t.Fatal(err)
		}
	}
	mapped := 0
	for _, head := range p.pd.dests {
		for d := head; d != nil; d = d.next {
			mapped++
			if d.n != 0 || d.countable != 0 {
				t.Errorf("idle destination %v holds %d ports (%d countable)", d.dst, d.n, d.countable)
			}
		}
	}
	if mapped > idleKeep {
		t.Errorf("%d destinations kept; want at most %d", mapped, idleKeep)
	}
	if c, d := p.Connections(); c != 0 || d != 0 {
		t.Errorf("Connections() = %d, %d; want 0, 0", c, d)
	}
	// Fill every destination, dropped ones included, to the whole range.
	for _, dst := range []netip.AddrPort{dsts[0], dsts[len(dsts)-1]} {
		for i := range 4 {
			if _, err := p.Allocate(Request{Remote: dst}); err != nil {
				t.Fatalf("Allocate #%d toward %v: %v", i, dst, err)
			}
		}
		if _, err := p.Allocate(Request{Remote: dst}); !errors.Is(err, ErrExhausted) {
			t.Fatalf("fifth Allocate toward %v = %v; want exhaustion", dst, err)
		}
	}
	if c, d := p.Connections(); c != 8 || d != 2 {
		t.Errorf("Connections() = %d, %d; want 8, 2", c, d)
	}
}
