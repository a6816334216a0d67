package testnet

import "sync"

// Group starts goroutines until it is closed, and Close waits for those
// it started: a fake of the lifecycle a gateway gives the work it starts
// (its Go method refuses new work once it is closing).
type Group struct {
	mu     sync.Mutex // guards closed, and wg's Add; a leaf
	closed bool
	wg     sync.WaitGroup
}

// Go runs fn on a goroutine of the group's and reports true, or reports
// false once Close has been called.
func (g *Group) Go(fn func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// Close refuses new goroutines and waits for those started.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}
