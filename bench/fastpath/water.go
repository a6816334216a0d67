//go:build linux

package main

import (
	"flag"
	"fmt"
	"slices"

	"github.com/ustacknet/ustack/tun"
)

var rounds = flag.Int("rounds", 3, "water: rounds in which the drivers take turns (medians are reported)")

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
	// The machine is shared and its load drifts over a run, so the
	// variants take turns, round after round, and each figure is the
	// median of its rounds.
	gbps := map[string]map[cell][]float64{}
	rates := map[string][]float64{}
	for _, v := range variants {
		gbps[v.name] = map[cell][]float64{}
	}
	for round := range *rounds {
		for _, c := range cells {
			for _, v := range variants {
				o := v.opt
				o.mtu = c.mtu
				p, err := newTUNPair(o)
				if err != nil {
					return fmt.Errorf("%s: %w", v.name, err)
				}
				g, err := bulk(p, 1, c.up)
				stats := p.stats()
				p.close()
				if err != nil {
					return fmt.Errorf("%s mtu %d up=%v: %w", v.name, c.mtu, c.up, err)
				}
				progress("round %d: %s mtu %d up=%v: %.2f Gbps, %s", round+1, v.name, c.mtu, c.up, g, stats)
				gbps[v.name][c] = append(gbps[v.name][c], g)
			}
		}
		for _, v := range variants {
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
			progress("round %d: %s: %.0f conns/s", round+1, v.name, rate)
			rates[v.name] = append(rates[v.name], rate)
		}
	}
	base, plain, water := variants[0].name, variants[1].name, variants[2].name
	fmt.Printf("### The water TUN driver against the kernel driver (one TCP stream, Gbit/s; connections/s; median of %d rounds of %v)\n", *rounds, *dur)
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
		k, n, w := median(gbps[base][c]), median(gbps[plain][c]), median(gbps[water][c])
		fmt.Printf("| MTU %d %s | %.2f | %.2f | %.2f | %s | %s |\n", c.mtu, dir, k, n, w, ratio(w, k), ratio(w, n))
	}
	k, n, w := median(rates[base]), median(rates[plain]), median(rates[water])
	fmt.Printf("| connections/s, MTU 1500, %d workers | %.0f | %.0f | %.0f | %s | %s |\n", *workers, k, n, w, ratio(w, k), ratio(w, n))
	fmt.Println()
	return nil
}

// median returns the middle of xs (the mean of the two middle ones for an
// even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
