package portalloc

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"testing"
)

// checkSummaries reports whether the summary levels and counts of b agree
// with its leaves.
func (b *bitmap) checkSummaries() error {
	var top uint16
	for g := range numGroups {
		var full uint64
		groupFree := 0
		for c := g * chunksPerGrp; c < (g+1)*chunksPerGrp; c++ {
			chunkFree := 0
			for w := c * wordsPerChunk; w < (c+1)*wordsPerChunk; w++ {
				chunkFree += 64 - bits.OnesCount64(b.leaf[w])
				if b.leaf[w] == ^uint64(0) {
					full |= 1 << (w & 63)
				}
			}
			if int(b.freeInChunk[c]) != chunkFree {
				return fmt.Errorf("freeInChunk[%d] = %d, leaves have %d clear bits", c, b.freeInChunk[c], chunkFree)
			}
			groupFree += chunkFree
		}
		if int(b.freeIn[g]) != groupFree {
			return fmt.Errorf("freeIn[%d] = %d, leaves have %d clear bits", g, b.freeIn[g], groupFree)
		}
		if b.full[g] != full {
			return fmt.Errorf("full[%d] = %#x, leaves say %#x", g, b.full[g], full)
		}
		if full == ^uint64(0) {
			top |= 1 << g
		}
	}
	if b.top != top {
		return fmt.Errorf("top = %#x, leaves say %#x", b.top, top)
	}
	return nil
}

// TestBitmapAgainstModel checks nextClear, clearBefore and selectClear
// against a plain []bool after random sets and clears.
func TestBitmapAgainstModel(t *testing.T) {
	var b bitmap
	b.init()
	r := rand.New(rand.NewPCG(3, 4))
	ref := make([]bool, numPorts)
	ref[0] = true
	for i := 0; i < 200000; i++ {
		port := r.IntN(numPorts-1) + 1
		if r.IntN(3) == 0 {
			if got, want := b.clear(port), ref[port]; got != want {
				t.Fatalf("clear(%d) = %v, want %v", port, got, want)
			}
			ref[port] = false
		} else {
			if got, want := b.set(port), !ref[port]; got != want {
				t.Fatalf("set(%d) = %v, want %v", port, got, want)
			}
			ref[port] = true
		}
		if i%997 != 0 {
			continue
		}
		if err := b.checkSummaries(); err != nil {
			t.Fatalf("after %d operations: %v", i+1, err)
		}
		from := r.IntN(numPorts)
		want := -1
		for q := from; q < numPorts; q++ {
			if !ref[q] {
				want = q
				break
			}
		}
		if got := b.nextClear(from); got != want {
			t.Fatalf("nextClear(%d) = %d, want %d", from, got, want)
		}
		n := 0
		for q := 0; q < from; q++ {
			if !ref[q] {
				n++
			}
		}
		if got := b.clearBefore(from); got != n {
			t.Fatalf("clearBefore(%d) = %d, want %d", from, got, n)
		}
		if got := b.selectClear(n); got != want {
			t.Fatalf("selectClear(%d) = %d, want %d", n, got, want)
		}
		// The j-th clear bit at or after from.
		j := r.IntN(64)
		want = -1
		for q, seen := from, 0; q < numPorts; q++ {
			if !ref[q] {
				if seen == j {
					want = q
					break
				}
				seen++
			}
		}
		if got := b.selectClearFrom(from, j); got != want {
			t.Fatalf("selectClearFrom(%d, %d) = %d, want %d", from, j, got, want)
		}
	}
}

