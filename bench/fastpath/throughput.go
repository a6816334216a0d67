//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runThroughput measures bulk TCP between ustack and the kernel over a
// TUN, with offloads on and off, against kernel-to-kernel over veth.
func queues(mq bool) string {
	if mq {
		return fmt.Sprintf("%d queues", runtime.GOMAXPROCS(0))
	}
	return "one queue"
}

var mtuList = flag.String("mtus", "1500,65520", "throughput: MTUs to measure, comma-separated")

var only = flag.String("only", "", "throughput: run only these variants (veth, ustack, ustack-mq, ustack-nooffload)")

func runThroughput() error {
	type key struct {
		mtu, streams int
		up           bool
	}
	type variant struct {
		name string
		mk   func(mtu int) (*pair, error)
	}
	variants := []variant{
		{"veth", newVethPair},
		{"ustack", func(mtu int) (*pair, error) { return newTUNPair(tunOptions{mtu: mtu, multiQueue: *mq}) }},
		{"ustack-mq", func(mtu int) (*pair, error) { return newTUNPair(tunOptions{mtu: mtu, multiQueue: true}) }},
		{"ustack-nooffload", func(mtu int) (*pair, error) {
			return newTUNPair(tunOptions{mtu: mtu, multiQueue: *mq, noOffload: true})
		}},
	}
	res := map[string]map[key]float64{}
	var mtus []int
	for _, f := range strings.Split(*mtuList, ",") {
		m, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || m < 1280 || m > 65535 {
			return fmt.Errorf("-mtus: bad MTU %q", f)
		}
		mtus = append(mtus, m)
	}
	for _, v := range variants {
		res[v.name] = map[key]float64{}
		if *only != "" && !strings.Contains(","+*only+",", ","+v.name+",") {
			continue
		}
		for _, mtu := range mtus {
			for _, streams := range []int{1, 4} {
				for _, up := range []bool{true, false} {
					p, err := v.mk(mtu)
					if err != nil {
						return fmt.Errorf("%s: %w", v.name, err)
					}
					gbps, err := bulk(p, streams, up)
					stats := ""
					if p.stats != nil {
						stats = p.stats()
					}
					p.close()
					if err != nil {
						return fmt.Errorf("%s mtu %d, %d streams: %w", v.name, mtu, streams, err)
					}
					progress("%s mtu %d streams %d up=%v: %.2f Gbps %s", v.name, mtu, streams, up, gbps, stats)
					res[v.name][key{mtu, streams, up}] = gbps
				}
			}
		}
	}
	fmt.Println("### Throughput (Gbit/s, bulk TCP)")
	fmt.Println()
	fmt.Println("Upload: the ustack side sends (veth: namespace A sends); download: the kernel side sends.")
	fmt.Println()
	fmt.Printf("ustack: offloads on, %s; multi-queue: offloads on, %d queues; no offloads: Config.NoOffload, %s.\n\n", queues(*mq), runtime.GOMAXPROCS(0), queues(*mq))
	fmt.Println("| MTU | streams | direction | ustack | ustack multi-queue | ustack no offloads | veth | ustack / veth | multi-queue / veth | no offloads / veth |")
	fmt.Println("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, mtu := range mtus {
		for _, streams := range []int{1, 4} {
			for _, up := range []bool{true, false} {
				k := key{mtu, streams, up}
				dir := "download"
				if up {
					dir = "upload"
				}
				u, m, n, b := res["ustack"][k], res["ustack-mq"][k], res["ustack-nooffload"][k], res["veth"][k]
				fmt.Printf("| %d | %d | %s | %.2f | %.2f | %.2f | %.2f | %s | %s | %s |\n", mtu, streams, dir, u, m, n, b, ratio(u, b), ratio(m, b), ratio(n, b))
			}
		}
	}
	fmt.Println()
	return nil
}

// bulk runs streams TCP connections from p's client to its server, the
// data flowing client to server if up, and returns the received rate in
// Gbit/s over the measured window.
func bulk(p *pair, streams int, up bool) (float64, error) {
	l, err := p.server.Listen("tcp4", netip.AddrPortFrom(p.serverAddr, 0).String())
	if err != nil {
		return 0, err
	}
	defer l.Close()
	type conn struct{ client, server net.Conn }
	cs := make([]conn, 0, streams)
	defer func() {
		for _, c := range cs {
			c.client.Close()
			c.server.Close()
		}
	}()
	for range streams {
		cc, err := p.dial("tcp4", l.Addr().String())
		if err != nil {
			return 0, err
		}
		sc, err := l.Accept()
		if err != nil {
			cc.Close()
			return 0, err
		}
		cs = append(cs, conn{cc, sc})
	}
	var received atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 2*streams)
	for _, c := range cs {
		src, dst := c.server, c.client
		if up {
			src, dst = c.client, c.server
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for {
				n, err := dst.Read(buf)
				received.Add(int64(n))
				if err != nil {
					if !errors.Is(err, io.EOF) && !stop.Load() {
						errs <- err
					}
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 128<<10)
			for !stop.Load() {
				if _, err := src.Write(buf); err != nil {
					if !stop.Load() {
						errs <- err
					}
					return
				}
			}
			src.Close() // EOF for the reader
		}()
	}
	time.Sleep(*warm)
	start, t0 := received.Load(), time.Now()
	time.Sleep(*dur)
	end, el := received.Load(), time.Since(t0)
	stop.Store(true)
	// Unblock anything still blocked, then wait.
	for _, c := range cs {
		c.client.SetDeadline(time.Now())
		c.server.SetDeadline(time.Now())
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("streams did not stop: %w", errTimeout)
	}
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	return float64(end-start) * 8 / el.Seconds() / 1e9, nil
}
