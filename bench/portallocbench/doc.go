// Package portallocbench compares portalloc, ustack's ephemeral port
// allocator, with gVisor's ports.PortManager in the same benchmark run.
//
// It holds only benchmarks (and this file); it is the one place outside the
// stack where portalloc and gVisor meet, which keeps portalloc free of
// gVisor imports. Run it with
//
//	go test -run=NONE -bench=. -benchmem -count=5 ./bench/portallocbench
//
// BenchmarkAllocReleasePerDest compares per-destination ports with
// gVisor's TCP connect path (PickEphemeralPort, then ReservePort with the
// destination) at up to 250,000 held connections.
//
// docs/BENCHMARKS.md records the figures and the goals they are held to.
package portallocbench
