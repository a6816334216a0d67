package portalloc

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestConcurrentNoDoubleHold runs many goroutines that allocate, reserve
// and release on a small range. Each port has an owner slot that a
// goroutine claims with a compare-and-swap as soon as the pool hands it the
// port, and clears just before releasing it: a failed claim means the pool
// handed out a port that someone else held.
func TestConcurrentNoDoubleHold(t *testing.T) {
	const (
		first      = 40000
		size       = 16
		goroutines = 16
		iterations = 3000
		maxHeld    = 3 // per goroutine; 16*3 > 16 ports, so the pool runs dry
	)
	for _, pol := range []Policy{Sequential, Random, Hash} {
		t.Run(pol.String(), func(t *testing.T) {
			p, err := NewPool(TCP, PoolConfig{Range: Range{first, first + size - 1}, Policy: pol})
			if err != nil {
				t.Fatal(err)
			}
			var owner [size]atomic.Int32
			var exhausted atomic.Int64
			var wg sync.WaitGroup
			for g := 1; g <= goroutines; g++ {
				wg.Add(1)
				go func(id int32) {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(id), 99))
					var held []uint16
					claim := func(port uint16) bool {
						if port < first || port >= first+size {
							t.Errorf("goroutine %d got port %d outside the range", id, port)
							return false
						}
						if !owner[port-first].CompareAndSwap(0, id) {
							t.Errorf("goroutine %d got port %d, held by goroutine %d", id, port, owner[port-first].Load())
							return false
						}
						held = append(held, port)
						return true
					}
					for i := 0; i < iterations && !t.Failed(); i++ {
						switch {
						case len(held) > 0 && (len(held) == maxHeld || r.IntN(2) == 0):
							k := r.IntN(len(held))
							port := held[k]
							held[k] = held[len(held)-1]
							held = held[:len(held)-1]
							owner[port-first].Store(0)
							if err := p.Release(port); err != nil {
								t.Errorf("Release(%d): %v", port, err)
							}
						case r.IntN(4) == 0:
							port := uint16(first + r.IntN(size))
							err := p.Reserve(port)
							switch {
							case err == nil:
								claim(port)
							case !errors.Is(err, syscall.EADDRINUSE):
								t.Errorf("Reserve(%d): %v", port, err)
							}
						default:
							req := Request{}
							if pol == Hash {
								req.Remote = testDest(r.IntN(4))
							}
							port, err := p.Allocate(req)
							switch {
							case err == nil:
								claim(port)
							case errors.Is(err, ErrExhausted):
								exhausted.Add(1)
							default:
								t.Errorf("Allocate: %v", err)
							}
						}
					}
					for _, port := range held {
						owner[port-first].Store(0)
						if err := p.Release(port); err != nil {
							t.Errorf("Release(%d): %v", port, err)
						}
					}
				}(int32(g))
			}
			wg.Wait()
			s := p.Snapshot()
			if s.InUse != 0 || s.Free != size || len(s.Ports) != 0 {
				t.Errorf("after the run: InUse %d, Free %d, Ports %v; want 0, %d, none", s.InUse, s.Free, s.Ports, size)
			}
			if s.Stats.Allocations+s.Stats.Reservations != s.Stats.Releases {
				t.Errorf("Allocations %d + Reservations %d != Releases %d", s.Stats.Allocations, s.Stats.Reservations, s.Stats.Releases)
			}
			if s.Stats.Exhausted != uint64(exhausted.Load()) {
				t.Errorf("Stats.Exhausted = %d, but callers saw %d", s.Stats.Exhausted, exhausted.Load())
			}
			t.Logf("%+v", s.Stats)
		})
	}
}
