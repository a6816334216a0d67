package portalloc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
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

func TestSequentialOrderWrapReuse(t *testing.T) {
	p := newTestPool(t, Range{40000, 40004}, Sequential)
	got := allocN(t, p, 3)
	if diff := cmp.Diff([]uint16{40000, 40001, 40002}, got); diff != "" {
		t.Fatalf("first ports (-want +got):\n%s", diff)
	}
	// Releasing 40000 must not pull the cursor back: next is 40003.
	if err := p.Release(40000); err != nil {
		t.Fatal(err)
	}
	got = allocN(t, p, 3)
	if diff := cmp.Diff([]uint16{40003, 40004, 40000}, got); diff != "" {
		t.Fatalf("after release (-want +got):\n%s", diff)
	}
	if s := p.Stats(); s.Wraps != 1 {
		t.Errorf("Wraps = %d, want 1", s.Wraps)
	}
	_, err := p.Allocate(Request{})
	if !errors.Is(err, ErrExhausted) || !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("Allocate on full pool: %v; want ErrExhausted and EADDRNOTAVAIL", err)
	}
	want := "portalloc: tcp ephemeral ports exhausted: range 40000-40004 (5 ports), 5 in use, 0 excluded"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if err := p.Release(40002); err != nil {
		t.Fatal(err)
	}
	if got := allocN(t, p, 1); got[0] != 40002 {
		t.Fatalf("after exhaustion and release got %d, want 40002", got[0])
	}
}

func TestSelectAndNextClear(t *testing.T) {
	var b bitmap
	b.init()
	r := rand.New(rand.NewPCG(3, 4))
	ref := make([]bool, numPorts)
	ref[0] = true
	for i := 0; i < 200000; i++ {
		port := r.IntN(numPorts-1) + 1
		if r.IntN(3) == 0 {
			b.clear(port)
			ref[port] = false
		} else {
			b.set(port)
			ref[port] = true
		}
		if i%997 == 0 {
			from := r.IntN(numPorts)
			want := -1
			for q := from; q < numPorts; q++ {
				if !ref[q] {
					want = q
					break
				}
			}
			if got := b.nextClear(from); got != want {
				t.Fatalf("nextClear(%d) = %d, want %d", from, got, want)
			}
			n := 0
			for q := 0; q < from; q++ {
				if !ref[q] {
					n++
				}
			}
			if got := b.clearBefore(from); got != n {
				t.Fatalf("clearBefore(%d) = %d, want %d", from, got, n)
			}
			if got := b.selectClear(n); got != want {
				t.Fatalf("selectClear(%d) = %d, want %d", n, got, want)
			}
		}
	}
	fmt.Sprint()
	_ = slices.Contains[[]int]
}
