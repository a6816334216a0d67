package tun

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/ustacknet/ustack/internal/netns/netnstest"
)

// BenchmarkDeviceTCP measures one TCP stream between the gVisor stack and a
// kernel socket in a private namespace, through a real TUN device made by
// each driver, in each direction and at two MTUs. Bytes per op are the
// stream's payload.
func BenchmarkDeviceTCP(b *testing.B) {
	for _, drv := range []Driver{DriverKernel, DriverWater} {
		for _, mtu := range []int{1500, 65520} {
			for _, dir := range []string{"stack-to-kernel", "kernel-to-stack"} {
				b.Run(string(drv)+"/"+dir+"/mtu"+strconv.Itoa(mtu), func(b *testing.B) {
					benchDeviceTCP(b, Config{Driver: drv, MTU: mtu, Addrs: []netip.Prefix{kernel4}, Up: true}, dir)
				})
			}
		}
	}
}

// benchDeviceTCP streams through a device opened as cfg, in direction dir.
func benchDeviceTCP(b *testing.B, cfg Config, dir string) {
	ns := netnstest.New(b)
	d := openIn(b, ns, cfg)
	s := newStack(b, d.LinkEndpoint(), stack4)
	l, err := ns.Listen("tcp4", netip.AddrPortFrom(kernel4.Addr(), 0).String())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c := dialTCP(b, s, netip.MustParseAddrPort(l.Addr().String()))
	defer c.Close()
	kc, ok := <-accepted
	if !ok {
		b.Fatal("accept failed")
	}
	defer kc.Close()
	var src, dst net.Conn = c, kc
	if dir == "kernel-to-stack" {
		src, dst = kc, c
	}
	benchStream(b, src, dst)
}

// BenchmarkPipeTCP measures one TCP stream between two stacks over a Pipe.
func BenchmarkPipeTCP(b *testing.B) {
	for _, mtu := range []int{1500, 65520} {
		b.Run("mtu"+strconv.Itoa(mtu), func(b *testing.B) {
			p, err := NewPipe(mtu)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			sa := newStack(b, p.A(), stack4)
			sb := newStack(b, p.B(), kernel4)
			l := listenTCP(b, sb, netip.AddrPortFrom(kernel4.Addr(), 7))
			defer l.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					close(accepted)
					return
				}
				accepted <- c
			}()
			c := dialTCP(b, sa, netip.AddrPortFrom(kernel4.Addr(), 7))
			defer c.Close()
			sc, ok := <-accepted
			if !ok {
				b.Fatal("accept failed")
			}
			defer sc.Close()
			benchStream(b, c, sc)
		})
	}
}

// benchStream writes b.N chunks of 64 KiB to src and reads them from dst.
func benchStream(b *testing.B, src, dst net.Conn) {
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ResetTimer()
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, dst, int64(b.N)*chunk)
		done <- err
	}()
	for range b.N {
		if _, err := src.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
