// Package portfwdtest provides a portfwd.Manager for tests of the code
// around forwards (the control API, the command line): it keeps forwards
// in memory, listens on nothing, and fails as a sandbox gateway does.
package portfwdtest

import (
	"fmt"
	"sort"
	"sync"

	"github.com/ustacknet/ustack/portfwd"
)

// Manager is an in-memory portfwd.Manager. Its errors wrap
// portfwd.ErrExists and portfwd.ErrNotFound as a gateway's do. It is safe
// for concurrent use.
type Manager struct {
	mu     sync.Mutex // guards the fields below
	active map[portfwd.Forward]bool
	next   error // if set, the next AddForward fails with it
}

var _ portfwd.Manager = (*Manager)(nil)

// NewManager returns a Manager with no forwards.
func NewManager() *Manager {
	return &Manager{active: make(map[portfwd.Forward]bool)}
}

// Forwards lists the forwards, sorted by String.
func (m *Manager) Forwards() []portfwd.Forward {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]portfwd.Forward, 0, len(m.active))
	for f := range m.active {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// AddForward adds f, or fails with the error given to FailNext, or one
// matching portfwd.ErrExists if f is there already.
func (m *Manager) AddForward(f portfwd.Forward) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.next; err != nil {
		m.next = nil
		return err
	}
	if m.active[f] {
		return fmt.Errorf("portfwdtest: forward %s: %w", f, portfwd.ErrExists)
	}
	m.active[f] = true
	return nil
}

// RemoveForward removes f, or fails with an error matching
// portfwd.ErrNotFound if f is not there.
func (m *Manager) RemoveForward(f portfwd.Forward) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active[f] {
		return fmt.Errorf("portfwdtest: forward %s: %w", f, portfwd.ErrNotFound)
	}
	delete(m.active, f)
	return nil
}

// FailNext makes the next AddForward fail with err, adding nothing.
func (m *Manager) FailNext(err error) {
	m.mu.Lock()
	m.next = err
	m.mu.Unlock()
}
