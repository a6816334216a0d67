//go:build linux

package redisports

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ustacknet/ustack/ustacktest"
)

// BenchmarkRedisChurn16Ports runs b.N connections to redis through 16
// client ports, redis closing each one (PING, QUIT), and reports
// connections per second and failures. The baseline in the same run is
// the kernel as the client, in the bed's namespace, with its own port
// range (ip_local_port_range) set to the same 16 ports. For the scale the
// issue names: -benchtime=50000x.
func BenchmarkRedisChurn16Ports(b *testing.B) {
	b.Run("ustack", func(b *testing.B) {
		bed := ustacktest.New(b, ustacktest.Options{Range: sixteen, NoCapture: true})
		server := startRedis(b, bed)
		b.ResetTimer()
		start := time.Now()
		rs, err := bed.Churn(context.Background(), server, ustacktest.ChurnOptions{N: b.N, Close: ustacktest.ServerCloses, Exchange: quit})
		if err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		failed := 0
		for _, r := range rs {
			if r.Err != nil {
				failed++
			}
		}
		report(b, elapsed, failed)
	})
	b.Run("kernel", func(b *testing.B) {
		bed := ustacktest.New(b, ustacktest.Options{Range: sixteen, NoCapture: true})
		server := startRedis(b, bed)
		if err := bed.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40015"), 0)
		}); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		failed := 0
		// One locked thread in the namespace dials every connection, so
		// that each socket is made there.
		if err := bed.Do(func() error {
			for range b.N {
				if err := kernelConn(server); err != nil {
					failed++
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		report(b, time.Since(start), failed)
	})
}

// kernelConn is one connection of the baseline: dial, PING, QUIT, wait
// for redis to close, close.
func kernelConn(server netip.AddrPort) error {
	c, err := net.DialTimeout("tcp", server.String(), 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := quit(c); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, c)
	return err
}

func report(b *testing.B, elapsed time.Duration, failed int) {
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "conns/s")
	b.ReportMetric(float64(failed), "failed")
}