// TestBitmapFullGroups fills whole 4096-port groups so that the top level
// is used, then checks nextClear across them and at the end of the space.
func TestBitmapFullGroups(t *testing.T) {
	var b bitmap
	b.init()
	for p := 1; p < numPorts; p++ {
		b.set(p)
	}
	if got := b.nextClear(0); got != -1 {
		t.Fatalf("nextClear(0) on a full bitmap = %d, want -1", got)
	}
	if got := b.clearBefore(numPorts); got != 0 {
		t.Fatalf("clearBefore(65536) on a full bitmap = %d, want 0", got)
	}
	if b.top != 0xffff {
		t.Fatalf("top = %#x, want 0xffff", b.top)
	}
	if err := b.checkSummaries(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		clear int
		from  int
		want  int
	}{
		{"same word", 100, 65, 100},
		{"later word same group", 1000, 70, 1000},
		{"later group", 40000, 5, 40000},
		{"last port", 65535, 1, 65535},
		{"from 65535", 65535, 65535, 65535},
		{"before from", 10, 11, -1},
		{"past the end", 10, numPorts, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.clear(tc.clear)
			defer b.set(tc.clear)
			if got := b.nextClear(tc.from); got != tc.want {
				t.Errorf("nextClear(%d) = %d, want %d", tc.from, got, tc.want)
			}
			if got := b.selectClear(0); got != tc.clear {
				t.Errorf("selectClear(0) = %d, want %d", got, tc.clear)
			}
			if got := b.selectClear(1); got != -1 {
				t.Errorf("selectClear(1) = %d, want -1", got)
			}
		})
	}
}

func TestSelectInWord(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 10000; i++ {
		m := r.Uint64()
		k := 0
		for bit := 0; bit < 64; bit++ {
			if m&(1<<bit) == 0 {
				continue
			}
			if got := selectInWord(m, k); got != bit {
				t.Fatalf("selectInWord(%#x, %d) = %d, want %d", m, k, got, bit)
			}
			k++
		}
	}
}

// sipVectors are the SipHash-2-4 reference outputs (vectors.h of the
// reference implementation) for the key 00 01 ... 0f and the messages
// 00 01 ... (i-1) of length i.
var sipVectors = [64]uint64{
	0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
	0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
	0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
	0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
	0x3f2acc7f57c29bdb, 0x699ae9f52cbe4794, 0x4bc1b3f0968dd39c, 0xbb6dc91da77961bd,
	0xbed65cf21aa2ee98, 0xd0f2cbb02e3b67c7, 0x93536795e3a33e88, 0xa80c038ccd5ccec8,
	0xb8ad50c6f649af94, 0xbce192de8a85b8ea, 0x17d835b85bbb15f3, 0x2f2e6163076bcfad,
	0xde4daaaca71dc9a5, 0xa6a2506687956571, 0xad87a3535c49ef28, 0x32d892fad841c342,
	0x7127512f72f27cce, 0xa7f32346f95978e3, 0x12e0b01abb051238, 0x15e034d40fa197ae,
	0x314dffbe0815a3b4, 0x027990f029623981, 0xcadcd4e59ef40c4d, 0x9abfd8766a33735c,
	0x0e3ea96b5304a7d0, 0xad0c42d6fc585992, 0x187306c89bc215a9, 0xd4a60abcf3792b95,
	0xf935451de4f21df2, 0xa9538f0419755787, 0xdb9acddff56ca510, 0xd06c98cd5c0975eb,
	0xe612a3cb9ecba951, 0xc766e62cfcadaf96, 0xee64435a9752fe72, 0xa192d576b245165a,
	0x0a8787bf8ecb74b2, 0x81b3e73d20b49b6f, 0x7fa8220ba3b2ecea, 0x245731c13ca42499,
	0xb78dbfaf3a8d83bd, 0xea1ad565322a1a0b, 0x60e61c23a3795013, 0x6606d7e446282b93,
	0x6ca4ecb15c5f91e1, 0x9f626da15c9625f3, 0xe51b38608ef25f57, 0x958a324ceb064572,
}

func TestSipHash24Vectors(t *testing.T) {
	const k0, k1 = 0x0706050403020100, 0x0f0e0d0c0b0a0908
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = byte(i)
	}
	for n, want := range sipVectors {
		if got := sipHash24(k0, k1, msg[:n]); got != want {
			t.Errorf("sipHash24(len %d) = %#016x, want %#016x", n, got, want)
		}
	}
}
