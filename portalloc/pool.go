package portalloc

import (
	crand "crypto/rand"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"
)

// PoolConfig configures one protocol's pool. The zero value is usable: the
// IANA range with the Sequential policy.
type PoolConfig struct {
	// Range is the ephemeral range. Zero means IANA (49152-65535).
	Range Range
	// Policy chooses ports. Zero means Sequential.
	Policy Policy
	// RandomStart starts the sequential cursor at a random port of the
	// range instead of Range.First. Default false.
	RandomStart bool
	// Rand is the source of randomness for the Random and Hash policies
	// (the Hash policy's secret keys included) and RandomStart. Nil means
	// a ChaCha8 source seeded from crypto/rand. Set it only to make tests
	// reproducible: anyone who knows its output can predict every port.
	Rand rand.Source
	// RekeyInterval is how often the Hash policy replaces its secret keys.
	// Zero means one minute. A negative value disables re-keying.
	RekeyInterval time.Duration
	// Now returns the current time, for re-keying. Nil means the system's
	// monotonic clock.
	Now func() time.Time
	// Sharing says whether an allocation with a Request.Remote holds its
	// port for every destination (Exclusive) or toward that remote
	// endpoint only (PerDestination): then a port may serve connections
	// to other destinations at once, and ReleaseTo gives it back.
	// Reserve, and Allocate without a Remote, always hold a port for
	// every destination (listeners, explicit binds); exhaustion is per
	// destination. PerDestination adds 264 KiB to the pool (a count of
	// connections per port and a second bitmap), plus about 0.2 KiB per
	// destination and 0.5 KiB per group of 4096 ports with a port held
	// toward it; see perdest.go. Zero (SharingDefault) means Exclusive
	// for a pool; package stack makes it PerDestination for TCP.
	Sharing Sharing
}

// Request describes one allocation. The zero Request is valid.
type Request struct {
	// Local and Remote identify the connection for the Hash policy, which
	// keys its counters on (Local, Remote address, Remote port). On a
	// per-destination pool a valid Remote also makes the port held toward
	// that remote endpoint only (release it with ReleaseTo); without
	// one the port is held for every destination.
	Local  netip.Addr
	Remote netip.AddrPort
	// Veto, if not nil, is asked about each candidate port before it is
	// handed out; returning true skips the port, which stays free. The
	// stack uses it for ports that are free here but still busy below
	// (for example in TCP TIME_WAIT). Veto is called with the pool's lock
	// held and must not call back into the pool.
	Veto func(port uint16) bool
	// Retry says that the caller will try again if the pool is full (the
	// stack does, while connections that hold ports are closing): such a
	// failure is not counted in Stats.Exhausted, which then counts only
	// the allocations that were finally refused.
	Retry bool
}

// Stats are a pool's counters since it was created.
type Stats struct {
	Allocations  uint64 `json:"allocations"`  // successful Allocate calls
	Reservations uint64 `json:"reservations"` // successful Reserve calls
	Releases     uint64 `json:"releases"`     // successful Release calls
	Exhausted    uint64 `json:"exhausted"`    // Allocate calls that failed for want of a port (not counting Request.Retry ones)
	Wraps        uint64 `json:"wraps"`        // times the cursor wrapped from Last to First
	Vetoes       uint64 `json:"vetoes"`       // times a Veto refused a candidate port
	Rekeys       uint64 `json:"rekeys"`       // Hash policy key replacements, periodic or by Rekey
}

// Snapshot is a consistent copy of a pool's state.
type Snapshot struct {
	Protocol Protocol `json:"protocol"`
	Range    Range    `json:"range"`
	Policy   Policy   `json:"policy"`
	// Cursor is the port the Sequential policy tries next.
	Cursor uint16 `json:"cursor"`
	// InUse is the number of held ports; Ports lists them in order. On a
	// per-destination pool a port counts once however many connections
	// hold it.
	InUse int      `json:"in_use"`
	Ports []uint16 `json:"ports"`
	// Free is the number of ports of the range that can be allocated now
	// for every destination (with no connection on them).
	Free int `json:"free"`
	// PerDestination reports a per-destination pool. On one, Connections is the number of (port,
	// destination) holds and Destinations the number of remote endpoints
	// they go to; Shared is the number of ports held by connections, and
	// FreeToNew the number of ports of the range that a connection to a
	// destination with none yet could take.
	PerDestination bool `json:"per_destination,omitempty"`
	Connections    int  `json:"connections,omitempty"`
	Destinations   int  `json:"destinations,omitempty"`
	Shared         int  `json:"shared,omitempty"`
	FreeToNew      int  `json:"free_to_new,omitempty"`
	// Excluded lists the excluded ports as ranges.
	Excluded []Range `json:"excluded"`
	Stats    Stats   `json:"stats"`
}

