package portalloc

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strings"
)

// Per-destination ports (PoolConfig.Sharing PerDestination).
//
// A connection is a 4-tuple, so one local port can serve many connections
// at once as long as their remote endpoints differ, as Linux, gVisor's own
// picker and every peer allow. A per-destination pool hands a port out
// per remote endpoint (address and port): Allocate with a valid
// Request.Remote holds the port toward that destination only, and ReleaseTo
// gives it back. Reserve, and Allocate without a Remote, still hold a port
// for every destination, as a listener or an explicit bind must.
//
// The pool then keeps two bitmaps over the port space. bm, as without the
// option, has a bit set for each port that an exclusive hold cannot take:
// excluded, held exclusively, or held by at least one connection. excl has
// a bit set for each port that no connection can take: excluded or held
// exclusively. Each destination with connections has a sparse bitmap of
// the ports held toward it (destPorts), in groups of 4096 ports allocated
// on demand, so memory follows the connections held. A per-port count of
// connections says when the last one toward any destination lets go.
//
// The sequential cursor is shared by all destinations: an allocation
// toward D takes the first port at or after the cursor that is not in excl
// and not held toward D, then moves the cursor past it.

// destGroup is the part of a destination's bitmap covering 4096 ports: 64
// words, as a group of the pool's bitmap.
type destGroup struct {
	w    [64]uint64 // a set bit is a port held toward the destination
	full uint64     // bit i set when w[i] is all ones
	n    int        // set bits in w
}

// destPorts is the set of ports held toward one destination.
type destPorts struct {
	dst        netip.AddrPort // as destKey gives it
	key        uint64         // keyOf(dst)
	next       *destPorts     // the next destination with the same key (IPv6)
	groups     [numGroups]*destGroup
	fullGroups uint16 // bit g set when groups[g] has every port held
	n          int    // ports held toward the destination
	// gen counts the times the destination went idle (idleLocked).
	gen uint64
	// countable is the number of held ports that are in the range and
	// not excluded: those that the pool's excl-free count includes, so
	// that free ports toward the destination are perDest.free - countable.
	countable int
}

func (d *destPorts) test(port int) bool {
	g := d.groups[port>>12]
	return g != nil && g.w[port>>6&63]&(1<<(port&63)) != 0
}

// word returns the 64 bits of word i (port i*64 onwards).
func (d *destPorts) word(i int) uint64 {
	if g := d.groups[i>>6]; g != nil {
		return g.w[i&63]
	}
	return 0
}

// nextClear returns the first port at or after p that is not held toward
// the destination, or -1 if there is none up to 65535. It looks at most at
// two groups' words and summaries.
func (d *destPorts) nextClear(p int) int {
	if p >= numPorts {
		return -1
	}
	gi := p >> 12
	g := d.groups[gi]
	if g == nil {
		return p
	}
	i := p >> 6 & 63
	if m := ^g.w[i] & (^uint64(0) << (p & 63)); m != 0 {
		return gi<<12 | i<<6 | bits.TrailingZeros64(m)
	}
	if m := ^g.full & (^uint64(0) << (i + 1)); i < 63 && m != 0 {
		w := bits.TrailingZeros64(m)
		return gi<<12 | w<<6 | bits.TrailingZeros64(^g.w[w])
	}
	t := ^uint32(d.fullGroups) & 0xffff & (^uint32(0) << (gi + 1))
	if t == 0 {
		return -1
	}
	gi = bits.TrailingZeros32(t)
	g = d.groups[gi]
	if g == nil {
		return gi << 12
	}
	w := bits.TrailingZeros64(^g.full)
	return gi<<12 | w<<6 | bits.TrailingZeros64(^g.w[w])
}

// perDest is a pool's per-destination state; see the comment at the top
// of this file. It is guarded by the pool's lock.
type perDest struct {
	// dests finds a destination by the 64-bit key of its destID (keyOf);
	// destinations whose keys collide are chained through next.
	dests map[uint64]*destPorts
	// ndests counts the destinations with a port held; dests also keeps
	// up to idleKeep idle ones, listed in the ring idle.
	ndests   int
	idle     [idleKeep]idleRef
	idleNext int
	// cache holds recently used destinations by a hash of their key, so
	// that a few busy destinations are found without the map.
	cache [256]*destPorts
	// refs counts the connections holding each port, toward any
	// destination.
	refs *[numPorts]uint32
	// excl has a bit set for each port no connection can take: excluded
	// or held exclusively.
	excl bitmap
	// free counts the clear bits of excl inside the range.
	free int
	// shared counts ports with at least one connection.
	shared int
	// conns counts connections (port, destination pairs held).
	conns int
	// spare destination sets and groups, kept for reuse so that a
	// destination whose last connection comes and goes allocates
	// nothing. Their bitmaps are all clear.
	spareDests  []*destPorts
	spareGroups []*destGroup
}

