//go:build linux

package sandbox

import (
	"io"
	"sync"
)

// Buffers for carrying TCP streams. A flow starts with a small buffer and
// trades it for a large one the first time a read fills it: an idle or
// interactive flow (most of them) holds smallBufSize per direction for as
// long as it lives, and a bulk one reads largeBufSize at a time, which
// halves the system calls on the host side and hands gVisor's TCP enough
// to send 64 KiB segments back to back.
//
// Measured with bench/sandbox.sh's download (iperf3 -R, MTU 65520, host
// loopback → guest): a fixed 64 KiB buffer gave 8.6-9.3 Gbps, 256 KiB
// 10.3-10.9 in the same run (2026-11-25, commit af78b43).
const (
	smallBufSize = 16 << 10
	largeBufSize = 256 << 10
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, largeBufSize); return &b }}
	// udpBufs hold the largest datagram.
	udpBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}
)

// copyStream copies src to dst until src reports EOF or an error, as
// io.Copy does (EOF is not an error), with the buffers described above.
func copyStream(dst io.Writer, src io.Reader) (written int64, err error) {
	pool := &smallBufs
	buf := pool.Get().(*[]byte)
	defer func() { pool.Put(buf) }()
	for {
		n, rerr := src.Read(*buf)
		if n > 0 {
			w, werr := dst.Write((*buf)[:n])
			written += int64(w)
			if werr != nil {
				return written, werr
			}
			if w != n {
				return written, io.ErrShortWrite
			}
			if n == len(*buf) && pool == &smallBufs {
				pool.Put(buf)
				pool = &largeBufs
				buf = pool.Get().(*[]byte)
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return written, nil
			}
			return written, rerr
		}
	}
}
