package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/ustacknet/ustack/portalloc"
)

func newDemoCmd() *cobra.Command {
	rng := portalloc.Range{First: 40000, Last: 40009}
	pol := portalloc.Sequential
	c := &cobra.Command{
		Use:   "demo",
		Short: "Show the port allocator at work (no root needed)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runAllocatorDemo(c.OutOrStdout(), rng, pol)
		},
	}
	c.Flags().Var(&rng, "range", "ephemeral port range FIRST-LAST or preset ("+joinPresets()+")")
	c.Flags().Var(&pol, "policy", "port policy: sequential, random or hash")
	return c
}

func joinPresets() string {
	s := ""
	for i, n := range portalloc.Presets() {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

// runAllocatorDemo walks the allocator through allocation, wrap, reuse,
// independent protocols and exhaustion, printing what happens.
func runAllocatorDemo(w io.Writer, rng portalloc.Range, pol portalloc.Policy) error {
	a, err := portalloc.New(portalloc.Config{
		TCP: portalloc.PoolConfig{Range: rng, Policy: pol},
		UDP: portalloc.PoolConfig{Range: rng, Policy: pol},
	})
	if err != nil {
		return err
	}
	tcp, udp := a.Pool(portalloc.TCP), a.Pool(portalloc.UDP)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "STEP\tPROTO\tPORT\tIN USE\tNOTE\n")
	step := 0
	row := func(p *portalloc.Pool, port uint16, note string) {
		step++
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\n", step, p.Protocol(), port, p.InUse(), note)
	}
	n := rng.Size()
	for i := 0; i < n+n/2; i++ {
		port, err := tcp.Allocate(portalloc.Request{})
		if err != nil {
			return err
		}
		row(tcp, port, "allocate, then close")
		if err := tcp.Release(port); err != nil {
			return err
		}
	}
	port, err := udp.Allocate(portalloc.Request{})
	if err != nil {
		return err
	}
	row(udp, port, "udp counts independently of tcp")
	var held []uint16
	for {
		port, err := tcp.Allocate(portalloc.Request{})
		if errors.Is(err, portalloc.ErrExhausted) {
			step++
			fmt.Fprintf(tw, "%d\ttcp\t-\t%d\t%v\n", step, tcp.InUse(), err)
			break
		} else if err != nil {
			return err
		}
		held = append(held, port)
		row(tcp, port, "allocate and keep open")
	}
	if err := tcp.Release(held[3]); err != nil {
		return err
	}
	port, err = tcp.Allocate(portalloc.Request{})
	if err != nil {
		return err
	}
	row(tcp, port, fmt.Sprintf("released %d, next allocation reuses it", held[3]))
	return tw.Flush()
}
