// Package testnet holds small network helpers shared by tests and
// benchmarks.
package testnet

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Serve runs handle on every connection l accepts, each in its own
// goroutine, until the test or benchmark ends; then it closes l and every
// connection still open, and waits for the handlers. Serve closes each
// connection after its handler returns.
func Serve(tb testing.TB, l net.Listener, handle func(net.Conn)) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns; a leaf
		conns = map[net.Conn]bool{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// ServeUDPEcho sends every datagram pc receives back to its sender until
// the test or benchmark ends; then it closes pc and waits.
func ServeUDPEcho(tb testing.TB, pc net.PacketConn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:n], from)
		}
	}()
	tb.Cleanup(func() { pc.Close(); <-done })
}

// StallBound is how long Progress lets a read or a write wait for a
// single byte: a bound on a stall, not on a transfer, whose duration a
// loaded machine and the race detector stretch.
const StallBound = 30 * time.Second

// Progress wraps c so that every Read and Write gets a deadline of
// StallBound from its start: a transfer through it fails only when it
// stops moving, however long it takes as a whole.
func Progress(c net.Conn) net.Conn { return progressConn{c} }

type progressConn struct{ net.Conn }

func (p progressConn) Read(b []byte) (int, error) {
	p.Conn.SetReadDeadline(time.Now().Add(StallBound))
	return p.Conn.Read(b)
}

func (p progressConn) Write(b []byte) (int, error) {
	// In pieces, each with its own deadline: one large write may
	// legitimately take longer than the bound in all.
	n := 0
	for n < len(b) {
		k := min(len(b)-n, 256<<10)
		p.Conn.SetWriteDeadline(time.Now().Add(StallBound))
		w, err := p.Conn.Write(b[n : n+k])
		n += w
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