const maxSpare = 64

// idleKeep is how many destinations without a connection a pool keeps
// for reuse.
const idleKeep = 256

// idleRef is an entry of the idle ring: d went idle for the gen-th time.
type idleRef struct {
	d   *destPorts
	gen uint64
}

func newPerDest() *perDest {
	pd := &perDest{
		dests: make(map[uint64]*destPorts),
		refs:  new([numPorts]uint32),
	}
	pd.excl.init()
	return pd
}

// destKey is the remote endpoint as the pool names it: the address
// without IPv4 mapping, since the two forms are the same host on the
// wire, and without a zone.
func destKey(remote netip.AddrPort) netip.AddrPort {
	if a := remote.Addr(); a.Is4In6() {
		return netip.AddrPortFrom(a.Unmap(), remote.Port())
	} else if a.Is6() && a.Zone() != "" {
		return netip.AddrPortFrom(a.WithZone(""), remote.Port())
	}
	return remote
}

// keyOf returns the map key of a destination (as destKey gives it). An
// IPv4 destination's key is its address and port, with the top bit set,
// so IPv4 keys never collide. An IPv6 destination's key is a
// multiplicative hash with the top bit clear; colliding destinations are
// chained. The map's hash of a uint64 is much cheaper than of a
// netip.AddrPort.
func keyOf(dst netip.AddrPort) uint64 {
	a := dst.Addr()
	if a.Is4() {
		v := a.As4()
		return 1<<63 | uint64(binary.BigEndian.Uint32(v[:]))<<16 | uint64(dst.Port())
	}
	v := a.As16()
	hi, lo := binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:])
	h := (hi*0x9e3779b97f4a7c15 ^ lo) * 0xc2b2ae3d27d4eb4f
	h ^= h >> 29
	h = (h ^ uint64(dst.Port())) * 0x94d049bb133111eb
	return (h ^ h>>31) &^ (1 << 63)
}

// cacheSlot is the slot of key in perDest.cache.
func cacheSlot(key uint64) int { return int(key * 0x9e3779b97f4a7c15 >> (64 - 8)) }

// lookup returns the destination dst (as destKey gives it) with its
// key, or nil.
func (pd *perDest) lookup(dst netip.AddrPort) (*destPorts, uint64) {
	k := keyOf(dst)
	slot := cacheSlot(k)
	// IPv4 keys are exact (keyOf), so only IPv6 needs the comparison.
	exact := k>>63 == 1
	if d := pd.cache[slot]; d != nil && d.key == k && (exact || d.dst == dst) {
		return d, k
	}
	d := pd.dests[k]
	for d != nil && !exact && d.dst != dst {
		d = d.next
	}
	if d != nil {
		pd.cache[slot] = d
	}
	return d, k
}

// insert adds d, whose dst and key are set, to dests.
func (pd *perDest) insert(d *destPorts) {
	k := d.key
	d.next = pd.dests[k]
	pd.dests[k] = d
	pd.cache[cacheSlot(k)] = d
}

// remove takes d out of dests.
func (pd *perDest) remove(d *destPorts) {
	k := d.key
	if slot := cacheSlot(k); pd.cache[slot] == d {
		pd.cache[slot] = nil
	}
	head := pd.dests[k]
	if head == d {
		if d.next == nil {
			delete(pd.dests, k)
		} else {
			pd.dests[k] = d.next
		}
	} else {
		for q := head; q != nil; q = q.next {
			if q.next == d {
				q.next = d.next
				break
			}
		}
	}
}

// idleLocked notes that d holds no port any more. It stays in dests, so
// that a destination whose only connection comes and goes costs no map
// update, until idleKeep later destinations have gone idle; then it is
// dropped and recycled if it is still idle. The idle destinations kept
// are thus bounded by a constant.
func (pd *perDest) idleLocked(d *destPorts) {
	d.gen++
	slot := &pd.idle[pd.idleNext]
	pd.idleNext = (pd.idleNext + 1) % idleKeep
	if old := slot.d; old != nil && old.n == 0 && old.gen == slot.gen {
		pd.remove(old)
		if len(pd.spareDests) < maxSpare {
			gen := old.gen
			*old = destPorts{gen: gen + 1} // entries still in the ring must not match
			pd.spareDests = append(pd.spareDests, old)
		}
	}
	*slot = idleRef{d, d.gen}
}

