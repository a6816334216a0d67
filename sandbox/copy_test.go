//go:build linux

package sandbox

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// chunkReader returns data in reads of at most chunk bytes (0: as much as
// asked), recording the buffer size it was offered each time.
type chunkReader struct {
	data    []byte
	chunk   int
	offered []int
	err     error // returned once data is exhausted, instead of io.EOF
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.offered = append(r.offered, len(p))
	if len(r.data) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n := len(p)
	if r.chunk > 0 {
		n = min(n, r.chunk)
	}
	n = copy(p[:n], r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestCopyStream(t *testing.T) {
	data := make([]byte, 3<<20+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	t.Run("bulk trades up", func(t *testing.T) {
		r := &chunkReader{data: data}
		var w bytes.Buffer
		n, err := copyStream(&w, r)
		if err != nil || n != int64(len(data)) || sha256.Sum256(w.Bytes()) != sha256.Sum256(data) {
			t.Fatalf("copied %d bytes, err %v; want %d bytes intact", n, err, len(data))
		}
		if r.offered[0] != smallBufSize || r.offered[1] != largeBufSize || r.offered[len(r.offered)-1] != largeBufSize {
			t.Errorf("buffer sizes offered: first %d, second %d, last %d; want %d, then %d from the first full read on",
				r.offered[0], r.offered[1], r.offered[len(r.offered)-1], smallBufSize, largeBufSize)
		}
	})
	t.Run("interactive keeps the small buffer", func(t *testing.T) {
		r := &chunkReader{data: data[:100000], chunk: 1000}
		var w bytes.Buffer
		if n, err := copyStream(&w, r); err != nil || !bytes.Equal(w.Bytes(), data[:100000]) {
			t.Fatalf("copied %d bytes, err %v", n, err)
		}
		for i, o := range r.offered {
			if o != smallBufSize {
				t.Fatalf("read %d offered %d bytes, want %d throughout", i, o, smallBufSize)
			}
		}
	})
	t.Run("read error", func(t *testing.T) {
		boom := errors.New("boom")
		r := &chunkReader{data: data[:5000], err: boom}
		var w bytes.Buffer
		n, err := copyStream(&w, r)
		if !errors.Is(err, boom) || n != 5000 {
			t.Fatalf("got %d, %v; want 5000, boom", n, err)
		}
	})
	t.Run("write error", func(t *testing.T) {
		r := &chunkReader{data: data}
		n, err := copyStream(failingWriter{after: 100}, r)
		if !errors.Is(err, errWrite) || n != 100 {
			t.Fatalf("got %d, %v; want 100, %v", n, err, errWrite)
		}
	})
}

var errWrite = errors.New("write failed")

type failingWriter struct{ after int }

func (f failingWriter) Write(p []byte) (int, error) { return min(len(p), f.after), errWrite }
