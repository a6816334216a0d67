package portalloc

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// Micro-benchmarks of the pieces of an allocation, for profiling. The
// comparison with gVisor is in bench/portallocbench.

var sinkInt int
var sinkU64 uint64

func BenchmarkTimeNow(b *testing.B) {
	for range b.N {
		sinkInt += time.Now().Nanosecond()
	}
}

func BenchmarkSipHash34(b *testing.B) {
	var k [34]byte
	for i := range b.N {
		k[0] = byte(i)
		sinkU64 += sipHash24(1, 2, k[:])
	}
}

func benchBitmap(occupied float64) *bitmap {
	var bm bitmap
	bm.init()
	r := rand.New(rand.NewPCG(1, 2))
	for p := 49152; p < 65536; p++ {
		if r.Float64() < occupied {
			bm.set(p)
		}
	}
	return &bm
}

func BenchmarkSelectClearFrom(b *testing.B) {
	for _, occ := range []float64{0, 0.5, 0.99} {
		b.Run(fmt.Sprint(occ), func(b *testing.B) {
			bm := benchBitmap(occ)
			free := bm.clearBefore(65536) - bm.clearBefore(49152)
			r := rand.New(rand.NewPCG(3, 4))
			b.ResetTimer()
			for range b.N {
				sinkInt += bm.selectClearFrom(49152, r.IntN(free))
			}
		})
	}
}

func BenchmarkClearBefore(b *testing.B) {
	bm := benchBitmap(0.5)
	for range b.N {
		sinkInt += bm.clearBefore(49152 + 4000)
	}
}
