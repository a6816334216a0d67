//go:build linux

package wg

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// families are the tunnel's inner address families, as the kernel's
// address.
var families = []struct {
	name   string
	kernel netip.Addr
}{
	{"IPv4", kernel4.Addr()},
	{"IPv6", kernel6.Addr()},
}

const chunk = 1 << 20

// cpuTime is the CPU time (user and system) the process has used: both
// wireguard-go devices, side A's stack and the kernel's work done on the
// process's behalf. Side B's share is the same for both stacks, so the
// difference per byte or per connection is side A's. Unlike throughput,
// it does not fall when other processes compete for the CPUs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkThroughput moves data over one TCP connection through the
// tunnel: upload (side A writes to the kernel's sink) and download (side
// A reads from the kernel's source). One op is 1 MiB.
func BenchmarkThroughput(b *testing.B) {
	for _, dir := range []string{"upload", "download"} {
		for _, f := range families {
			for _, im := range impls {
				b.Run(dir+"/"+f.name+"/"+im.name, func(b *testing.B) {
					a := im.new(b, opts{})
					newTunnel(b, a)
					port := uint16(sinkPort)
					if dir == "download" {
						port = sourcePort
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					c, err := a.dial(ctx, netip.AddrPortFrom(f.kernel, port))
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Minute))
					buf := make([]byte, chunk)
					b.SetBytes(chunk)
					cpu0 := cpuTime()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if dir == "upload" {
							_, err = c.Write(buf)
						} else {
							_, err = io.ReadFull(c, buf)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					b.ReportMetric(float64(b.N)*chunk*8/1e6/b.Elapsed().Seconds(), "Mbit/s")
					b.ReportMetric((cpuTime()-cpu0).Seconds()*1e3/(float64(b.N)*chunk/1e6), "cpu-ms/MB")
				})
			}
		}
	}
}

// BenchmarkConnect opens connections through the tunnel from 4
// goroutines: connect, send one byte, read it back, close. One op is one
// connection; failed ones are counted, not retried. Scenarios:
//
//   - wide/server-closes: each stack's default ephemeral range; the kernel
//     closes first, so TIME_WAIT is on its side.
//   - 64ports/server-closes: side A confined to 40000-40063, where
//     gVisor's own picker (netstack) meets ports still held by
//     connections in flight.
//   - 64ports/client-closes: side A closes first, so every port spends
//     TIME_WAIT (60 s) on side A; both stacks may reuse a TIME_WAIT port
//     (ustack's TimeWaitReuse, gVisor's TCPTimeWaitReuseGlobal).
func BenchmarkConnect(b *testing.B) {
	for _, sc := range []struct {
		name         string
		o            opts
		clientCloses bool
	}{
		{"wide/server-closes", opts{}, false},
		{"64ports/server-closes", opts{small: true}, false},
		{"64ports/client-closes", opts{small: true, reuse: true}, true},
	} {
		for _, im := range impls {
			b.Run(sc.name+"/"+im.name, func(b *testing.B) {
				a := im.new(b, sc.o)
				newTunnel(b, a)
				dst := netip.AddrPortFrom(kernel4.Addr(), echoPort)
				once := echoOnce
				if sc.clientCloses {
					dst = netip.AddrPortFrom(kernel4.Addr(), waitPort)
					once = echoClose
				}
				// One connection first, so that the tunnel's handshake is
				// not timed.
				if err := once(a, dst); err != nil {
					b.Fatal(err)
				}
				var failed atomic.Int64
				var firstErr atomic.Value
				b.SetParallelism(2) // 4 goroutines on 2 CPUs
				cpu0 := cpuTime()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := once(a, dst); err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err)
						}
					}
				})
				b.StopTimer()
				ok := float64(int64(b.N) - failed.Load())
				b.ReportMetric(ok/b.Elapsed().Seconds(), "conns/s")
				b.ReportMetric(float64(failed.Load()), "failed")
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/conn")
				if err := firstErr.Load(); err != nil {
					b.Logf("%d of %d connections failed; first: %v", failed.Load(), b.N, err)
				}
			})
		}
	}
}

// echoOnce is one connection: dial, one byte each way, the kernel closes
// first, then we close.
func echoOnce(a sideA, dst netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.dial(ctx, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{1}); err != nil {
		return err
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil {
		return err
	}
	if _, err := c.Read(one); err != io.EOF {
		return &net.OpError{Op: "read", Net: "tcp", Err: io.ErrUnexpectedEOF}
	}
	return nil
}

// echoClose is one connection that we close first: dial, one byte each
// way, close.
func echoClose(a sideA, dst netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.dial(ctx, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{1}); err != nil {
		return err
	}
	_, err = io.ReadFull(c, make([]byte, 1))
	return err
}