const hashTableSize = 1 << 16 // counters for the Hash policy, as Linux since 5.19

// Pool allocates the ports of one protocol. It is safe for concurrent use.
// All operations take constant time except SetRange, Exclude, Unexclude
// and Snapshot, which are linear in the size of what they change or report.
type Pool struct {
	proto Protocol

	// mu guards every field below. LOCK ORDERING: it is held while a
	// Request's Veto runs, so a Veto may take its caller's locks (stack's
	// binds gVisor endpoints, under gVisor's own) but must not call the
	// Pool; no other lock of portalloc's exists.
	mu sync.Mutex
	// bm has a bit set for each blocked port: held, or excluded.
	bm bitmap
	// excluded maps each excluded port to whether it is also held.
	excluded map[uint16]bool
	rng      Range
	policy   Policy
	// cursor is the next port the Sequential policy tries, in
	// [rng.First, rng.Last+1]; Last+1 means "wrap before the next try".
	cursor int
	// free counts the clear bits of bm inside rng.
	free int
	// inUse counts held ports, in and out of rng.
	inUse int
	// excludedInRange counts excluded ports inside rng.
	excludedInRange int
	stats           Stats
	exhausted       *ExhaustedError // the last one returned, if any
	rand            *rand.Rand
	randomStart     bool

	// Hash policy state, allocated on first use.
	table         *[hashTableSize]uint16
	key0, key1    uint64 // SipHash key, drawn from rand
	bits          uint64 // random bits from rand not used yet ...
	nbits         int    // ... and how many there are
	rekeyInterval time.Duration
	keyedAt       time.Time        // when the key was drawn
	now           func() time.Time // PoolConfig.Now; nil means the real clock

	// pd is the per-destination state, nil unless PoolConfig.Sharing is
	// PerDestination. With it, bm also has the ports that
	// connections hold set (perdest.go).
	pd *perDest
}

// NewPool returns a pool for proto. It fails, naming the field, if cfg is
// invalid.
func NewPool(proto Protocol, cfg PoolConfig) (*Pool, error) {
	if proto >= numProtocols {
		return nil, fmt.Errorf("portalloc: unknown protocol %d; want tcp, udp, sctp or icmp", proto)
	}
	if cfg.Range == (Range{}) {
		cfg.Range = IANA
	}
	if err := cfg.Range.check(); err != nil {
		return nil, fmt.Errorf("portalloc: %s pool: PoolConfig.Range %s: %v", proto, cfg.Range, err)
	}
	if cfg.Policy > Hash {
		return nil, fmt.Errorf("portalloc: %s pool: PoolConfig.Policy %d is unknown; want sequential, random or hash", proto, cfg.Policy)
	}
	src := cfg.Rand
	if src == nil {
		var seed [32]byte
		crand.Read(seed[:]) // never fails on Linux
		src = rand.NewChaCha8(seed)
	}
	p := &Pool{
		proto:         proto,
		excluded:      make(map[uint16]bool),
		rand:          rand.New(src),
		randomStart:   cfg.RandomStart,
		rekeyInterval: cfg.RekeyInterval,
		now:           cfg.Now,
	}
	if p.rekeyInterval == 0 {
		p.rekeyInterval = time.Minute
	}
	p.bm.init()
	switch cfg.Sharing {
	case SharingDefault, Exclusive:
	case PerDestination:
		p.pd = newPerDest()
	default:
		return nil, fmt.Errorf("portalloc: %s pool: PoolConfig.Sharing %d is unknown; want exclusive or per-destination", proto, cfg.Sharing)
	}
	p.setRangeLocked(cfg.Range)
	p.policy = cfg.Policy
	return p, nil
}

// Protocol returns the pool's protocol.
func (p *Pool) Protocol() Protocol { return p.proto }

