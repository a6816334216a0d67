//go:build linux

package ustacktest_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ustacknet/ustack/internal/netns"
	"github.com/ustacknet/ustack/internal/privtest"
	"github.com/ustacknet/ustack/ustacktest"
)

// BenchmarkNewToFirstDial measures the time from building a bed to the
// first connection from its stack to a kernel listener in it (Open, a
// kernel Listen, a stack Dial), and reports the median over the b.N
// rounds as ms-median (the goal is 200 ms or less). Closing the bed is
// not counted. The baseline, in the same run, is the floor under it: a
// fresh namespace and a connection over its loopback, all in the kernel.
// Run with -benchtime=Nx to choose the number of samples.
func BenchmarkNewToFirstDial(b *testing.B) {
	privtest.Require(b)
	b.Run("bed", func(b *testing.B) {
		measure(b, func() (time.Duration, func()) {
			start := time.Now()
			bed, err := ustacktest.Open(ustacktest.Options{})
			if err != nil {
				b.Fatal(err)
			}
			l, err := bed.Listen("tcp", "198.18.0.1:7")
			if err != nil {
				b.Fatal(err)
			}
			c, err := bed.Stack().DialContext(context.Background(), "tcp", "198.18.0.1:7")
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(start)
			return d, func() { c.Close(); l.Close(); bed.Close() }
		})
	})
	b.Run("baseline-netns-loopback", func(b *testing.B) {
		measure(b, func() (time.Duration, func()) {
			start := time.Now()
			ns, err := netns.New()
			if err != nil {
				b.Fatal(err)
			}
			l, err := ns.Listen("tcp", "127.0.0.1:7")
			if err != nil {
				b.Fatal(err)
			}
			c, err := ns.Dial("tcp", "127.0.0.1:7")
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(start)
			return d, func() { c.Close(); l.Close(); ns.Close() }
		})
	})
}

// measure runs round b.N times and reports the median and the slowest of
// the durations it returns; the cleanup it returns runs untimed.
func measure(b *testing.B, round func() (time.Duration, func())) {
	var ds []time.Duration
	b.ResetTimer()
	for range b.N {
		d, cleanup := round()
		b.StopTimer()
		cleanup()
		b.StartTimer()
		ds = append(ds, d)
	}
	b.StopTimer()
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2])/float64(time.Millisecond), "ms-median")
	b.ReportMetric(float64(ds[len(ds)-1])/float64(time.Millisecond), "ms-max")
}
