// Command connrate measures TCP connection churn: each cycle connects,
// sends one byte, reads it back and closes. With -serve it is the echo
// server. The benchmarks run it inside sandboxes and namespaces; it only
// talks to the address it is given.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	serve := flag.String("serve", "", "serve 1-byte echo on this address (e.g. 127.0.0.1:7000)")
	addr := flag.String("c", "", "connect to this address")
	n := flag.Int("n", 5000, "cycles in all")
	workers := flag.Int("w", 4, "concurrent workers")
	limit := flag.Duration("t", 60*time.Second, "stop after this long even if cycles remain")
	flag.Parse()
	switch {
	case *serve != "":
		l, err := net.Listen("tcp", *serve)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			c, err := l.Accept()
			if err != nil {
				continue
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err == nil {
					c.Write(b)
				}
			}()
		}
	case *addr != "":
		var done, failed atomic.Int64
		var next atomic.Int64
		stop := time.Now().Add(*limit)
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := make([]byte, 1)
				for next.Add(1) <= int64(*n) && time.Now().Before(stop) {
					c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
					if err != nil {
						failed.Add(1)
						continue
					}
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Write([]byte{1}); err != nil {
						failed.Add(1)
					} else if _, err := io.ReadFull(c, b); err != nil {
						failed.Add(1)
					} else {
						done.Add(1)
					}
					c.Close()
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		fmt.Printf("%.0f conns/s (%d ok, %d failed, %v)\n", float64(done.Load())/el.Seconds(), done.Load(), failed.Load(), el.Round(time.Millisecond))
	default:
		flag.Usage()
		os.Exit(2)
	}
}
