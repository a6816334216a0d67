package portallocbench

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"

	"github.com/ustacknet/ustack/portalloc"
	cryptorand "gvisor.dev/gvisor/pkg/rand"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
)

// Both allocators get the same 16384-port range, the IANA one.
const (
	first = 49152
	last  = 65535
	size  = last - first + 1
)

// An occupancy is a set of ports held before the timed loop starts.
type occupancy struct {
	name string
	held func() []uint16
}

// scattered returns n ports of the range chosen by a seeded shuffle.
func scattered(n int) func() []uint16 {
	return func() []uint16 {
		r := rand.New(rand.NewPCG(1, 2))
		perm := r.Perm(size)
		out := make([]uint16, n)
		for i := range out {
			out[i] = uint16(first + perm[i])
		}
		return out
	}
}

// clustered returns the first n ports of the range: one busy block.
func clustered(n int) func() []uint16 {
	return func() []uint16 {
		out := make([]uint16, n)
		for i := range out {
			out[i] = uint16(first + i)
		}
		return out
	}
}

// The free ports at 99% and 99.99% are 1% and 0.01% of 16384, rounded.
var occupancies = []occupancy{
	{"0%", func() []uint16 { return nil }},
	{"50%-scattered", scattered(size / 2)},
	{"50%-clustered", clustered(size / 2)},
	{"99%", scattered(size - 164)},
	{"99%-clustered", clustered(size - 164)}, // the free ports are the last 164
	{"99.99%", scattered(size - 2)},
	{"full", scattered(size)},           // every allocation fails
	{"full-clustered", clustered(size)}, // the same, held in order
}

// An allocator is one side of the comparison: it holds ports, and
// allocates one and releases it again.
type allocator interface {
	hold(port uint16)
	// allocRelease allocates a port and releases it; on a full range it
	// returns the exhaustion error.
	allocRelease(i int) error
}

type ustack struct {
	p    *portalloc.Pool
	reqs []portalloc.Request
}

func newUstack(b *testing.B, pol portalloc.Policy) *ustack {
	p, err := portalloc.NewPool(portalloc.TCP, portalloc.PoolConfig{Range: portalloc.Range{First: first, Last: last}, Policy: pol})
	if err != nil {
		b.Fatal(err)
	}
	u := &ustack{p: p}
	// The Hash policy keys on the destination: cycle through 256.
	local := netip.MustParseAddr("198.18.0.1")
	for i := range 256 {
		u.reqs = append(u.reqs, portalloc.Request{Local: local, Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, 0, byte(i)}), 443)})
	}
	return u
}

func (u *ustack) hold(port uint16) {
	if err := u.p.Reserve(port); err != nil {
		panic(err)
	}
}

func (u *ustack) allocRelease(i int) error {
	port, err := u.p.Allocate(u.reqs[i&255])
	if err != nil {
		return err
	}
	return u.p.Release(port)
}

type gvisor struct {
	pm  *ports.PortManager
	rng cryptorand.RNG
	res ports.Reservation
}

func newGvisor(b *testing.B) *gvisor {
	pm := ports.NewPortManager()
	if err := pm.SetPortRange(first, last); err != nil {
		b.Fatal(err)
	}
	return &gvisor{
		pm: pm,
		// The RNG gVisor's stack passes by default (stack.Options.SecureRNG).
		rng: cryptorand.RNGFrom(cryptorand.Reader),
		res: ports.Reservation{
			Networks:  []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber},
			Transport: header.TCPProtocolNumber,
			Addr:      tcpip.AddrFrom4([4]byte{198, 18, 0, 1}),
		},
	}
}

func (g *gvisor) hold(port uint16) {
	res := g.res
	res.Port = port
	if _, err := g.pm.ReservePort(g.rng, res, nil); err != nil {
		panic(fmt.Sprintf("gVisor ReservePort(%d): %v", port, err))
	}
}

var errGvisorNoPort = errors.New("gVisor: no port available")

func (g *gvisor) allocRelease(int) error {
	res := g.res // Port 0: pick an ephemeral port
	port, err := g.pm.ReservePort(g.rng, res, nil)
	if err != nil {
		if _, ok := err.(*tcpip.ErrNoPortAvailable); ok {
			return errGvisorNoPort
		}
		return fmt.Errorf("gVisor ReservePort: %v", err)
	}
	res.Port = port
	g.pm.ReleasePort(res)
	return nil
}

var impls = []struct {
	name string
	make func(b *testing.B) allocator
}{
	{"ustack-sequential", func(b *testing.B) allocator { return newUstack(b, portalloc.Sequential) }},
	{"ustack-random", func(b *testing.B) allocator { return newUstack(b, portalloc.Random) }},
	{"ustack-hash", func(b *testing.B) allocator { return newUstack(b, portalloc.Hash) }},
	{"gvisor", func(b *testing.B) allocator { return newGvisor(b) }},
}

// BenchmarkAllocRelease measures one ephemeral allocation and its release
// at each occupancy, for portalloc's three policies and for gVisor's
// PortManager (ReservePort with Port 0, then ReleasePort). At "full" every
// allocation fails, so it measures the cost of reporting exhaustion.
func BenchmarkAllocRelease(b *testing.B) {
	for _, occ := range occupancies {
		held := occ.held()
		for _, impl := range impls {
			b.Run("occ="+occ.name+"/impl="+impl.name, func(b *testing.B) {
				a := impl.make(b)
				for _, port := range held {
					a.hold(port)
				}
				full := len(held) == size
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					err := a.allocRelease(i)
					if full != (err != nil) {
						b.Fatalf("allocRelease: %v (full range: %v)", err, full)
					}
				}
			})
		}
	}
}