// holdTowardLocked marks port held toward d.
func (p *Pool) holdTowardLocked(d *destPorts, port int) {
	pd := p.pd
	gi := port >> 12
	g := d.groups[gi]
	if g == nil {
		if n := len(pd.spareGroups); n > 0 {
			g = pd.spareGroups[n-1]
			pd.spareGroups = pd.spareGroups[:n-1]
		} else {
			g = new(destGroup)
		}
		d.groups[gi] = g
	}
	i := port >> 6 & 63
	g.w[i] |= 1 << (port & 63)
	g.n++
	if g.w[i] == ^uint64(0) {
		g.full |= 1 << i
		if g.full == ^uint64(0) {
			d.fullGroups |= 1 << gi
		}
	}
	if d.n == 0 {
		pd.ndests++
	}
	d.n++
	d.countable++ // allocated ports are in the range and not excluded
	pd.conns++
	if pd.refs[port]++; pd.refs[port] == 1 {
		pd.shared++
		if p.bm.set(port) {
			p.free--
		}
	}
}

// unholdTowardLocked clears port, held toward d, and drops d if it holds
// nothing more.
func (p *Pool) unholdTowardLocked(d *destPorts, port int) {
	pd := p.pd
	gi := port >> 12
	g := d.groups[gi]
	i := port >> 6 & 63
	g.w[i] &^= 1 << (port & 63)
	g.full &^= 1 << i
	d.fullGroups &^= 1 << gi
	g.n--
	if g.n == 0 {
		d.groups[gi] = nil
		if len(pd.spareGroups) < maxSpare {
			// Its words and full are all clear already (n is 0), so it
			// can be reused as it is.
			pd.spareGroups = append(pd.spareGroups, g)
		}
	}
	d.n--
	if p.rng.Contains(uint16(port)) && !pd.excl.test(port) {
		d.countable--
	}
	pd.conns--
	if pd.refs[port]--; pd.refs[port] == 0 {
		pd.shared--
		if _, excluded := p.excluded[uint16(port)]; !excluded {
			p.bm.clear(port)
			if p.rng.Contains(uint16(port)) {
				p.free++
			}
		}
	}
	if d.n == 0 {
		pd.ndests--
		pd.idleLocked(d)
	}
}

// allocateTowardLocked is Allocate for a request with a Remote on a
// per-destination pool.
func (p *Pool) allocateTowardLocked(req Request) (uint16, error) {
	pd := p.pd
	dst := destKey(req.Remote)
	d, key := pd.lookup(dst)
	countable := 0
	if d != nil {
		countable = d.countable
	}
	avail := pd.free - countable
	if avail <= 0 {
		return 0, p.exhaustedTowardLocked(dst, d, 0, req.Retry)
	}
	var port, vetoed int
	switch p.policy {
	case Random:
		port, vetoed = p.pickRandomTowardLocked(d, avail, req.Veto)
	case Hash:
		port, vetoed = p.pickHashLocked(req, func(start int, veto func(uint16) bool) (int, int, bool) {
			return p.scanTowardLocked(d, avail, start, veto)
		})
	default:
		var wrapped bool
		port, vetoed, wrapped = p.scanTowardLocked(d, avail, p.cursor, req.Veto)
		if port >= 0 {
			if wrapped {
				p.stats.Wraps++
			}
			p.cursor = port + 1
		}
	}
	p.stats.Vetoes += uint64(vetoed)
	if port < 0 {
		return 0, p.exhaustedTowardLocked(dst, d, vetoed, req.Retry)
	}
	if d == nil {
		if n := len(pd.spareDests); n > 0 {
			d = pd.spareDests[n-1]
			pd.spareDests = pd.spareDests[:n-1]
		} else {
			d = new(destPorts)
		}
		d.dst, d.key = dst, key
		pd.insert(d)
	}
	p.holdTowardLocked(d, port)
	p.stats.Allocations++
	return uint16(port), nil
}

