package portalloc

import (
	"math/rand/v2"
	"testing"
)

// TestRandomUniform checks that the Random policy is uniform over the free
// ports even when half the range is one contiguous busy block, the layout
// where random-start-then-scan (RFC 6056 Algorithm 1 as most stacks write
// it) hands the port just after the block about half of all allocations.
func TestRandomUniform(t *testing.T) {
	const (
		first = 40000
		size  = 64
		busy  = size / 2 // 40000-40031 held
		draws = 320000
	)
	p, err := NewPool(TCP, PoolConfig{Range: Range{first, first + size - 1}, Policy: Random, Rand: rand.NewPCG(11, 12)})
	if err != nil {
		t.Fatal(err)
	}
	for port := uint16(first); port < first+busy; port++ {
		mustReserve(t, p, port)
	}
	var counts [size]int
	for range draws {
		port, err := p.Allocate(Request{})
		if err != nil {
			t.Fatal(err)
		}
		if port < first+busy || port >= first+size {
			t.Fatalf("Allocate = %d, not a free port of the range", port)
		}
		counts[port-first]++
		mustRelease(t, p, port)
	}
	const free = size - busy
	mean := float64(draws) / free
	chi2 := 0.0
	for _, c := range counts[busy:] {
		d := float64(c) - mean
		chi2 += d * d / mean
	}
	afterBlock := float64(counts[busy]) / mean
	t.Logf("portalloc Random: port after the busy block drawn %.3fx the mean; chi-square %.1f with %d degrees of freedom", afterBlock, chi2, free-1)
	if !(afterBlock <= 1.5) {
		t.Errorf("port after the busy block drawn %.3fx the mean, want <= 1.5x", afterBlock)
	}
	// With 31 degrees of freedom the statistic has mean 31 and standard
	// deviation about 7.9; 70 has a p-value of about 1e-4.
	if !(chi2 <= 70) {
		t.Errorf("chi-square = %.1f over %d free ports, want <= 70 (uniform)", chi2, free)
	}
	// Far below the mean would mean the draws are not independent (a
	// round robin gives 0); 5 has a p-value of about 1e-7.
	if chi2 < 5 {
		t.Errorf("chi-square = %.1f over %d free ports: too regular to be random", chi2, free)
	}
	for i, c := range counts[:busy] {
		if c != 0 {
			t.Errorf("busy port %d drawn %d times", first+i, c)
		}
	}

	// For comparison only: random start then linear scan, on the same
	// layout, as most stacks (gVisor's included) implement Algorithm 1.
	r := rand.New(rand.NewPCG(11, 12))
	var scan [size]int
	for range draws {
		q := r.IntN(size)
		for q < busy {
			q = (q + 1) % size
		}
		scan[q]++
	}
	scanChi2 := 0.0
	for _, c := range scan[busy:] {
		d := float64(c) - mean
		scanChi2 += d * d / mean
	}
	t.Logf("random start + scan:  port after the busy block drawn %.3fx the mean; chi-square %.0f", float64(scan[busy])/mean, scanChi2)
}

// TestRandomVeto checks that a vetoed port is never handed out by the
// Random policy, that the other ports still are, and that a veto of every
// free port reports exhaustion with the number of free ports refused.
func TestRandomVeto(t *testing.T) {
	r := Range{40000, 40007}
	p := newTestPool(t, r, Random)
	veto := vetoSet(40001, 40002, 40003, 40004, 40005, 40006)
	seen := map[uint16]int{}
	for range 1000 {
		port, err := p.Allocate(Request{Veto: veto})
		if err != nil {
			t.Fatal(err)
		}
		seen[port]++
		mustRelease(t, p, port)
	}
	if len(seen) != 2 || seen[40000] == 0 || seen[40007] == 0 {
		t.Errorf("ports handed out with a veto: %v; want only 40000 and 40007", seen)
	}
	mustReserve(t, p, 40000)
	runSteps(t, p, []step{exhaustedVeto(vetoAll, ExhaustedError{Protocol: TCP, Range: r, InUse: 1, Vetoed: 7})})
	if s := p.Stats(); s.Exhausted != 1 || s.Vetoes < 7 {
		t.Errorf("Stats = %+v; want Exhausted 1 and Vetoes >= 7", s)
	}
}
