package stack

import "gvisor.dev/gvisor/pkg/waiter"

// eventWait is a waiter-queue entry for a loop that tries a non-blocking
// gVisor call and waits for the endpoint's events when it would block.
// The entry is made and registered on the first wait only, so that a
// call that does not block costs neither an allocation nor a
// registration.
type eventWait struct {
	wq    *waiter.Queue
	mask  waiter.EventMask
	entry *waiter.Entry // nil until registered
	ch    chan struct{} // receives the events, once registered
}

// register registers the entry unless it is already, and reports whether
// it did. The caller then tries its call again before waiting on ch, so
// that an event between the first try and the registration is not
// missed.
func (w *eventWait) register() bool {
	if w.entry != nil {
		return false
	}
	w.entry = new(waiter.Entry)
	*w.entry, w.ch = waiter.NewChannelEntry(w.mask)
	w.wq.EventRegister(w.entry)
	return true
}

// unregister removes the entry if it is registered.
func (w *eventWait) unregister() {
	if w.entry != nil {
		w.wq.EventUnregister(w.entry)
		w.entry = nil
	}
}
