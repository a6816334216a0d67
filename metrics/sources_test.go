package metrics

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// fakeStack is a StackStats that is not a gVisor stack.
type fakeStack struct{ s tcpip.Stats }

func (f fakeStack) Stats() tcpip.Stats { return f.s }

// TestSourcesWithoutStack: every source is a small interface or a
// function, so a Collector runs over values that come from no stack, TUN
// device or sandbox.
func TestSourcesWithoutStack(t *testing.T) {
	s := tcpip.Stats{}.FillIn()
	s.TCP.ActiveConnectionOpenings.IncrementBy(5)
	s.TCP.CurrentEstablished.IncrementBy(2)
	s.UDP.PacketsSent.IncrementBy(9)
	r := NewRegistry(Sources{
		Ports:   func() []portalloc.Snapshot { return nil },
		Stack:   fakeStack{s},
		Device:  func() DeviceStats { return DeviceStats{ChecksumErrors: 3, BadVnetHeaders: 4} },
		Gateway: func() GatewayStats { return GatewayStats{TCPFlows: 6, UDPFlows: 7, Live: 8} },
	})
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ustack_tcp_active_opens_total", nil, 5},
		{"ustack_tcp_established", nil, 2},
		{"ustack_udp_datagrams_sent_total", nil, 9},
		{"ustack_tun_checksum_errors_total", nil, 3},
		{"ustack_tun_bad_vnet_headers_total", nil, 4},
		{"ustack_sandbox_flows_total", map[string]string{"protocol": "tcp"}, 6},
		{"ustack_sandbox_flows_total", map[string]string{"protocol": "udp"}, 7},
		{"ustack_sandbox_live_flows", nil, 8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := value(t, r, tc.name, tc.labels)
			if !ok {
				t.Fatalf("%s%v missing", tc.name, tc.labels)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s%v (-want +got):\n%s", tc.name, tc.labels, diff)
			}
		})
	}
}
