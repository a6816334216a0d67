package stack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLookupHostThroughStack(t *testing.T) {
	st := newLoopback(t, "", "", func(c *Config) {
		c.DNS = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}
	})
	pc, err := st.ListenPacket("udp4", "127.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv := &dnsServer{ttl: 60, negTTL: 10, records: map[string][]netip.Addr{
			"svc.test.": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		}}
		srv.serve(pc)
	}()
	defer func() { pc.Close(); <-done }()

	got, err := st.LookupHost(context.Background(), "svc.test")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"127.0.0.1", "::1"}, got, cmpSortStrings); diff != "" {
		t.Errorf("LookupHost (-want +got):\n%s", diff)
	}
	_, err = st.LookupHost(context.Background(), "missing.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("LookupHost(missing.test): %v, want a not-found *net.DNSError", err)
	}
	// A dial by name resolves through the stack and connects.
	l, err := st.Listen("tcp4", "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	serveTCP(t, l, func(c net.Conn) { c.Close() })
	c, err := st.DialContext(context.Background(), "tcp4", "svc.test:8080")
	if err != nil {
		t.Fatalf("dial by name: %v", err)
	}
	c.Close()
	if n := st.Allocator().Pool(0).Snapshot().Stats.Allocations; n != 1 {
		t.Errorf("TCP allocations = %d, want 1", n)
	}
}

var cmpSortStrings = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})
