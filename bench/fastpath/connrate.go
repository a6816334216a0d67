//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"golang.org/x/sys/unix"
)

// runConnRate measures TCP connect, 1-byte echo, close per second,
// ustack to the kernel over a TUN against kernel to kernel over veth, and
// ustack again with an 8-port ephemeral range, where ports recycle.
func runConnRate() error {
	type row struct {
		name       string
		mk         func() (*pair, error)
		rate       float64
		ok, failed int64
	}
	rows := []*row{
		{name: "veth (kernel to kernel)", mk: func() (*pair, error) { return newVethPair(1500) }},
		{name: "ustack to kernel over TUN", mk: func() (*pair, error) {
			return newTUNPair(tunOptions{mtu: 1500, multiQueue: *mq})
		}},
		{name: "veth (kernel to kernel), 8-port range, tcp_tw_reuse=1", mk: func() (*pair, error) {
			p, err := newVethPair(1500)
			if err != nil {
				return nil, err
			}
			// The kernel client gets the same 8 ports and TIME_WAIT reuse
			// as the ustack row below.
			err = p.clientNS.Do(func() error {
				if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40007"), 0); err != nil {
					return err
				}
				return os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("1"), 0)
			})
			if err != nil {
				p.close()
				return nil, err
			}
			return p, nil
		}},
		{name: "ustack to kernel over TUN, 8-port range", mk: func() (*pair, error) {
			return newTUNPair(tunOptions{mtu: 1500, multiQueue: *mq, stackCfg: func(c *stack.Config) {
				c.Ports.TCP.Range = portalloc.Range{First: 40000, Last: 40007}
				// With 8 ports, a connection we close first would hold its
				// port for the TIME_WAIT period; reuse it as Linux's
				// tcp_tw_reuse does.
				c.TimeWaitReuse = true
			}})
		}},
	}
	for _, r := range rows {
		p, err := r.mk()
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		r.rate, r.ok, r.failed, err = connRate(p)
		p.close()
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		progress("%s: %.0f conns/s (%d ok, %d failed)", r.name, r.rate, r.ok, r.failed)
	}
	base := rows[0].rate
	fmt.Printf("### Connection rate (connect, 1-byte echo, close; %d workers, %v)\n\n", *workers, *dur)
	fmt.Println("| path | conns/s | completed | failed | ratio to veth |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: |")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %d | %d | %s |\n", r.name, r.rate, r.ok, r.failed, ratio(r.rate, base))
	}
	fmt.Println()
	return nil
}

// connRate runs the workers against an echo server in p's server
// namespace for the measured time.
func connRate(p *pair) (rate float64, ok, failed int64, err error) {
	l, err := p.server.Listen("tcp4", netip.AddrPortFrom(p.serverAddr, 0).String())
	if err != nil {
		return 0, 0, 0, err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err == nil {
					c.Write(b[:])
				}
			}()
		}
	}()
	addr := l.Addr().String()
	var nOK, nFailed atomic.Int64
	var errMu sync.Mutex
	errSeen := map[string]int{}
	defer func() {
		for e, n := range errSeen {
			progress("  failure (%d): %s", n, e)
		}
	}()
	var measuring atomic.Bool
	deadline := time.Now().Add(*warm + *dur)
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dial := p.dial
			if p.clientNS != nil {
				// The kernel client: move this goroutine's thread into
				// the client namespace for good, so that each dial is a
				// plain connect (the thread is discarded on exit).
				runtime.LockOSThread()
				if err := unix.Setns(int(p.clientNS.File().Fd()), unix.CLONE_NEWNET); err != nil {
					nFailed.Add(1)
					return
				}
				dial = net.Dial
			}
			var b [1]byte
			for time.Now().Before(deadline) {
				err := func() error {
					c, err := dial("tcp4", addr)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Write([]byte{1}); err != nil {
						return err
					}
					_, err = io.ReadFull(c, b[:])
					return err
				}()
				good := err == nil
				if err != nil && measuring.Load() {
					errMu.Lock()
					if len(errSeen) < 5 {
						errSeen[err.Error()]++
					}
					errMu.Unlock()
				}
				if !measuring.Load() {
					continue
				}
				if good {
					nOK.Add(1)
				} else {
					nFailed.Add(1)
				}
			}
		}()
	}
	time.Sleep(*warm)
	measuring.Store(true)
	t0 := time.Now()
	wg.Wait()
	el := time.Since(t0)
	return float64(nOK.Load()) / el.Seconds(), nOK.Load(), nFailed.Load(), nil
}
