package portalloc

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// equateAddrs lets cmp compare the netip values inside errors and
// snapshots.
var equateAddrs = cmpopts.EquateComparable(netip.AddrPort{}, netip.Addr{})

// The destinations of the per-destination fuzzer. The fourth is the
// first in IPv4-mapped form: the same destination.
var fuzzDests = [...]netip.AddrPort{
	netip.MustParseAddrPort("198.18.0.1:80"),
	netip.MustParseAddrPort("198.18.0.2:80"),
	netip.MustParseAddrPort("[fd00::1]:80"),
	netip.MustParseAddrPort("[::ffff:198.18.0.1]:80"),
}

// destModel is the obvious implementation of a per-destination pool over
// a window of ports, which the fuzzer checks a Pool against.
type destModel struct {
	base        int
	first, last int
	cursor      int
	excl        [fuzzWindow]bool // Exclude
	own         [fuzzWindow]bool // held for every destination
	toward      [3][fuzzWindow]bool
	stats       Stats
}

func (m *destModel) i(port int) int { return port - m.base }

func (m *destModel) shared(port int) bool {
	for d := range m.toward {
		if m.toward[d][m.i(port)] {
			return true
		}
	}
	return false
}

// usable reports whether an allocation toward d (-1: for every
// destination) may take port.
func (m *destModel) usable(port, d int) bool {
	if port < m.first || port > m.last || m.excl[m.i(port)] || m.own[m.i(port)] {
		return false
	}
	if d < 0 {
		return !m.shared(port)
	}
	return !m.toward[d][m.i(port)]
}

func (m *destModel) count(d int) int {
	n := 0
	for port := m.first; port <= m.last; port++ {
		if m.usable(port, d) {
			n++
		}
	}
	return n
}

func (m *destModel) inUse() int {
	n := 0
	for port := m.base; port < m.base+fuzzWindow; port++ {
		if m.own[m.i(port)] || m.shared(port) {
			n++
		}
	}
	return n
}

func (m *destModel) snapshot() Snapshot {
	s := Snapshot{
		Protocol:       TCP,
		Range:          Range{uint16(m.first), uint16(m.last)},
		Cursor:         uint16(m.cursor),
		Ports:          []uint16{},
		Free:           m.count(-1),
		Stats:          m.stats,
		PerDestination: true,
	}
	if m.cursor > m.last {
		s.Cursor = uint16(m.first)
	}
	dests := 0
	for d := range m.toward {
		held := false
		for _, h := range m.toward[d] {
			if h {
				s.Connections++
				held = true
			}
		}
		if held {
			dests++
		}
	}
	s.Destinations = dests
	for port := m.base; port < m.base+fuzzWindow; port++ {
		i := m.i(port)
		if m.own[i] || m.shared(port) {
			s.InUse++
			s.Ports = append(s.Ports, uint16(port))
		}
		if m.shared(port) {
			s.Shared++
		}
		if port >= m.first && port <= m.last && !m.excl[i] && !m.own[i] {
			s.FreeToNew++
		}
		if m.excl[i] {
			if n := len(s.Excluded); n > 0 && s.Excluded[n-1].Last+1 == uint16(port) {
				s.Excluded[n-1].Last = uint16(port)
			} else {
				s.Excluded = append(s.Excluded, Range{uint16(port), uint16(port)})
			}
		}
	}
	return s
}

func (m *destModel) excludedInRange() int {
	n := 0
	for port := m.first; port <= m.last; port++ {
		if m.excl[m.i(port)] {
			n++
		}
	}
	return n
}

// allocate returns the port the sequential policy must hand out toward d
// (-1: for every destination) with the veto, or the error it must give.
func (m *destModel) allocate(d int, veto func(uint16) bool) (int, *ExhaustedError) {
	avail := m.count(d)
	mkErr := func(vetoed int) *ExhaustedError {
		m.stats.Exhausted++
		e := &ExhaustedError{Protocol: TCP, Range: Range{uint16(m.first), uint16(m.last)},
			InUse: m.inUse(), Excluded: m.excludedInRange(), Vetoed: vetoed}
		if d >= 0 {
			e.Destination = fuzzDests[d]
			for _, h := range m.toward[d] {
				if h {
					e.HeldToward++
				}
			}
		}
		return e
	}
	if avail == 0 {
		return -1, mkErr(0)
	}
	vetoed := 0
	start := m.cursor
	n := m.last - m.first + 1
	for k := 0; k < n; k++ {
		port := m.first + (start-m.first+k)%n
		if !m.usable(port, d) {
			continue
		}
		if veto != nil && veto(uint16(port)) {
			vetoed++
			continue
		}
		m.stats.Vetoes += uint64(vetoed)
		if port < start {
			m.stats.Wraps++
		}
		m.cursor = port + 1
		m.stats.Allocations++
		if d < 0 {
			m.own[m.i(port)] = true
		} else {
			m.toward[d][m.i(port)] = true
		}
		return port, nil
	}
	m.stats.Vetoes += uint64(vetoed)
	return -1, mkErr(vetoed)
}