// nextFreeTowardLocked returns the first port of [from, last] that is
// neither in excl nor held toward d (nil: none held), or -1. Each round
// of its loop skips at least one word of 64 ports; runs of ports blocked
// in excl or held toward d are skipped through the summaries.
func (p *Pool) nextFreeTowardLocked(d *destPorts, from, last int) int {
	excl := &p.pd.excl
	for from <= last {
		a := excl.nextClear(from)
		if a < 0 || a > last || d == nil {
			if a > last {
				return -1
			}
			return a
		}
		// Ports free in both within a's word.
		w := a >> 6
		if m := ^(excl.leaf[w] | d.word(w)) & (^uint64(0) << (a & 63)); m != 0 {
			q := w<<6 | bits.TrailingZeros64(m)
			if q > last {
				return -1
			}
			return q
		}
		b := d.nextClear(w<<6 + 64)
		if b < 0 {
			return -1
		}
		from = b
	}
	return -1
}

// nextFreeTowardWrapLocked is nextFreeTowardLocked over the range from
// from, wrapping to First once; it reports whether it wrapped. The range
// must have a port free toward d.
func (p *Pool) nextFreeTowardWrapLocked(d *destPorts, from int) (int, bool) {
	if from <= int(p.rng.Last) {
		if q := p.nextFreeTowardLocked(d, from, int(p.rng.Last)); q >= 0 {
			return q, false
		}
	}
	return p.nextFreeTowardLocked(d, int(p.rng.First), int(p.rng.Last)), true
}

// scanTowardLocked walks the ports free toward d from start onwards,
// wrapping, and returns the first the veto accepts with the number it
// vetoed, or -1 if it vetoed all avail of them.
func (p *Pool) scanTowardLocked(d *destPorts, avail, start int, veto func(uint16) bool) (port, vetoed int, wrapped bool) {
	q, w := p.nextFreeTowardWrapLocked(d, start)
	wrapped = w
	for veto != nil && veto(uint16(q)) {
		vetoed++
		if vetoed >= avail {
			return -1, vetoed, wrapped
		}
		q, w = p.nextFreeTowardWrapLocked(d, q+1)
		wrapped = wrapped || w
	}
	return q, vetoed, wrapped
}

// pickRandomTowardLocked draws a few ports of the range and takes the
// first free toward d; when the range is crowded for d, or the draws miss,
// it scans on from a random port, which favours a port after a busy block
// as most stacks' random picking does.
func (p *Pool) pickRandomTowardLocked(d *destPorts, avail int, veto func(uint16) bool) (int, int) {
	n := p.rng.Size()
	first := int(p.rng.First)
	vetoed := 0
	if avail*4 >= n {
		for try := 0; try < 4; try++ {
			q := first + p.rand.IntN(n)
			if p.pd.excl.test(q) || (d != nil && d.test(q)) {
				continue
			}
			if veto == nil || !veto(uint16(q)) {
				return q, vetoed
			}
			vetoed++
		}
	}
	q, v, _ := p.scanTowardLocked(d, avail, first+p.rand.IntN(n), veto)
	return q, vetoed + v
}

// exhaustedTowardLocked counts a failed allocation toward dst (unless the
// caller will retry) and returns its error, reused while it would say the
// same.
func (p *Pool) exhaustedTowardLocked(dst netip.AddrPort, d *destPorts, vetoed int, retry bool) error {
	if !retry {
		p.stats.Exhausted++
	}
	e := ExhaustedError{Protocol: p.proto, Range: p.rng, InUse: p.inUse + p.pd.shared,
		Excluded: p.excludedInRange, Vetoed: vetoed, Destination: dst}
	if d != nil {
		e.HeldToward = d.n
	}
	if p.exhausted == nil || *p.exhausted != e {
		p.exhausted = new(ExhaustedError)
		*p.exhausted = e
	}
	return p.exhausted
}