// Allocate hands out a free port of the range according to the policy and
// marks it held until Release. When no port can be handed out it returns
// an *ExhaustedError (matching ErrExhausted and syscall.EADDRNOTAVAIL);
// this is decided in constant time when the range is full.
//
// On a per-destination pool, a request with a valid Remote takes a port
// that is not held toward that remote endpoint (nor reserved, excluded or
// allocated without a Remote), and holds it toward that endpoint only;
// its exhaustion error names the destination.
func (p *Pool) Allocate(req Request) (uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pd != nil && req.Remote.IsValid() {
		return p.allocateTowardLocked(req)
	}
	if p.free == 0 {
		return 0, p.exhaustedLocked(0, req.Retry)
	}
	var port, vetoed int
	switch p.policy {
	case Random:
		port, vetoed = p.pickRandomLocked(req.Veto)
	case Hash:
		port, vetoed = p.pickHashLocked(req, p.scanLocked)
	default:
		port, vetoed = p.pickSequentialLocked(req.Veto)
	}
	p.stats.Vetoes += uint64(vetoed)
	if port < 0 {
		// The veto refused every free port (the Random policy may have
		// asked about some of them more than once).
		return 0, p.exhaustedLocked(p.free, req.Retry)
	}
	p.bm.set(port)
	p.exclSetLocked(uint16(port))
	p.free--
	p.inUse++
	p.stats.Allocations++
	return uint16(port), nil
}

// exhaustedLocked counts a failed allocation (unless the caller will
// retry) and returns its error. While
// the pool stays full, callers retrying get the same *ExhaustedError, so
// that reporting exhaustion allocates nothing; a returned error is never
// modified.
func (p *Pool) exhaustedLocked(vetoed int, retry bool) error {
	if !retry {
		p.stats.Exhausted++
	}
	e := ExhaustedError{Protocol: p.proto, Range: p.rng, InUse: p.inUse, Excluded: p.excludedInRange, Vetoed: vetoed}
	if p.pd != nil {
		e.InUse += p.pd.shared
	}
	if p.exhausted == nil || *p.exhausted != e {
		p.exhausted = new(ExhaustedError)
		*p.exhausted = e
	}
	return p.exhausted
}

// nextFreeLocked returns the first free port of the range at or after
// from, wrapping to First once, and whether it wrapped. The range must
// have a free port.
func (p *Pool) nextFreeLocked(from int) (port int, wrapped bool) {
	if from <= int(p.rng.Last) {
		if q := p.bm.nextClear(from); q >= 0 && q <= int(p.rng.Last) {
			return q, false
		}
	}
	return p.bm.nextClear(int(p.rng.First)), true
}

// scanLocked walks the free ports of the range from start onwards,
// wrapping, and returns the first the veto accepts with the number it
// vetoed, or -1 if it vetoed all of them.
func (p *Pool) scanLocked(start int, veto func(uint16) bool) (port, vetoed int, wrapped bool) {
	q, w := p.nextFreeLocked(start)
	wrapped = w
	for veto != nil && veto(uint16(q)) {
		vetoed++
		if vetoed >= p.free {
			return -1, vetoed, wrapped
		}
		q, w = p.nextFreeLocked(q + 1)
		wrapped = wrapped || w
	}
	return q, vetoed, wrapped
}

func (p *Pool) pickSequentialLocked(veto func(uint16) bool) (int, int) {
	q, vetoed, wrapped := p.scanLocked(p.cursor, veto)
	if q < 0 {
		return -1, vetoed
	}
	if wrapped {
		p.stats.Wraps++
	}
	p.cursor = q + 1
	return q, vetoed
}

