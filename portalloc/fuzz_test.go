package portalloc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The fuzzer works inside a window of 64 ports, so that it reaches wraps,
// exhaustion and the ends of the port space: the windows start at 1, end
// at 65535, or straddle a 64-port word (40032) or a 4096-port group (4064)
// of the bitmap. Optionally the 32 ports on either side of the window are
// held throughout (the fence), so that a full window fills whole bitmap
// words and the searches go through the summary levels.
const (
	fuzzWindow = 64
	fuzzFence  = 32
)

var fuzzBases = [...]int{1, 4096 - fuzzWindow/2, 40032, 65536 - fuzzWindow}

// poolModel is the obvious implementation that the fuzzer checks a Pool
// against.
type poolModel struct {
	base        int
	fenceLo     []uint16 // held below the window, never touched
	fenceHi     []uint16 // held above the window, never touched
	held, excl  [fuzzWindow]bool
	first, last int
	cursor      int // in [first, last+1], as in Pool
	policy      Policy
	stats       Stats
}

func (m *poolModel) idx(port int) int { return port - m.base }

func (m *poolModel) usable(port int) bool {
	return port >= m.first && port <= m.last && !m.held[m.idx(port)] && !m.excl[m.idx(port)]
}

func (m *poolModel) countUsable() int {
	n := 0
	for port := m.first; port <= m.last; port++ {
		if m.usable(port) {
			n++
		}
	}
	return n
}

func (m *poolModel) snapshot() Snapshot {
	s := Snapshot{
		Protocol: TCP,
		Range:    Range{uint16(m.first), uint16(m.last)},
		Policy:   m.policy,
		Cursor:   uint16(m.cursor),
		Ports:    []uint16{},
		Free:     m.countUsable(),
		Stats:    m.stats,
	}
	if m.cursor > m.last {
		s.Cursor = uint16(m.first)
	}
	s.InUse = len(m.fenceLo) + len(m.fenceHi)
	s.Ports = append(s.Ports, m.fenceLo...)
	for i := range fuzzWindow {
		port := uint16(m.base + i)
		if m.held[i] {
			s.InUse++
			s.Ports = append(s.Ports, port)
		}
		if m.excl[i] {
			if n := len(s.Excluded); n > 0 && s.Excluded[n-1].Last+1 == port {
				s.Excluded[n-1].Last = port
			} else {
				s.Excluded = append(s.Excluded, Range{port, port})
			}
		}
	}
	s.Ports = append(s.Ports, m.fenceHi...)
	return s
}

func (m *poolModel) inUse() int {
	n := len(m.fenceLo) + len(m.fenceHi)
	for _, h := range m.held {
		if h {
			n++
		}
	}
	return n
}

// fuzzReader hands out the fuzz input a byte at a time, then zeros.
type fuzzReader struct{ data []byte }

func (r *fuzzReader) more() bool { return len(r.data) > 0 }

func (r *fuzzReader) byte() int {
	if len(r.data) == 0 {
		return 0
	}
	b := r.data[0]
	r.data = r.data[1:]
	return int(b)
}

func FuzzPool(f *testing.F) {
	// base, first, last, then operations (see runFuzzPool).
	f.Add([]byte{1, 0, 4, 0, 0, 0, 0, 0, 0, 0})                               // fill and exhaust
	f.Add([]byte{2, 60, 3, 0, 0, 0, 4, 61, 0, 0, 0})                          // at 65535: wrap
	f.Add([]byte{0, 0, 9, 3, 2, 5, 4, 0, 0, 2, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}) // excl, veto
	f.Add([]byte{1, 10, 20, 0, 0, 7, 30, 40, 0, 8, 1, 0, 0, 3, 31, 4, 31, 0})
	f.Add([]byte{1, 5, 5, 0, 0, 4, 5, 0, 3, 250, 4, 250, 8, 2, 0, 8, 0, 0, 5, 5, 2, 6, 5, 2})
	f.Fuzz(runFuzzPool)
}

