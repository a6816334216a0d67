package portalloc

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testLocal = netip.MustParseAddr("198.18.0.1")

// testDest returns a distinct destination for each i.
func testDest(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("198.19.0.2"), uint16(1000+i))
}

func hashReq(i int) Request { return Request{Local: testLocal, Remote: testDest(i)} }

func newHashPool(t testing.TB, r Range, seed uint64) *Pool {
	t.Helper()
	p, err := NewPool(TCP, PoolConfig{Range: r, Policy: Hash, Rand: rand.NewPCG(seed, seed), RekeyInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// gap returns how far b is after a, going up through the range and
// wrapping.
func gap(r Range, a, b uint16) int {
	n := r.Size()
	return ((int(b)-int(a))%n + n) % n
}

// circDist is the distance between a and b on the circle of the range.
func circDist(r Range, a, b uint16) int {
	g := gap(r, a, b)
	return min(g, r.Size()-g)
}

func allocReq(t testing.TB, p *Pool, req Request) uint16 {
	t.Helper()
	port, err := p.Allocate(req)
	if err != nil {
		t.Fatalf("Allocate(%v): %v", req.Remote, err)
	}
	return port
}

func TestHashAdvancesPerDestination(t *testing.T) {
	r := Range{40000, 40999}
	for _, tc := range []struct {
		name string
		hold bool
	}{
		{"ports held", true},
		{"ports released at once", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newHashPool(t, r, 1)
			prev := allocReq(t, p, hashReq(0))
			total := 0
			for i := 1; i < 100; i++ {
				if !tc.hold {
					mustRelease(t, p, prev)
				}
				// Another destination in between must not disturb the
				// sequence (its ports are released at once).
				other := allocReq(t, p, hashReq(1))
				mustRelease(t, p, other)
				port := allocReq(t, p, hashReq(0))
				if g := gap(r, prev, port); g < 1 || g > 8 {
					t.Fatalf("allocation %d: %d after %d, a gap of %d; want 1 to 8", i, port, prev, g)
				}
				total += gap(r, prev, port)
				prev = port
			}
			// The increments are 1 + a uniform draw from 0..7: mean 4.5.
			if mean := float64(total) / 99; mean < 3.5 || mean > 5.5 {
				t.Errorf("mean gap %.2f, want about 4.5", mean)
			}
		})
	}
}

// TestHashContended checks that after skipping a busy block the next start
// is just past the port handed out, so a destination's ports keep
// advancing.
func TestHashContended(t *testing.T) {
	r := Range{40000, 40999}
	p := newHashPool(t, r, 2)
	a0 := allocReq(t, p, hashReq(0))
	mustRelease(t, p, a0)
	next := func(k int) uint16 { return uint16(int(r.First) + (int(a0)-int(r.First)+k)%r.Size()) }
	for k := 1; k <= 20; k++ {
		mustReserve(t, p, next(k))
	}
	if got := allocReq(t, p, hashReq(0)); got != next(21) {
		t.Fatalf("after a busy block of 20: got %d, want %d", got, next(21))
	}
	if got := allocReq(t, p, hashReq(0)); got != next(22) {
		t.Fatalf("next: got %d, want %d", got, next(22))
	}
}

func TestHashDestinationsUnrelated(t *testing.T) {
	r := Range{40000, 40999}
	p := newHashPool(t, r, 3)
	firstPort := func(i int) uint16 {
		port := allocReq(t, p, hashReq(i))
		mustRelease(t, p, port)
		return port
	}
	a, b := firstPort(0), firstPort(1)
	if d := circDist(r, a, b); d <= 8 {
		t.Errorf("destinations 0 and 1 start at %d and %d, only %d apart", a, b, d)
	}
	// Over 200 destinations whose remote ports are consecutive the first
	// ports look like independent uniform draws: about 181 distinct
	// values among 1000, and few neighbours closer than 9 (expected 3.4).
	const n = 200
	distinct := map[uint16]bool{}
	close := 0
	prev := firstPort(1000)
	distinct[prev] = true
	for i := 1001; i < 1000+n; i++ {
		port := firstPort(i)
		distinct[port] = true
		if circDist(r, prev, port) <= 8 {
			close++
		}
		prev = port
	}
	if len(distinct) < 160 || close > 15 {
		t.Errorf("%d destinations: %d distinct first ports (want >= 160), %d consecutive pairs within 8 (want <= 15)", n, len(distinct), close)
	}
}

func TestHashReproducible(t *testing.T) {
	r := Range{40000, 40999}
	run := func(seed uint64) []uint16 {
		p := newHashPool(t, r, seed)
		var got []uint16
		for i := range 50 {
			got = append(got, allocReq(t, p, hashReq(i%5)))
		}
		return got
	}
	if diff := cmp.Diff(run(4), run(4)); diff != "" {
		t.Errorf("same seed, different ports (-first +second):\n%s", diff)
	}
	if cmp.Equal(run(4), run(5)) {
		t.Errorf("different seeds gave the same ports")
	}
}

func TestHashRekey(t *testing.T) {
	r := Range{40000, 40999}
	p := newHashPool(t, r, 6)
	const n = 32
	firstPorts := func() []uint16 {
		var out []uint16
		for i := range n {
			port := allocReq(t, p, hashReq(i))
			mustRelease(t, p, port)
			out = append(out, port)
		}
		return out
	}
	before := firstPorts()
	if got := p.Stats().Rekeys; got != 0 {
		t.Fatalf("Rekeys = %d before any Rekey, want 0 (the first key is not a re-key)", got)
	}
	p.Rekey()
	after := firstPorts()
	if got := p.Stats().Rekeys; got != 1 {
		t.Fatalf("Rekeys = %d after Rekey, want 1", got)
	}
	changed := 0
	for i := range before {
		if circDist(r, before[i], after[i]) > 8 {
			changed++
		}
	}
	if changed < n-4 {
		t.Errorf("after Rekey only %d of %d destinations moved by more than 8 ports", changed, n)
	}
}

func TestHashPeriodicRekey(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		// steps advance the fake clock, then allocate; wantRekeys is
		// Stats.Rekeys after each allocation.
		advance    []time.Duration
		wantRekeys []uint64
	}{
		{
			name:       "every 10s",
			interval:   10 * time.Second,
			advance:    []time.Duration{0, 9 * time.Second, time.Second, 5 * time.Second, 100 * time.Second, 9 * time.Second, time.Second},
			wantRekeys: []uint64{0, 0, 1, 1, 2, 2, 3},
		},
		{
			name:       "default one minute",
			interval:   0,
			advance:    []time.Duration{0, 59 * time.Second, time.Second, time.Minute},
			wantRekeys: []uint64{0, 0, 1, 2},
		},
		{
			name:       "disabled",
			interval:   -1,
			advance:    []time.Duration{0, time.Hour, 1000 * time.Hour},
			wantRekeys: []uint64{0, 0, 0},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			p, err := NewPool(TCP, PoolConfig{
				Range: Range{40000, 40999}, Policy: Hash, Rand: rand.NewPCG(7, 7),
				RekeyInterval: tc.interval, Now: func() time.Time { return now },
			})
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, d := range tc.advance {
				now = now.Add(d)
				mustRelease(t, p, allocReq(t, p, hashReq(0)))
				got = append(got, p.Stats().Rekeys)
			}
			if diff := cmp.Diff(tc.wantRekeys, got); diff != "" {
				t.Errorf("Rekeys after each allocation (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHashRekeyRestartsInterval checks that an explicit Rekey restarts the
// periodic interval.
func TestHashRekeyRestartsInterval(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p, err := NewPool(TCP, PoolConfig{
		Range: Range{40000, 40999}, Policy: Hash, Rand: rand.NewPCG(7, 7),
		RekeyInterval: 10 * time.Second, Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	mustRelease(t, p, allocReq(t, p, hashReq(0))) // first key at 0s
	now = now.Add(8 * time.Second)
	p.Rekey() // next periodic re-key due at 18s
	now = now.Add(8 * time.Second)
	mustRelease(t, p, allocReq(t, p, hashReq(0)))
	if got := p.Stats().Rekeys; got != 1 {
		t.Errorf("Rekeys at 16s = %d, want 1 (only the explicit one)", got)
	}
	now = now.Add(2 * time.Second)
	mustRelease(t, p, allocReq(t, p, hashReq(0)))
	if got := p.Stats().Rekeys; got != 2 {
		t.Errorf("Rekeys at 18s = %d, want 2", got)
	}
}

func TestHashVetoAndExhaustion(t *testing.T) {
	r := Range{40000, 40003}
	p := newHashPool(t, r, 8)
	a := allocReq(t, p, hashReq(0))
	// Veto every other free port but one: the pool must find that one.
	var keep uint16
	for port := r.First; port <= r.Last; port++ {
		if port != a {
			keep = port
		}
	}
	got, err := p.Allocate(Request{Local: testLocal, Remote: testDest(0), Veto: func(port uint16) bool { return port != keep }})
	if err != nil || got != keep {
		t.Fatalf("Allocate with veto = %d, %v; want %d", got, err, keep)
	}
	runSteps(t, p, []step{exhaustedVeto(vetoAll, ExhaustedError{Protocol: TCP, Range: r, InUse: 2, Vetoed: 2})})
	allocN(t, p, 2)
	runSteps(t, p, []step{exhausted(ExhaustedError{Protocol: TCP, Range: r, InUse: 4})})
}

// TestHashIPv6AndMixed checks that IPv6 and mixed-family destinations are
// keyed too (they hash 34 bytes instead of 10) and advance like IPv4 ones,
// and that IPv4-mapped IPv6 addresses are the same key as plain IPv4.
func TestHashIPv6AndMixed(t *testing.T) {
	r := Range{40000, 40999}
	v6 := Request{Local: netip.MustParseAddr("fd00::1"), Remote: netip.MustParseAddrPort("[fd00::2]:443")}
	mixed := Request{Local: netip.MustParseAddr("198.18.0.1"), Remote: netip.MustParseAddrPort("[fd00::2]:443")}
	v4 := Request{Local: netip.MustParseAddr("198.18.0.1"), Remote: netip.MustParseAddrPort("198.19.0.2:443")}
	mapped := Request{Local: netip.MustParseAddr("::ffff:198.18.0.1"), Remote: netip.MustParseAddrPort("[::ffff:198.19.0.2]:443")}
	for _, tc := range []struct {
		name string
		req  Request
	}{{"ipv6", v6}, {"mixed", mixed}, {"ipv4", v4}, {"ipv4-mapped", mapped}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newHashPool(t, r, 9)
			prev := allocReq(t, p, tc.req)
			for i := 0; i < 50; i++ {
				port := allocReq(t, p, tc.req)
				if g := gap(r, prev, port); g < 1 || g > 8 {
					t.Fatalf("%d after %d: gap %d, want 1 to 8", port, prev, g)
				}
				prev = port
			}
		})
	}
	p := newHashPool(t, r, 9)
	a := allocReq(t, p, v4)
	b := allocReq(t, p, mapped)
	if g := gap(r, a, b); g < 1 || g > 8 {
		t.Errorf("IPv4 then IPv4-mapped: %d after %d, gap %d; want 1 to 8 (the same key)", b, a, g)
	}
	c := allocReq(t, p, v6)
	if circDist(r, b, c) <= 8 {
		t.Errorf("IPv4 and IPv6 destinations at %d and %d, only %d apart", b, c, circDist(r, b, c))
	}
}
