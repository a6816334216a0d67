package metrics

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/stack"
	"github.com/ustacknet/ustack/tun"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// value returns the value of the series name{labels} in r, and whether
// it was there.
func value(t *testing.T, r prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := r.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			}
		}
	}
	return 0, false
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

func TestCollector(t *testing.T) {
	st, err := stack.New(stack.Config{Ports: portalloc.Config{TCP: portalloc.PoolConfig{Range: portalloc.Range{First: 40000, Last: 40003}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, err := st.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	var conns []net.Conn
	for i := 0; i < 4; i++ {
		c, err := st.Dial("tcp", "127.0.0.1:80")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if _, err := st.Dial("tcp", "127.0.0.1:80"); err == nil {
		t.Fatal("a fifth dial in a 4-port range succeeded")
	}

	r := NewRegistry(Sources{
		Ports:   st.Ports,
		Stack:   st.GVisor(),
		Device:  func() DeviceStats { return DeviceStats(tun.Stats{ChecksumErrors: 7, BadVnetHeaders: 1}) },
		Gateway: func() GatewayStats { return GatewayStats{TCPFlows: 5, UDPFlows: 2, Denied: 3, Live: 1} },
	})
	tcp := map[string]string{"protocol": "tcp"}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ustack_ports_in_use", tcp, 4},
		{"ustack_ports_range_size", tcp, 4},
		{"ustack_ports_excluded", tcp, 0},
		{"ustack_ports_info", map[string]string{"protocol": "tcp", "range": "40000-40003", "policy": "sequential"}, 1},
		{"ustack_port_allocations_total", tcp, 4},
		{"ustack_port_exhausted_total", tcp, 1},
		{"ustack_port_wraps_total", tcp, 0},
		{"ustack_ports_connections", tcp, 4},
		{"ustack_ports_destinations", tcp, 1},
		{"ustack_ports_in_use", map[string]string{"protocol": "udp"}, 0},
		{"ustack_tcp_active_opens_total", nil, 4},
		{"ustack_tcp_passive_opens_total", nil, 4},
		{"ustack_tun_checksum_errors_total", nil, 7},
		{"ustack_tun_bad_vnet_headers_total", nil, 1},
		{"ustack_sandbox_flows_total", tcp, 5},
		{"ustack_sandbox_flows_total", map[string]string{"protocol": "udp"}, 2},
		{"ustack_sandbox_denied_total", nil, 3},
		{"ustack_sandbox_live_flows", nil, 1},
	} {
		got, ok := value(t, r, tc.name, tc.labels)
		if !ok {
			t.Errorf("%s%v: missing", tc.name, tc.labels)
			continue
		}
		if got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if _, ok := value(t, r, "go_goroutines", nil); !ok {
		t.Error("the Go runtime's metrics are missing")
	}
	problems, err := testutil.GatherAndLint(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "ustack_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}

	// The HTTP handler serves the text format.
	srv := httptest.NewServer(Handler(Sources{Ports: st.Ports}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `ustack_ports_in_use{protocol="tcp"} 4`) {
		t.Fatalf("GET: %s\n%.2000s", resp.Status, body)
	}
	if strings.Contains(string(body), "ustack_tcp_") || strings.Contains(string(body), "ustack_sandbox_") {
		t.Error("sources left out still produced metrics")
	}
}

func TestNewCollectorNeedsPorts(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewCollector(Sources{}) did not panic")
		}
	}()
	NewCollector(Sources{})
}
