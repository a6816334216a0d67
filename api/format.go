package api

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ustacknet/ustack/portalloc"
)

// FormatPorts writes snapshots as a table: one row per protocol with its
// range, policy, cursor, ports in use and counters, and for a
// per-destination pool its connections and destinations ("-" for an
// exclusive one), then the ports in use.
func FormatPorts(w io.Writer, snaps []portalloc.Snapshot) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tRANGE\tPOLICY\tCURSOR\tIN USE\tFREE\tALLOCS\tRELEASES\tEXHAUSTED\tWRAPS\tVETOES\tCONNS\tDESTS")
	for _, s := range snaps {
		conns, dests := "-", "-"
		if s.PerDestination {
			conns, dests = fmt.Sprint(s.Connections), fmt.Sprint(s.Destinations)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n",
			s.Protocol, s.Range, s.Policy, s.Cursor, s.InUse, s.Free,
			s.Stats.Allocations, s.Stats.Releases, s.Stats.Exhausted, s.Stats.Wraps, s.Stats.Vetoes, conns, dests)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range snaps {
		if len(s.Ports) == 0 {
			continue
		}
		fmt.Fprintf(w, "%s in use: %s\n", s.Protocol, compactPorts(s.Ports))
	}
	return nil
}

// compactPorts writes sorted ports with runs collapsed: "1-3, 7".
func compactPorts(ports []uint16) string {
	var parts []string
	for i := 0; i < len(ports); {
		j := i
		for j+1 < len(ports) && ports[j+1] == ports[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, fmt.Sprint(ports[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ports[i], ports[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