func FuzzPerDestination(f *testing.F) {
	// base, first, last, policy, then operations (see runFuzzPerDest).
	f.Add([]byte{1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0})
	f.Add([]byte{2, 60, 63, 0, 0, 4, 0, 0, 0, 2, 61, 0, 1, 0, 0, 0, 3, 0, 60})
	f.Add([]byte{0, 0, 7, 0, 0, 0, 0x0f, 0, 1, 0, 4, 2, 5, 0, 2, 0, 5, 3, 2, 0, 4, 0})
	f.Add([]byte{3, 5, 40, 1, 0, 0, 0, 0, 1, 0, 0, 2, 0, 6, 10, 20, 0, 3, 0, 5, 10, 20, 1, 12, 1})
	f.Add([]byte{1, 0, 63, 0, 0, 0, 0, 0, 0, 0, 2, 4, 0, 30, 0, 0, 0, 5, 0, 63, 0, 1, 0})
	f.Fuzz(runFuzzPerDest)
}

func runFuzzPerDest(t *testing.T, data []byte) {
	in := &fuzzReader{data: data}
	base := fuzzBases[in.byte()%len(fuzzBases)]
	a, b := in.byte()%fuzzWindow, in.byte()%fuzzWindow
	policy := Policy(in.byte() % 3)
	m := &destModel{base: base, first: base + min(a, b), last: base + max(a, b)}
	m.cursor = m.first
	p, err := NewPool(TCP, PoolConfig{
		Range:         Range{uint16(m.first), uint16(m.last)},
		Policy:        policy,
		Rand:          rand.NewPCG(uint64(len(data)), 2),
		RekeyInterval: -1,
		Sharing:       PerDestination,
	})
	if err != nil {
		t.Fatal(err)
	}
	dest := func(d int) int { return d % 3 } // the mapped form is dest 0
	portOf := func() int { return base + in.byte()%fuzzWindow }
	for step := 0; in.more() && step < 400; step++ {
		op := in.byte() % 8
		switch op {
		case 0: // allocate toward a destination, or for every one
			di := in.byte() % 5
			var veto func(uint16) bool
			if v := in.byte(); v != 0 {
				veto = func(port uint16) bool { return v&(1<<((int(port)-base)%8)) != 0 }
			}
			req := Request{Veto: veto}
			d := -1
			if di < 4 {
				req.Remote = fuzzDests[di]
				d = dest(di)
			}
			got, gotErr := p.Allocate(req)
			if policy != Sequential {
				// Any usable port that the veto accepts will do.
				if gotErr == nil {
					if !m.usable(int(got), d) || (veto != nil && veto(got)) {
						t.Fatalf("step %d: %v Allocate toward %d = %d, not usable", step, policy, d, got)
					}
					m.stats.Allocations++
					if d < 0 {
						m.own[m.i(int(got))] = true
					} else {
						m.toward[d][m.i(int(got))] = true
					}
				} else {
					if !errors.Is(gotErr, ErrExhausted) {
						t.Fatalf("step %d: %v", step, gotErr)
					}
					accepted := 0
					for port := m.first; port <= m.last; port++ {
						if m.usable(port, d) && (veto == nil || !veto(uint16(port))) {
							accepted++
						}
					}
					if accepted > 0 {
						t.Fatalf("step %d: %v Allocate toward %d failed with %d ports usable: %v", step, policy, d, accepted, gotErr)
					}
					m.stats.Exhausted++
				}
				break
			}
			want, wantErr := m.allocate(d, veto)
			if wantErr != nil {
				var ee *ExhaustedError
				if !errors.As(gotErr, &ee) {
					t.Fatalf("step %d: Allocate toward %d = %d, %v; want %v", step, d, got, gotErr, wantErr)
				}
				if diff := cmp.Diff(wantErr, ee, equateAddrs); diff != "" {
					t.Fatalf("step %d: ExhaustedError (-model +pool):\n%s", step, diff)
				}
				if !errors.Is(gotErr, syscall.EADDRNOTAVAIL) {
					t.Fatalf("step %d: %v does not match EADDRNOTAVAIL", step, gotErr)
				}
				break
			}
			if gotErr != nil || int(got) != want {
				t.Fatalf("step %d: Allocate toward %d = %d, %v; want %d", step, d, got, gotErr, want)
			}
		case 1: // release toward a destination
			port, di := portOf(), in.byte()%4
			d := dest(di)
			err := p.ReleaseTo(uint16(port), fuzzDests[di])
			if m.toward[d][m.i(port)] {
				if err != nil {
					t.Fatalf("step %d: ReleaseTo(%d, %v): %v", step, port, fuzzDests[di], err)
				}
				m.toward[d][m.i(port)] = false
				m.stats.Releases++
			} else if !errors.Is(err, ErrNotHeld) {
				t.Fatalf("step %d: ReleaseTo(%d, %v) of a port not held toward it = %v; want ErrNotHeld", step, port, fuzzDests[di], err)
			}
		case 2: // reserve
			port := portOf()
			err := p.Reserve(uint16(port))
			if m.own[m.i(port)] || m.shared(port) {
				if !errors.Is(err, syscall.EADDRINUSE) {
					t.Fatalf("step %d: Reserve(%d) of a held port = %v; want EADDRINUSE", step, port, err)
				}
			} else {
				if err != nil {
					t.Fatalf("step %d: Reserve(%d): %v", step, port, err)
				}
				m.own[m.i(port)] = true
				m.stats.Reservations++
			}
		case 3: // release for every destination
			port := portOf()
			err := p.Release(uint16(port))
			if m.own[m.i(port)] {
				if err != nil {
					t.Fatalf("step %d: Release(%d): %v", step, port, err)
				}
				m.own[m.i(port)] = false
				m.stats.Releases++
			} else if !errors.Is(err, ErrNotHeld) {
				t.Fatalf("step %d: Release(%d) of a port not held for all = %v; want ErrNotHeld", step, port, err)
			}
		case 4, 5: // exclude, unexclude
			x, y := portOf(), portOf()
			r := Range{uint16(min(x, y)), uint16(max(x, y))}
			var err error
			if op == 4 {
				err = p.Exclude(r)
			} else {
				err = p.Unexclude(r)
			}
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			for port := int(r.First); port <= int(r.Last); port++ {
				m.excl[m.i(port)] = op == 4
			}
		case 6: // set the range
			x, y := portOf(), portOf()
			r := Range{uint16(min(x, y)), uint16(max(x, y))}
			if err := p.SetRange(r); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			m.first, m.last = int(r.First), int(r.Last)
			if m.cursor < m.first || m.cursor > m.last {
				m.cursor = m.first
			}
		case 7: // queries
			port, di := portOf(), in.byte()%4
			d := dest(di)
			if got, want := p.HeldTo(uint16(port), fuzzDests[di]), m.toward[d][m.i(port)] || m.own[m.i(port)]; got != want {
				t.Fatalf("step %d: HeldTo(%d, %v) = %v; want %v", step, port, fuzzDests[di], got, want)
			}
			if got, want := p.Held(uint16(port)), m.own[m.i(port)] || m.shared(port); got != want {
				t.Fatalf("step %d: Held(%d) = %v; want %v", step, port, got, want)
			}
		}
		want := m.snapshot()
		got := p.Snapshot()
		if policy != Sequential {
			got.Cursor, want.Cursor = 0, 0
			got.Stats.Wraps, got.Stats.Vetoes, want.Stats.Vetoes = 0, 0, 0
		}
		want.Policy = policy
		got.Ports = slices.DeleteFunc(got.Ports, func(port uint16) bool { return int(port) < base || int(port) >= base+fuzzWindow })
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), equateAddrs); diff != "" {
			t.Fatalf("step %d (op %d): Snapshot (-model +pool):\n%s", step, op, diff)
		}
		if conns, dests := p.Connections(); conns != want.Connections || dests != want.Destinations {
			t.Fatalf("step %d: Connections() = %d, %d; want %d, %d", step, conns, dests, want.Connections, want.Destinations)
		}
		if got, want := p.InUse(), want.InUse; got != want {
			t.Fatalf("step %d: InUse() = %d; want %d", step, got, want)
		}
	}
}