// heapPerObject returns the live heap bytes that each call of newObj adds,
// measured over n calls whose results are kept alive until measured.
func heapPerObject(n int, newObj func() any) float64 {
	objs := make([]any, 0, n)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		objs = append(objs, newObj())
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(objs)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// BenchmarkPoolMemory reports the live heap of one allocator, empty and
// with half its range held, as B/pool (its ns/op is meaningless and is
// reported as 0). portalloc's cost is fixed by its bitmap; gVisor's grows
// with every reservation.
func BenchmarkPoolMemory(b *testing.B) {
	newPool := func(pol portalloc.Policy, held int) func() any {
		return func() any {
			p, err := portalloc.NewPool(portalloc.TCP, portalloc.PoolConfig{Range: portalloc.Range{First: first, Last: last}, Policy: pol})
			if err != nil {
				b.Fatal(err)
			}
			for i := range held {
				if err := p.Reserve(uint16(first + 2*i)); err != nil {
					b.Fatal(err)
				}
			}
			if pol == portalloc.Hash {
				// The first Hash allocation allocates the counter table.
				port, err := p.Allocate(portalloc.Request{})
				if err != nil {
					b.Fatal(err)
				}
				p.Release(port)
			}
			return p
		}
	}
	newPM := func(held int) func() any {
		return func() any {
			g := newGvisor(b)
			for i := range held {
				g.hold(uint16(first + 2*i))
			}
			return g.pm
		}
	}
	for _, tc := range []struct {
		name   string
		n      int
		newObj func() any
	}{
		{"impl=ustack/held=0", 1000, newPool(portalloc.Sequential, 0)},
		{"impl=ustack/held=8192", 1000, newPool(portalloc.Sequential, size/2)},
		{"impl=ustack-with-hash-table/held=0", 200, newPool(portalloc.Hash, 0)},
		{"impl=gvisor/held=0", 1000, newPM(0)},
		{"impl=gvisor/held=8192", 20, newPM(size / 2)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			perPool := heapPerObject(tc.n, tc.newObj)
			for range b.N {
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(perPool, "B/pool")
		})
	}
}

// perDestAllocator is one side of the per-destination comparison: it
// allocates a port toward a destination (as a TCP connect does) and
// releases one.
type perDestAllocator interface {
	alloc(dst netip.AddrPort) (uint16, error)
	release(port uint16, dst netip.AddrPort)
}

type ustackPerDest struct{ p *portalloc.Pool }

func (u ustackPerDest) alloc(dst netip.AddrPort) (uint16, error) {
	return u.p.Allocate(portalloc.Request{Remote: dst})
}

func (u ustackPerDest) release(port uint16, dst netip.AddrPort) { u.p.ReleaseTo(port, dst) }

// gvisorConnect picks ports as gVisor's TCP connect does
// (tcp.Endpoint.registerEndpoint): PickEphemeralPort, reserving each
// candidate with the destination. (ReservePort with port 0 never shares
// a TCP port.)
type gvisorConnect struct{ *gvisor }

func (g gvisorConnect) resTo(port uint16, dst netip.AddrPort) ports.Reservation {
	res := g.res
	res.Port = port
	res.Dest = tcpip.FullAddress{Addr: tcpip.AddrFrom4(dst.Addr().As4()), Port: dst.Port()}
	return res
}

func (g gvisorConnect) alloc(dst netip.AddrPort) (uint16, error) {
	port, err := g.pm.PickEphemeralPort(g.rng, func(p uint16) (bool, tcpip.Error) {
		if _, err := g.pm.ReservePort(g.rng, g.resTo(p, dst), nil); err != nil {
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return 0, fmt.Errorf("gVisor PickEphemeralPort: %v", err)
	}
	return port, nil
}

func (g gvisorConnect) release(port uint16, dst netip.AddrPort) { g.pm.ReleasePort(g.resTo(port, dst)) }

// BenchmarkAllocReleasePerDest measures allocating a port toward one of
// 32 destinations in turn, and releasing it, with conns connections
// already held toward them: portalloc with per-destination ports against
// gVisor's port manager on its connect path, filled the same way.
func BenchmarkAllocReleasePerDest(b *testing.B) {
	dsts := make([]netip.AddrPort, 32)
	for i := range dsts {
		dsts[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, 0, byte(i)}), 443)
	}
	for _, conns := range []int{0, 16384, 131072, 250000} {
		for _, impl := range []struct {
			name string
			make func(b *testing.B) perDestAllocator
		}{
			{"ustack-per-destination", func(b *testing.B) perDestAllocator {
				p, err := portalloc.NewPool(portalloc.TCP, portalloc.PoolConfig{Range: portalloc.Range{First: first, Last: last}, Sharing: portalloc.PerDestination})
				if err != nil {
					b.Fatal(err)
				}
				return ustackPerDest{p}
			}},
			{"gvisor-connect", func(b *testing.B) perDestAllocator { return gvisorConnect{newGvisor(b)} }},
		} {
			b.Run(fmt.Sprintf("conns=%d/impl=%s", conns, impl.name), func(b *testing.B) {
				a := impl.make(b)
				for i := range conns {
					if _, err := a.alloc(dsts[i%len(dsts)]); err != nil {
						b.Fatalf("fill #%d: %v", i, err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					dst := dsts[i%len(dsts)]
					port, err := a.alloc(dst)
					if err != nil {
						b.Fatal(err)
					}
					a.release(port, dst)
				}
			})
		}
	}
}