func runFuzzPool(t *testing.T, data []byte) {
	in := &fuzzReader{data: data}
	b0 := in.byte()
	base := fuzzBases[b0%len(fuzzBases)]
	a, b := in.byte()%fuzzWindow, in.byte()%fuzzWindow
	m := &poolModel{base: base, first: base + min(a, b), last: base + max(a, b)}
	m.cursor = m.first
	p, err := NewPool(TCP, PoolConfig{
		Range:         Range{uint16(m.first), uint16(m.last)},
		Rand:          rand.NewPCG(uint64(len(data)), 1),
		RekeyInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if b0/len(fuzzBases)%2 == 1 {
		for port := max(1, base-fuzzFence); port < base; port++ {
			m.fenceLo = append(m.fenceLo, uint16(port))
		}
		for port := base + fuzzWindow; port < min(65536, base+fuzzWindow+fuzzFence); port++ {
			m.fenceHi = append(m.fenceHi, uint16(port))
		}
		for _, port := range slices.Concat(m.fenceLo, m.fenceHi) {
			if err := p.Reserve(port); err != nil {
				t.Fatal(err)
			}
			m.stats.Reservations++
		}
	}
	// port decodes a byte into a port of the window, or 0.
	port := func() int {
		if v := in.byte(); v < 250 {
			return base + v%fuzzWindow
		}
		return 0
	}
	// rng decodes a range of the window: short ones mostly, reversed
	// (invalid) ones sometimes.
	rng := func() Range {
		lo, n := in.byte(), in.byte()
		first := base + lo%fuzzWindow
		if n >= 250 {
			return Range{uint16(first), uint16(first - 1)}
		}
		last := min(first+n%16, base+fuzzWindow-1)
		if n >= 192 {
			last = base + fuzzWindow - 1
		}
		return Range{uint16(first), uint16(last)}
	}

	// At most 300 operations: longer inputs find nothing new but make
	// every execution, and the minimisation of new inputs, slow.
	for step := 0; in.more() && step < 300; step++ {
		op := in.byte() % 10
		var what string
		switch op {
		case 0, 1, 2:
			what = "allocate"
			var veto func(uint16) bool
			var mask uint64
			if op == 2 {
				for i := range 8 {
					mask |= uint64(in.byte()) << (8 * i)
				}
				what = fmt.Sprintf("allocate, veto %#x", mask)
				veto = func(port uint16) bool { return mask&(1<<(int(port)-base)) != 0 }
			}
			checkAllocate(t, p, m, veto, what)
		case 3:
			port := port()
			what = fmt.Sprintf("reserve %d", port)
			err := p.Reserve(uint16(port))
			var want error
			switch {
			case port == 0:
				want = ErrInvalidPort
			case m.held[m.idx(port)]:
				want = syscall.EADDRINUSE
			default:
				m.held[m.idx(port)] = true
				m.stats.Reservations++
			}
			checkPortErr(t, what, err, "reserve", port, want)
		case 4:
			port := port()
			what = fmt.Sprintf("release %d", port)
			err := p.Release(uint16(port))
			var want error
			switch {
			case port == 0:
				want = ErrInvalidPort
			case !m.held[m.idx(port)]:
				want = ErrNotHeld
			default:
				m.held[m.idx(port)] = false
				m.stats.Releases++
			}
			checkPortErr(t, what, err, "release", port, want)
		case 5, 6:
			r := rng()
			var err error
			if op == 5 {
				what = fmt.Sprintf("exclude %v", r)
				err = p.Exclude(r)
			} else {
				what = fmt.Sprintf("unexclude %v", r)
				err = p.Unexclude(r)
			}
			if r.First > r.Last {
				if err == nil {
					t.Fatalf("step %d: %s succeeded", step, what)
				}
				break
			}
			if err != nil {
				t.Fatalf("step %d: %s: %v", step, what, err)
			}
			for port := int(r.First); port <= int(r.Last); port++ {
				m.excl[m.idx(port)] = op == 5
			}
		case 7:
			r := rng()
			what = fmt.Sprintf("set range %v", r)
			err := p.SetRange(r)
			if r.First > r.Last {
				if err == nil {
					t.Fatalf("step %d: %s succeeded", step, what)
				}
				break
			}
			if err != nil {
				t.Fatalf("step %d: %s: %v", step, what, err)
			}
			m.first, m.last = int(r.First), int(r.Last)
			if m.cursor < m.first || m.cursor > m.last {
				m.cursor = m.first
			}
		case 8:
			pol := Policy(in.byte() % 3)
			what = "set policy " + pol.String()
			if err := p.SetPolicy(pol); err != nil {
				t.Fatalf("step %d: %s: %v", step, what, err)
			}
			m.policy = pol
		case 9:
			what = "rekey"
			p.Rekey()
			m.stats.Rekeys++
		}
		// reflect.DeepEqual first: cmp.Diff is too slow to run at every
		// step of every fuzz input.
		if want, got := m.snapshot(), p.Snapshot(); !reflect.DeepEqual(want, got) {
			t.Fatalf("step %d (%s): Snapshot differs from the model (-model +pool):\n%s", step, what, cmp.Diff(want, got))
		}
	}
	if err := p.bm.checkSummaries(); err != nil {
		t.Fatalf("bitmap at the end: %v", err)
	}
}

// checkAllocate allocates from p and checks the result against the model,
// then updates the model.
func checkAllocate(t *testing.T, p *Pool, m *poolModel, veto func(uint16) bool, what string) {
	t.Helper()
	refused := 0
	var req Request
	if m.policy == Hash {
		req = hashReq(int(m.stats.Allocations % 4))
	}
	if veto != nil {
		req.Veto = func(port uint16) bool {
			if !m.usable(int(port)) {
				t.Fatalf("%s: veto asked about port %d, which is not usable", what, port)
			}
			v := veto(port)
			if v {
				refused++
			}
			return v
		}
	}
	vetoed := func(port int) bool { return veto != nil && veto(uint16(port)) }

	// candidates in sequential order from the cursor.
	var order []int
	for port := m.cursor; port <= m.last; port++ {
		order = append(order, port)
	}
	for port := m.first; port < m.cursor && port <= m.last; port++ {
		order = append(order, port)
	}
	usable := m.countUsable()
	want, seqVetoes := -1, 0
	for _, port := range order {
		if !m.usable(port) {
			continue
		}
		if vetoed(port) {
			seqVetoes++
			continue
		}
		want = port
		break
	}

	got, err := p.Allocate(req)
	m.stats.Vetoes += uint64(refused)
	if want < 0 {
		// Nothing can be handed out: every policy must fail, and the
		// error must say why.
		var ee *ExhaustedError
		if !errors.As(err, &ee) {
			t.Fatalf("%s: Allocate = %d, %v; want exhaustion (model: %d usable, all vetoed)", what, got, err, usable)
		}
		wantErr := ExhaustedError{Protocol: TCP, Range: Range{uint16(m.first), uint16(m.last)}, InUse: m.inUse()}
		for i := range fuzzWindow {
			if port := m.base + i; m.excl[i] && port >= m.first && port <= m.last {
				wantErr.Excluded++
			}
		}
		wantErr.Vetoed = usable
		if *ee != wantErr {
			t.Fatalf("%s: ExhaustedError (-model +pool):\n%s", what, cmp.Diff(&wantErr, ee, equateAddrs))
		}
		if !errors.Is(err, ErrExhausted) || !errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Fatalf("%s: %v does not match ErrExhausted and EADDRNOTAVAIL", what, err)
		}
		if m.policy == Sequential && refused != seqVetoes {
			t.Fatalf("%s: veto refused %d ports, model %d", what, refused, seqVetoes)
		}
		m.stats.Exhausted++
		return
	}
	if err != nil {
		t.Fatalf("%s: Allocate: %v; model has port %d", what, err, want)
	}
	if !m.usable(int(got)) || vetoed(int(got)) {
		t.Fatalf("%s: Allocate = %d, which is held, excluded, out of range %d-%d or vetoed", what, got, m.first, m.last)
	}
	if m.policy == Sequential {
		if int(got) != want {
			t.Fatalf("%s: Allocate = %d, model wants %d (cursor %d, range %d-%d)", what, got, want, m.cursor, m.first, m.last)
		}
		if refused != seqVetoes {
			t.Fatalf("%s: veto refused %d ports, model %d", what, refused, seqVetoes)
		}
		if int(got) < m.cursor {
			m.stats.Wraps++
		}
		m.cursor = int(got) + 1
	}
	m.held[m.idx(int(got))] = true
	m.stats.Allocations++
}

func checkPortErr(t *testing.T, what string, err error, op string, port int, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return
	}
	var pe *PortError
	if !errors.As(err, &pe) || pe.Op != op || int(pe.Port) != port || pe.Protocol != TCP || !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want a %s PortError for port %d matching %v", what, err, op, port, want)
	}
}

// TestFuzzPoolRandom runs the fuzz body on random inputs, so that plain
// go test exercises it beyond the seed corpus.
func TestFuzzPoolRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	n := 1000
	if testing.Short() {
		n = 100
	}
	for i := range n {
		data := make([]byte, 20+r.IntN(400))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { runFuzzPool(t, data) })
		if t.Failed() {
			t.Logf("input: %x", data)
			break
		}
	}
}
