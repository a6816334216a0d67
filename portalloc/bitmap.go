package portalloc

import "math/bits"

// Geometry of the port bitmap. Every pool covers the whole 16-bit port
// space so that ports held outside the current range (after SetRange) are
// still tracked.
const (
	numPorts      = 1 << 16
	numWords      = numPorts / 64 // 1024 leaf words
	numGroups     = numWords / 64 // 16 summary words, one per 4096 ports
	wordsPerChunk = 8             // a chunk is 512 ports
	numChunks     = numWords / wordsPerChunk
	chunksPerGrp  = numChunks / numGroups
)

// bitmap is a three-level bitmap over all 65536 ports. A set leaf bit means
// the port is blocked: held, or excluded from automatic allocation. The
// upper levels let nextClear and selectClear run in a bounded number of
// steps whatever the occupancy, which is what keeps allocation O(1).
//
// Its size is 8 KiB of leaves plus 418 bytes of summaries and counts.
type bitmap struct {
	leaf [numWords]uint64
	// full has bit i set when leaf[i] has no clear bit.
	full [numGroups]uint64
	// top has bit g set when full[g] is all ones (4096 ports all blocked).
	top uint16
	// freeIn counts the clear bits in each group of 4096 ports, and
	// freeInChunk in each chunk of 512, for selectClear and clearBefore.
	freeIn      [numGroups]uint16
	freeInChunk [numChunks]uint16
}

func (b *bitmap) init() {
	for g := range b.freeIn {
		b.freeIn[g] = 4096
	}
	for c := range b.freeInChunk {
		b.freeInChunk[c] = 64 * wordsPerChunk
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
	b.freeInChunk[i/wordsPerChunk]--
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
	b.freeInChunk[i/wordsPerChunk]++
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

// clearBefore counts the clear bits in [0, p). p may be 65536. It takes at
// most 16 group, 7 chunk and 7 word steps.
func (b *bitmap) clearBefore(p int) int {
	g := p >> 12
	n := 0
	for k := 0; k < g; k++ {
		n += int(b.freeIn[k])
	}
	if g >= numGroups {
		return n
	}
	return n + b.clearInGroupBefore(p)
}

// clearInGroupBefore counts the clear bits of p's group of 4096 ports that
// come before p. It takes at most 7 chunk and 7 word steps.
func (b *bitmap) clearInGroupBefore(p int) int {
	n := 0
	i := p >> 6
	c := i / wordsPerChunk
	for k := (p >> 12) * chunksPerGrp; k < c; k++ {
		n += int(b.freeInChunk[k])
	}
	for w := c * wordsPerChunk; w < i; w++ {
		n += 64 - bits.OnesCount64(b.leaf[w])
	}
	if r := p & 63; r != 0 {
		n += bits.OnesCount64(^b.leaf[i] & (1<<r - 1))
	}
	return n
}

// selectClear returns the k-th (0-based) clear bit of the whole bitmap, or
// -1 if there are not that many.
func (b *bitmap) selectClear(k int) int { return b.selectClearFrom(0, k) }

// selectClearFrom returns the k-th (0-based) clear bit at or after p, or -1
// if there are not that many. p must be below 65536. It takes at most 7+16
// group and chunk steps, 7+8 word steps and a branch-free select in a word.
func (b *bitmap) selectClearFrom(p, k int) int {
	if k < 0 {
		return -1
	}
	// Select from the start of p's group, skipping the clear bits before p.
	g := p >> 12
	k += b.clearInGroupBefore(p)
	for ; g < numGroups; g++ {
		f := int(b.freeIn[g])
		if k < f {
			break
		}
		k -= f
	}
	if g == numGroups {
		return -1
	}
	c := g * chunksPerGrp
	for ; c < (g+1)*chunksPerGrp-1; c++ {
		f := int(b.freeInChunk[c])
		if k < f {
			break
		}
		k -= f
	}
	for w := c * wordsPerChunk; w < (c+1)*wordsPerChunk; w++ {
		m := ^b.leaf[w]
		n := bits.OnesCount64(m)
		if k < n {
			return w<<6 + selectInWord(m, k)
		}
		k -= n
	}
	return -1 // unreachable while the counts are consistent
}

// selectInWord returns the index of the k-th set bit of m (k < popcount(m)).
//
// It is branch-free, since with a random k branches would be mispredicted
// half the time: a broadword prefix count of the bytes finds the byte that
// holds the bit (Vigna, "Broadword implementation of rank/select queries",
// 2008), then a table finds the bit in the byte.
func selectInWord(m uint64, k int) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	// Popcount of each byte, then prefix sums: byte i of s is the number of
	// set bits in bytes 0 through i (at most 64, so it fits in 7 bits).
	s := m - (m>>1)&0x5555555555555555
	s = s&0x3333333333333333 + (s>>2)&0x3333333333333333
	s = (s + s>>4) & 0x0f0f0f0f0f0f0f0f
	s *= ones
	// A byte's high bit survives the subtraction when its prefix sum is
	// at most k: those bytes come before the one holding the bit.
	before := uint64(k)*ones | highs
	i := bits.OnesCount64((before - s) & highs)
	// Set bits in the bytes before byte i.
	var r int
	if i > 0 {
		r = int(s >> (8*i - 8) & 0xff)
	}
	return 8*i + int(selectInByte[(m>>(8*i))&0xff][k-r])
}

// selectInByte[b][k] is the index of the k-th set bit of b.
var selectInByte = func() (t [256][8]uint8) {
	for b := range 256 {
		k := 0
		for bit := range 8 {
			if b&(1<<bit) != 0 {
				t[b][k] = uint8(bit)
				k++
			}
		}
	}
	return t
}()
