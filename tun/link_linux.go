package tun

import (
	"reflect"

	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// fdbasedStopFDs returns the eventfds that fdbased.New created to stop its
// readers, one per descriptor. fdbased never closes them and does not
// export them, so they are read from its unexported fields
// (endpoint.inboundDispatchers[i].StopFD.EFD). If gVisor changes that
// layout this returns what it can find, and TestCloseReleasesDescriptors
// catches the leak.
func fdbasedStopFDs(ep gvstack.LinkEndpoint) []int {
	v := reflect.ValueOf(ep)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	ds := v.Elem().FieldByName("inboundDispatchers")
	if ds.Kind() != reflect.Slice {
		return nil
	}
	var fds []int
	for i := range ds.Len() {
		d := ds.Index(i)
		for d.Kind() == reflect.Interface || d.Kind() == reflect.Pointer {
			if d.IsNil() {
				break
			}
			d = d.Elem()
		}
		if d.Kind() != reflect.Struct {
			continue
		}
		if efd := d.FieldByName("EFD"); efd.Kind() == reflect.Int && efd.Int() >= 0 {
			fds = append(fds, int(efd.Int()))
		}
	}
	return fds
}
