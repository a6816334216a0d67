package portalloc

import "math/bits"

// Geometry of the port bitmap. Every pool covers the whole 16-bit port
// space so that ports held outside the current range (after SetRange) are
// still tracked.
const (
	numPorts  = 1 << 16
	numWords  = numPorts / 64 // 1024 leaf words
	numGroups = numWords / 64 // 16 summary words, one per 4096 ports
)

// bitmap is a three-level bitmap over all 65536 ports. A set leaf bit means
// the port is blocked: held, or excluded from automatic allocation. The
// upper levels let nextClear and selectClear run in a bounded number of
// steps whatever the occupancy, which is what keeps allocation O(1).
//
// Its size is 8 KiB of leaves plus 162 bytes of summaries.
type bitmap struct {
	leaf [numWords]uint64
	// full has bit i set when leaf[i] has no clear bit.
	full [numGroups]uint64
	// top has bit g set when full[g] is all ones (4096 ports all blocked).
	top uint16
	// freeIn counts the clear bits in each group of 4096 ports.
	freeIn [numGroups]uint16
}

func (b *bitmap) init() {
	for g := range b.freeIn {
		b.freeIn[g] = 4096
	}
	b.set(0) // port 0 is never handed out.
}

func (b *bitmap) test(p int) bool { return b.leaf[p>>6]&(1<<(p&63)) != 0 }

// set marks p blocked and reports whether it was clear before.
func (b *bitmap) set(p int) bool {
	i := p >> 6
	m := uint64(1) << (p & 63)
	if b.leaf[i]&m != 0 {
		return false
	}
	b.leaf[i] |= m
	g := i >> 6
	b.freeIn[g]--
	if b.leaf[i] == ^uint64(0) {
		b.full[g] |= 1 << (i & 63)
		if b.full[g] == ^uint64(0) {
			b.top |= 1 << g
		}
	}
	return true
}

// clear marks p free and reports whether it was set before.
func (b *bitmap) clear(p int) bool {
	i := p >> 6
	m := uint64(1) << (p & 63)
	if b.leaf[i]&m == 0 {
		return false
	}
	b.leaf[i] &^= m
	g := i >> 6
	b.freeIn[g]++
	b.full[g] &^= 1 << (i & 63)
	b.top &^= 1 << g
	return true
}

// nextClear returns the first clear bit at or after p, or -1 if there is
// none up to 65535. It inspects at most one leaf, one summary word and the
// top word, plus one leaf and summary word to resolve the answer.
func (b *bitmap) nextClear(p int) int {
	if p >= numPorts {
		return -1
	}
	i := p >> 6
	if m := ^b.leaf[i] & (^uint64(0) << (p & 63)); m != 0 {
		return i<<6 + bits.TrailingZeros64(m)
	}
	i++
	if i >= numWords {
		return -1
	}
	g := i >> 6
	if m := ^b.full[g] & (^uint64(0) << (i & 63)); m != 0 {
		w := g<<6 + bits.TrailingZeros64(m)
		return w<<6 + bits.TrailingZeros64(^b.leaf[w])
	}
	g++
	if g >= numGroups {
		return -1
	}
	t := ^uint32(b.top) & 0xffff & (^uint32(0) << g)
	if t == 0 {
		return -1
	}
	g = bits.TrailingZeros32(t)
	w := g<<6 + bits.TrailingZeros64(^b.full[g])
	return w<<6 + bits.TrailingZeros64(^b.leaf[w])
}

// clearBefore counts the clear bits in [0, p). p may be 65536.
func (b *bitmap) clearBefore(p int) int {
	g := p >> 12
	n := 0
	for k := 0; k < g; k++ {
		n += int(b.freeIn[k])
	}
	if g >= numGroups {
		return n
	}
	i := p >> 6
	for w := g << 6; w < i; w++ {
		n += 64 - bits.OnesCount64(b.leaf[w])
	}
	if r := p & 63; r != 0 {
		n += bits.OnesCount64(^b.leaf[i] & (1<<r - 1))
	}
	return n
}

// selectClear returns the k-th (0-based) clear bit of the whole bitmap, or
// -1 if there are not that many.
func (b *bitmap) selectClear(k int) int {
	g := 0
	for ; g < numGroups; g++ {
		if f := int(b.freeIn[g]); k < f {
			break
		} else {
			k -= f
		}
	}
	if g == numGroups {
		return -1
	}
	for w := g << 6; w < (g+1)<<6; w++ {
		m := ^b.leaf[w]
		c := bits.OnesCount64(m)
		if k >= c {
			k -= c
			continue
		}
		return w<<6 + selectInWord(m, k)
	}
	return -1 // unreachable while freeIn is consistent
}

// selectInWord returns the index of the k-th set bit of m (k < popcount(m)).
func selectInWord(m uint64, k int) int {
	off := 0
	for width := 32; width >= 1; width >>= 1 {
		lo := m & (1<<uint(width) - 1)
		if c := bits.OnesCount64(lo); k >= c {
			k -= c
			m >>= uint(width)
			off += width
		} else {
			m = lo
		}
	}
	return off
}