// pickRandomLocked picks uniformly among the free ports of the range.
//
// It first draws a few ports of the range and takes the first that is
// free, which is cheap while the range is not crowded. Every free port is
// equally likely to come out of a draw, so the result stays exactly
// uniform when it then falls back to selecting the k-th free port for a
// uniform k, which costs a bounded walk down the bitmap's counts.
func (p *Pool) pickRandomLocked(veto func(uint16) bool) (int, int) {
	vetoed := 0
	n := p.rng.Size()
	tries := 4
	if p.free*4 < n {
		tries = 0 // crowded: most draws would miss
	}
	for try := 0; try < tries; try++ {
		q := int(p.rng.First) + p.rand.IntN(n)
		if p.bm.test(q) {
			continue
		}
		if veto == nil || !veto(uint16(q)) {
			return q, vetoed
		}
		vetoed++
	}
	// A few independent uniform draws keep the choice uniform among the
	// ports the veto accepts (the draws above count among them); after
	// that, scan onwards from a uniform point so the call is bounded.
	first := int(p.rng.First)
	for try := 0; try < 4; try++ {
		q := p.bm.selectClearFrom(first, p.rand.IntN(p.free))
		if veto == nil || !veto(uint16(q)) {
			return q, vetoed
		}
		vetoed++
	}
	q := p.bm.selectClearFrom(first, p.rand.IntN(p.free))
	q, v, _ := p.scanLocked(q, veto)
	return q, vetoed + v
}

// pickHashLocked implements RFC 6056 Algorithm 4 with the 2022 Linux
// hardening: a 65536-entry counter table, random increments, and periodic
// re-keying. As in Linux, one keyed hash of (Local, Remote address, Remote
// port) gives both the secret offset (its high 32 bits) and the table
// index (its low 16 bits). scan finds the free ports from the start.
func (p *Pool) pickHashLocked(req Request, scan func(start int, veto func(uint16) bool) (int, int, bool)) (int, int) {
	if p.table == nil {
		p.table = new([hashTableSize]uint16)
		p.newKeyLocked()
	} else if p.rekeyInterval > 0 && p.sinceLocked(p.keyedAt) >= p.rekeyInterval {
		p.newKeyLocked()
		p.stats.Rekeys++
	}
	h := p.hashLocked(req)
	idx := h & (hashTableSize - 1)
	// The offset is the high 32 bits of h mapped onto [0, n) by a multiply
	// (Lemire's fast range reduction), and the counter is kept below n, so
	// no division is needed (unless SetRange shrank the range).
	n := p.rng.Size()
	off := int(uint64(uint32(h>>32)) * uint64(n) >> 32)
	off = reduce(off+int(p.table[idx]), n)
	start := int(p.rng.First) + off
	q, vetoed, _ := scan(start, req.Veto)
	if q < 0 {
		return -1, vetoed
	}
	dist := q - start
	if dist < 0 {
		dist += n
	}
	// Advance the counter past the port handed out, plus a random 0-7
	// when uncontended (Linux: max(dist, random) + 1). Keep it below n, so
	// that the next start is exactly that far on instead of jumping when
	// a 16-bit counter wraps at 65536.
	p.table[idx] = uint16(reduce(int(p.table[idx])+max(dist, p.rand3Locked())+1, n))
	return q, vetoed
}

// rand3Locked returns a uniform random number from 0 to 7. It draws 64
// bits from p.rand at a time and uses them three by three, since drawing
// from ChaCha8 costs as much as the rest of a Hash allocation.
func (p *Pool) rand3Locked() int {
	if p.nbits < 3 {
		p.bits, p.nbits = p.rand.Uint64(), 64
	}
	v := int(p.bits & 7)
	p.bits >>= 3
	p.nbits -= 3
	return v
}

// reduce returns x mod n for x >= 0, cheaply when x < 2n.
func reduce(x, n int) int {
	if x >= n {
		x -= n
		if x >= n {
			x %= n
		}
	}
	return x
}

// hashLocked returns the keyed hash of the connection identifiers of req.
// IPv4 pairs (IPv4-mapped IPv6 included: they are the same addresses on the
// wire) are hashed as 10 bytes, others as 34; SipHash includes the length,
// so the two encodings cannot collide.
func (p *Pool) hashLocked(req Request) uint64 {
	var k [34]byte
	var m []byte
	rport := req.Remote.Port()
	if l, r := req.Local.Unmap(), req.Remote.Addr().Unmap(); l.Is4() && r.Is4() {
		l4, r4 := l.As4(), r.As4()
		copy(k[0:4], l4[:])
		copy(k[4:8], r4[:])
		k[8], k[9] = byte(rport), byte(rport>>8)
		m = k[:10]
	} else {
		l16, r16 := l.As16(), r.As16()
		copy(k[0:16], l16[:])
		copy(k[16:32], r16[:])
		k[32], k[33] = byte(rport), byte(rport>>8)
		m = k[:34]
	}
	return sipHash24(p.key0, p.key1, m)
}

