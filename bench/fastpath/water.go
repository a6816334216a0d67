//go:build linux

package main

import (
	"fmt"

	"github.com/ustacknet/ustack/tun"
)

// runWater compares the water TUN driver with the kernel driver (this
// project's own, the Linux default) in the same run: bulk TCP each way at
// MTU 1500 and 65520, one stream, and the connection rate at MTU 1500.
// Both with the kernel in a private namespace as the peer. The kernel
// driver runs with its offloads, as by default, and without them, which is
// the like-for-like comparison (water cannot have them).
func runWater() error {
	type variant struct {
		name string
		opt  tunOptions
	}
	variants := []variant{
		{"kernel driver", tunOptions{}},
		{"kernel driver, no offloads", tunOptions{noOffload: true}},
		{"water driver", tunOptions{driver: tun.DriverWater}},
	}
	type cell struct {
		mtu int
		up  bool
	}
	cells := []cell{{1500, true}, {1500, false}, {65520, true}, {65520, false}}
	gbps := map[string]map[cell]float64{}
	rates := map[string]float64{}
	for _, v := range variants {
		gbps[v.name] = map[cell]float64{}
		for _, c := range cells {
			o := v.opt
			o.mtu = c.mtu
			p, err := newTUNPair(o)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			g, err := bulk(p, 1, c.up)
			p.close()
			if err != nil {
				return fmt.Errorf("%s mtu %d up=%v: %w", v.name, c.mtu, c.up, err)
			}
			progress("%s mtu %d up=%v: %.2f Gbps", v.name, c.mtu, c.up, g)
			gbps[v.name][c] = g
		}
		o := v.opt
		o.mtu = 1500
		p, err := newTUNPair(o)
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		rate, ok, failed, err := connRate(p)
		p.close()
		if err != nil {
			return fmt.Errorf("%s connrate: %w", v.name, err)
		}
		if failed > 0 {
			return fmt.Errorf("%s connrate: %d of %d connections failed", v.name, failed, ok+failed)
		}
		progress("%s: %.0f conns/s", v.name, rate)
		rates[v.name] = rate
	}
	base, plain, water := variants[0].name, variants[1].name, variants[2].name
	fmt.Println("### The water TUN driver against the kernel driver (one TCP stream, Gbit/s; connections/s)")
	fmt.Println()
	fmt.Println("Upload: the ustack side sends; download: the kernel side sends. The kernel driver runs with its offloads (the default) and without (Config.NoOffload); water has none.")
	fmt.Println()
	fmt.Println("| measure | kernel driver | kernel driver, no offloads | water driver | water / kernel | water / kernel no offloads |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, c := range cells {
		dir := "download"
		if c.up {
			dir = "upload"
		}
		k, n, w := gbps[base][c], gbps[plain][c], gbps[water][c]
		fmt.Printf("| MTU %d %s | %.2f | %.2f | %.2f | %s | %s |\n", c.mtu, dir, k, n, w, ratio(w, k), ratio(w, n))
	}
	k, n, w := rates[base], rates[plain], rates[water]
	fmt.Printf("| connections/s, MTU 1500, %d workers | %.0f | %.0f | %.0f | %s | %s |\n", *workers, k, n, w, ratio(w, k), ratio(w, n))
	fmt.Println()
	return nil
}