// ReleaseTo returns port, held toward remote by an Allocate whose Request
// had that Remote. On an Exclusive pool, or with an invalid
// remote, it is Release(port): the port was held for every destination.
// Releasing a port that is not held toward remote fails with an error
// matching ErrNotHeld and changes nothing.
func (p *Pool) ReleaseTo(port uint16, remote netip.AddrPort) error {
	if p.pd == nil || !remote.IsValid() {
		return p.Release(port)
	}
	if port == 0 {
		return &PortError{Op: "release", Protocol: p.proto, Port: port, Err: ErrInvalidPort}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	dst := destKey(remote)
	d, _ := p.pd.lookup(dst)
	if d == nil || !d.test(int(port)) {
		return &PortError{Op: "release", Protocol: p.proto, Port: port, Err: ErrNotHeld, Destination: dst}
	}
	p.unholdTowardLocked(d, int(port))
	p.stats.Releases++
	return nil
}

// HeldTo reports whether port is held toward remote: by a connection to
// it, or exclusively (for every destination).
func (p *Pool) HeldTo(port uint16, remote netip.AddrPort) bool {
	if port == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pd == nil {
		return p.heldLocked(port)
	}
	if d, _ := p.pd.lookup(destKey(remote)); d != nil && d.test(int(port)) {
		return true
	}
	return p.heldExclusiveLocked(port)
}

// heldExclusiveLocked reports whether port is held for every destination
// (reserved, or allocated without a Remote).
func (p *Pool) heldExclusiveLocked(port uint16) bool {
	if held, ok := p.excluded[port]; ok {
		return held
	}
	if p.pd != nil && p.pd.refs[port] > 0 {
		return false
	}
	return p.bm.test(int(port))
}

// Connections returns the number of per-destination holds (connections)
// and the number of destinations they go to. Both are zero on a pool
// that is not per-destination.
func (p *Pool) Connections() (conns, dests int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pd == nil {
		return 0, 0
	}
	return p.pd.conns, p.pd.ndests
}

// The hooks below keep the per-destination state in step with the pool's
// exclusive operations. Each does nothing on a pool without the option.

// sharedLocked reports whether connections hold port; an exclusive hold
// cannot take it then (EADDRINUSE).
func (p *Pool) sharedLocked(port uint16) bool {
	return p.pd != nil && p.pd.refs[port] > 0
}

// exclSetLocked marks port blocked for connections (held exclusively or
// excluded).
func (p *Pool) exclSetLocked(port uint16) {
	if p.pd != nil && p.pd.excl.set(int(port)) && p.rng.Contains(port) {
		p.pd.free--
	}
}

// exclClearLocked clears port's block for connections.
func (p *Pool) exclClearLocked(port uint16) {
	if p.pd != nil && p.pd.excl.clear(int(port)) && p.rng.Contains(port) {
		p.pd.free++
	}
}

// recountLocked recomputes what depends on the range and the excluded
// ports (after SetRange, Exclude and Unexclude): the free count of excl
// and each destination's countable ports. It is linear in the groups the
// destinations hold.
func (p *Pool) recountLocked() {
	pd := p.pd
	if pd == nil {
		return
	}
	first, last := int(p.rng.First), int(p.rng.Last)
	pd.free = pd.excl.clearBefore(last+1) - pd.excl.clearBefore(first)
	for _, head := range pd.dests {
		for d := head; d != nil; d = d.next {
			pd.recountDest(d, first, last)
		}
	}
}

// recountDest recomputes d.countable.
func (pd *perDest) recountDest(d *destPorts, first, last int) {
	d.countable = 0
	for gi, g := range d.groups {
		if g == nil {
			continue
		}
		for i, w := range g.w {
			if w == 0 {
				continue
			}
			base := gi<<12 | i<<6
			if base > last || base+63 < first {
				continue
			}
			m := w &^ pd.excl.leaf[base>>6]
			if base < first {
				m &= ^uint64(0) << (first - base)
			}
			if base+63 > last {
				m &= ^uint64(0) >> (base + 63 - last)
			}
			d.countable += bits.OnesCount64(m)
		}
	}
}

// Sharing says how a pool holds the ports it allocates toward a remote
// endpoint (PoolConfig.Sharing).
type Sharing uint8

const (
	// SharingDefault leaves the choice to whoever builds the pool:
	// Exclusive for NewPool, PerDestination for TCP in package stack.
	SharingDefault Sharing = iota
	// Exclusive holds every port for every destination: one connection
	// per port.
	Exclusive
	// PerDestination holds a port per remote endpoint (address and port),
	// as Linux does for TCP connect: one connection per port and
	// destination.
	PerDestination
)

func (s Sharing) String() string {
	switch s {
	case SharingDefault:
		return "default"
	case Exclusive:
		return "exclusive"
	case PerDestination:
		return "per-destination"
	}
	return fmt.Sprintf("sharing(%d)", uint8(s))
}

// ParseSharing parses "exclusive" or "per-destination", in any case.
func ParseSharing(s string) (Sharing, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "exclusive":
		return Exclusive, nil
	case "per-destination":
		return PerDestination, nil
	}
	return 0, fmt.Errorf("portalloc: unknown port sharing %q; want exclusive or per-destination", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s Sharing) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Sharing) UnmarshalText(b []byte) error {
	v, err := ParseSharing(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Sharing returns the pool's sharing: Exclusive or PerDestination.
func (p *Pool) Sharing() Sharing {
	if p.pd != nil {
		return PerDestination
	}
	return Exclusive
}