// sinceLocked returns the time elapsed since t. With the real clock it
// reads only the monotonic clock (time.Since), which costs half of what
// time.Now does; allocation with the Hash policy does this every time.
func (p *Pool) sinceLocked(t time.Time) time.Duration {
	if p.now != nil {
		return p.now().Sub(t)
	}
	return time.Since(t)
}

// newKeyLocked draws a new key, clears the counters and notes the time,
// from which the next periodic re-key is due. p.table must not be nil.
func (p *Pool) newKeyLocked() {
	p.key0, p.key1 = p.rand.Uint64(), p.rand.Uint64()
	clear(p.table[:])
	if p.now != nil {
		p.keyedAt = p.now()
	} else {
		p.keyedAt = time.Now()
	}
}

// Rekey replaces the Hash policy's secret key and clears its counters at
// once, as the periodic re-keying does, and restarts the re-keying
// interval. It counts in Stats.Rekeys whatever the policy. (The key drawn
// when the Hash policy is first used is not a re-key and is not counted.)
func (p *Pool) Rekey() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.table == nil {
		p.table = new([hashTableSize]uint16)
	}
	p.newKeyLocked()
	p.stats.Rekeys++
}

// Reserve claims a specific port, as an explicit bind does. Any port from 1
// to 65535 can be reserved, inside the range or not, excluded or not. It
// fails with an error matching syscall.EADDRINUSE if the port is held.
func (p *Pool) Reserve(port uint16) error {
	if port == 0 {
		return &PortError{Op: "reserve", Protocol: p.proto, Port: port, Err: ErrInvalidPort}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if held, ok := p.excluded[port]; ok {
		if held || p.sharedLocked(port) {
			return &PortError{Op: "reserve", Protocol: p.proto, Port: port, Err: syscall.EADDRINUSE}
		}
		p.excluded[port] = true
	} else {
		if !p.bm.set(int(port)) {
			return &PortError{Op: "reserve", Protocol: p.proto, Port: port, Err: syscall.EADDRINUSE}
		}
		if p.rng.Contains(port) {
			p.free--
		}
		p.exclSetLocked(port)
	}
	p.inUse++
	p.stats.Reservations++
	return nil
}

// Release returns a held port, whether it was allocated or reserved.
// Releasing a port that is not held fails with an error matching
// ErrNotHeld and changes nothing.
func (p *Pool) Release(port uint16) error {
	if port == 0 {
		return &PortError{Op: "release", Protocol: p.proto, Port: port, Err: ErrInvalidPort}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if held, ok := p.excluded[port]; ok {
		if !held {
			return &PortError{Op: "release", Protocol: p.proto, Port: port, Err: ErrNotHeld}
		}
		p.excluded[port] = false
	} else {
		if p.sharedLocked(port) || !p.bm.clear(int(port)) {
			// Held by connections only: they release with ReleaseTo.
			return &PortError{Op: "release", Protocol: p.proto, Port: port, Err: ErrNotHeld}
		}
		if p.rng.Contains(port) {
			p.free++
		}
		p.exclClearLocked(port)
	}
	p.inUse--
	p.stats.Releases++
	return nil
}

// Held reports whether port is held: for every destination, or on a
// per-destination pool by at least one connection.
func (p *Pool) Held(port uint16) bool {
	if port == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heldLocked(port)
}

func (p *Pool) heldLocked(port uint16) bool {
	if held, ok := p.excluded[port]; ok {
		return held || p.sharedLocked(port)
	}
	return p.bm.test(int(port))
}

// Exclude keeps the ports of r from being allocated automatically, like
// Linux's ip_local_reserved_ports. They can still be reserved explicitly.
// Excluding a held port is allowed; it stays held. Excluding an excluded
// port is a no-op.
func (p *Pool) Exclude(r Range) error {
	if err := r.check(); err != nil {
		return fmt.Errorf("portalloc: exclude %s ports %s: %v", p.proto, r, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for port := int(r.First); port <= int(r.Last); port++ {
		if _, ok := p.excluded[uint16(port)]; ok {
			continue
		}
		blocked := !p.bm.set(port)
		// held: held for every destination (not by connections).
		held := blocked && !p.sharedLocked(uint16(port))
		p.excluded[uint16(port)] = held
		p.exclSetLocked(uint16(port))
		if p.rng.Contains(uint16(port)) {
			p.excludedInRange++
			if !blocked {
				p.free--
			}
		}
	}
	p.recountLocked()
	return nil
}

// Unexclude makes the ports of r available for automatic allocation again.
// Ports of r that are not excluded are left alone.
func (p *Pool) Unexclude(r Range) error {
	if err := r.check(); err != nil {
		return fmt.Errorf("portalloc: unexclude %s ports %s: %v", p.proto, r, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for port := int(r.First); port <= int(r.Last); port++ {
		held, ok := p.excluded[uint16(port)]
		if !ok {
			continue
		}
		delete(p.excluded, uint16(port))
		in := p.rng.Contains(uint16(port))
		if in {
			p.excludedInRange--
		}
		if !held {
			p.exclClearLocked(uint16(port))
			if !p.sharedLocked(uint16(port)) {
				p.bm.clear(port)
				if in {
					p.free++
				}
			}
		}
	}
	p.recountLocked()
	return nil
}

// SetRange changes the range at run time. Ports held outside the new range
// stay held until released. The cursor moves into the new range if it is
// outside it.
func (p *Pool) SetRange(r Range) error {
	if err := r.check(); err != nil {
		return fmt.Errorf("portalloc: set %s range %s: %v", p.proto, r, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setRangeLocked(r)
	return nil
}

func (p *Pool) setRangeLocked(r Range) {
	p.rng = r
	p.free = p.bm.clearBefore(int(r.Last)+1) - p.bm.clearBefore(int(r.First))
	p.excludedInRange = 0
	for port := range p.excluded {
		if r.Contains(port) {
			p.excludedInRange++
		}
	}
	if p.cursor < int(r.First) || p.cursor > int(r.Last) {
		p.cursor = int(r.First)
		if p.randomStart {
			p.cursor += p.rand.IntN(r.Size())
		}
	}
	p.recountLocked()
}

// Range returns the current range.
func (p *Pool) Range() Range {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng
}

// SetPolicy changes the policy at run time.
func (p *Pool) SetPolicy(pol Policy) error {
	if pol > Hash {
		return fmt.Errorf("portalloc: set %s policy: unknown policy %d; want sequential, random or hash", p.proto, pol)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.policy = pol
	return nil
}

// Stats returns the pool's counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// InUse returns the number of held ports (on a per-destination pool, a
// port held by connections counts once).
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pd != nil {
		return p.inUse + p.pd.shared
	}
	return p.inUse
}

// Snapshot returns a consistent copy of the pool's state.
func (p *Pool) Snapshot() Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Snapshot{
		Protocol: p.proto,
		Range:    p.rng,
		Policy:   p.policy,
		Cursor:   uint16(p.cursor),
		InUse:    p.inUse,
		Ports:    make([]uint16, 0, p.inUse),
		Free:     p.free,
		Stats:    p.stats,
	}
	if p.cursor > int(p.rng.Last) {
		s.Cursor = p.rng.First
	}
	if pd := p.pd; pd != nil {
		s.PerDestination = true
		s.InUse += pd.shared
		s.Connections = pd.conns
		s.Destinations = pd.ndests
		s.Shared = pd.shared
		s.FreeToNew = pd.free
	}
	// Held ports are the set bits, less port 0 and the excluded ports that
	// are not held: clear those in a copy rather than look every set bit
	// up in the map.
	ex := make([]uint16, 0, len(p.excluded))
	held := new([numWords]uint64)
	*held = p.bm.leaf
	held[0] &^= 1
	for port, h := range p.excluded {
		ex = append(ex, port)
		if !h && !p.sharedLocked(port) {
			held[port>>6] &^= 1 << (port & 63)
		}
	}
	for w, word := range held {
		for word != 0 {
			s.Ports = append(s.Ports, uint16(w<<6+bits.TrailingZeros64(word)))
			word &= word - 1
		}
	}
	slices.Sort(ex)
	for _, port := range ex {
		if n := len(s.Excluded); n > 0 && s.Excluded[n-1].Last+1 == port {
			s.Excluded[n-1].Last = port
			continue
		}
		s.Excluded = append(s.Excluded, Range{port, port})
	}
	return s
}
