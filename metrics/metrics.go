// Package metrics exports a running ustack's counters in the Prometheus
// text format: the port allocator's pools, gVisor's TCP, UDP and IP
// counters, the TUN device's drops, and a sandbox gateway's flows, next
// to the Go runtime's and the process's own metrics.
//
// Values are read when scraped (a Collector, not counters updated on the
// hot path), so exporting costs nothing between scrapes. Every ustack
// metric is prefixed "ustack_"; counters end in "_total".
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ustacknet/ustack/portalloc"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Sources are what a Collector reads. Ports is required; a nil field
// leaves its metrics out.
//
// Each source is a function or a one-method interface returning plain
// values, so that metrics imports neither stack, tun nor sandbox (which
// is Linux-only) and builds on every system. The device and gateway
// counters are this package's own structs: tun.Stats and sandbox.Stats
// have the same fields and convert, as in
// func() DeviceStats { return DeviceStats(dev.Stats()) }.
type Sources struct {
	Ports   func() []portalloc.Snapshot // stack.Stack.Ports
	Stack   StackStats                  // stack.Stack.GVisor (not a nil pointer)
	Device  func() DeviceStats          // from tun.Device.Stats
	Gateway func() GatewayStats         // from sandbox.Gateway.Stats
}

// StackStats gives gVisor's counters: gVisor's *stack.Stack (what
// stack.Stack.GVisor returns) implements it.
type StackStats interface {
	Stats() tcpip.Stats
}

// DeviceStats are a TUN device's drop counters, as tun.Stats.
type DeviceStats struct {
	ChecksumErrors uint64 // inbound packets with a bad checksum
	BadVnetHeaders uint64 // inbound packets with a bad virtio header
}

// GatewayStats are a sandbox gateway's counters, as sandbox.Stats.
type GatewayStats struct {
	TCPFlows   uint64 `json:"tcp_flows"`   // guest TCP connections carried
	UDPFlows   uint64 `json:"udp_flows"`   // guest UDP flows carried
	DNSQueries uint64 `json:"dns_queries"` // queries to the DNS address
	Denied     uint64 `json:"denied"`      // flows refused by policy
	Refused    uint64 `json:"refused"`     // flows refused over --max-flows or failed to dial
	Inbound    uint64 `json:"inbound"`     // connections or flows through forwards
	Live       int64  `json:"live"`        // flows open now
}

// Collector is a prometheus.Collector over Sources.
type Collector struct {
	src Sources
}

// NewCollector returns a Collector reading src. It panics if src.Ports is
// nil, a programming error.
func NewCollector(src Sources) *Collector {
	if src.Ports == nil {
		panic("metrics: Sources.Ports is nil")
	}
	return &Collector{src: src}
}

// NewRegistry returns a registry with a Collector over src and the Go
// runtime and process collectors.
func NewRegistry(src Sources) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(NewCollector(src), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves src's metrics (with the Go runtime's and the process's)
// in the Prometheus exposition format.
func Handler(src Sources) http.Handler {
	r := NewRegistry(src)
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

var protoLabel = []string{"protocol"}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("ustack_"+name, help, labels, nil)
}

// Port pool metrics, one series per protocol.
var (
	portsInUse    = desc("ports_in_use", "Ports of the protocol's ephemeral range held now.", protoLabel...)
	portsSize     = desc("ports_range_size", "Ports in the protocol's ephemeral range.", protoLabel...)
	portsExcluded = desc("ports_excluded", "Ports of the range excluded from allocation (like ip_local_reserved_ports).", protoLabel...)
	portsInfo     = desc("ports_info", "The protocol's range and allocation policy, as labels; the value is 1.", "protocol", "range", "policy")
	portsConns    = desc("ports_connections", "Connections holding ports of a per-destination pool (a port counts once per destination).", protoLabel...)
	portsDests    = desc("ports_destinations", "Remote endpoints that connections of a per-destination pool go to.", protoLabel...)
	portCounters  = []struct {
		d   *prometheus.Desc
		get func(portalloc.Stats) uint64
	}{
		{desc("port_allocations_total", "Ephemeral ports handed out.", protoLabel...), func(s portalloc.Stats) uint64 { return s.Allocations }},
		{desc("port_reservations_total", "Explicitly requested ports reserved in the range.", protoLabel...), func(s portalloc.Stats) uint64 { return s.Reservations }},
		{desc("port_releases_total", "Ports given back to the pool.", protoLabel...), func(s portalloc.Stats) uint64 { return s.Releases }},
		{desc("port_exhausted_total", "Allocations refused because the range had no usable port (EADDRNOTAVAIL).", protoLabel...), func(s portalloc.Stats) uint64 { return s.Exhausted }},
		{desc("port_wraps_total", "Times the sequential policy wrapped from the end of the range to its start.", protoLabel...), func(s portalloc.Stats) uint64 { return s.Wraps }},
		{desc("port_vetoes_total", "Candidate ports skipped because the stack could not bind them.", protoLabel...), func(s portalloc.Stats) uint64 { return s.Vetoes }},
		{desc("port_rekeys_total", "Times the hash policy changed its secret key.", protoLabel...), func(s portalloc.Stats) uint64 { return s.Rekeys }},
	}
)

// gVisor's counters. Gauges are the few StatCounters that go down.
type stackStat struct {
	d     *prometheus.Desc
	gauge bool
	get   func(*tcpip.Stats) *tcpip.StatCounter
}

var stackStats = []stackStat{
	{desc("tcp_active_opens_total", "TCP connections opened by this stack (dials)."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.ActiveConnectionOpenings }},
	{desc("tcp_passive_opens_total", "TCP connections accepted by this stack."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.PassiveConnectionOpenings }},
	{desc("tcp_established", "TCP connections in ESTABLISHED or CLOSE_WAIT now."), true, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.CurrentEstablished }},
	{desc("tcp_connected", "TCP connections in a connected state (ESTABLISHED through TIME_WAIT) now."), true, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.CurrentConnected }},
	{desc("tcp_failed_connection_attempts_total", "TCP connection attempts that failed."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.FailedConnectionAttempts }},
	{desc("tcp_established_resets_total", "TCP connections reset from ESTABLISHED or CLOSE_WAIT."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.EstablishedResets }},
	{desc("tcp_segments_received_total", "Valid TCP segments received."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.ValidSegmentsReceived }},
	{desc("tcp_invalid_segments_received_total", "TCP segments received and dropped as malformed."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.InvalidSegmentsReceived }},
	{desc("tcp_segments_sent_total", "TCP segments sent."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.SegmentsSent }},
	{desc("tcp_resets_sent_total", "TCP resets sent."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.ResetsSent }},
	{desc("tcp_resets_received_total", "TCP resets received."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.ResetsReceived }},
	{desc("tcp_retransmits_total", "TCP segments retransmitted."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.Retransmits }},
	{desc("tcp_timeouts_total", "TCP retransmission timer expiries."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.Timeouts }},
	{desc("tcp_checksum_errors_total", "TCP segments dropped by gVisor for a bad checksum (see also ustack_tun_checksum_errors_total)."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.TCP.ChecksumErrors }},
	{desc("udp_datagrams_received_total", "UDP datagrams received."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.UDP.PacketsReceived }},
	{desc("udp_datagrams_sent_total", "UDP datagrams sent."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.UDP.PacketsSent }},
	{desc("udp_unknown_port_errors_total", "UDP datagrams for a port nobody had open."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.UDP.UnknownPortErrors }},
	{desc("udp_receive_buffer_errors_total", "UDP datagrams dropped because a socket's receive buffer was full."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.UDP.ReceiveBufferErrors }},
	{desc("udp_malformed_total", "UDP datagrams dropped as malformed."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.UDP.MalformedPacketsReceived }},
	{desc("udp_checksum_errors_total", "UDP datagrams dropped by gVisor for a bad checksum."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.UDP.ChecksumErrors }},
	{desc("ip_packets_received_total", "IP packets received from the link."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.IP.PacketsReceived }},
	{desc("ip_packets_delivered_total", "IP packets delivered to a transport protocol."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.IP.PacketsDelivered }},
	{desc("ip_packets_sent_total", "IP packets sent."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.IP.PacketsSent }},
	{desc("ip_malformed_total", "IP packets dropped as malformed."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.IP.MalformedPacketsReceived }},
	{desc("ip_invalid_destination_total", "IP packets dropped for a destination that is not the stack's."), false, func(s *tcpip.Stats) *tcpip.StatCounter { return s.IP.InvalidDestinationAddressesReceived }},
}

// TUN device and sandbox gateway metrics.
var (
	tunChecksumErrors = desc("tun_checksum_errors_total", "Inbound packets the TUN reader dropped for a bad IPv4 header, TCP or UDP checksum.")
	tunBadVnetHeaders = desc("tun_bad_vnet_headers_total", "Inbound packets the TUN reader dropped for a virtio header that did not fit the packet.")

	gwFlows   = desc("sandbox_flows_total", "Guest flows carried to the host.", protoLabel...)
	gwDNS     = desc("sandbox_dns_queries_total", "Queries to the sandbox's DNS address.")
	gwDenied  = desc("sandbox_denied_total", "Guest flows refused by the egress policy (--allow, --deny, host loopback).")
	gwRefused = desc("sandbox_refused_total", "Guest flows refused over --max-flows or because the host dial failed.")
	gwInbound = desc("sandbox_inbound_total", "Connections and flows carried in through forwards (-p).")
	gwLive    = desc("sandbox_live_flows", "Flows open now.")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{portsInUse, portsSize, portsExcluded, portsInfo, portsConns, portsDests} {
		ch <- d
	}
	for _, p := range portCounters {
		ch <- p.d
	}
	if c.src.Stack != nil {
		for _, s := range stackStats {
			ch <- s.d
		}
	}
	if c.src.Device != nil {
		ch <- tunChecksumErrors
		ch <- tunBadVnetHeaders
	}
	if c.src.Gateway != nil {
		for _, d := range []*prometheus.Desc{gwFlows, gwDNS, gwDenied, gwRefused, gwInbound, gwLive} {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, s := range c.src.Ports() {
		p := s.Protocol.String()
		gauge(portsInUse, float64(s.InUse), p)
		gauge(portsSize, float64(s.Range.Size()), p)
		excluded := 0
		for _, r := range s.Excluded {
			excluded += r.Size()
		}
		gauge(portsExcluded, float64(excluded), p)
		gauge(portsInfo, 1, p, s.Range.String(), s.Policy.String())
		if s.PerDestination {
			gauge(portsConns, float64(s.Connections), p)
			gauge(portsDests, float64(s.Destinations), p)
		}
		for _, pc := range portCounters {
			counter(pc.d, pc.get(s.Stats), p)
		}
	}
	if c.src.Stack != nil {
		st := c.src.Stack.Stats()
		for _, s := range stackStats {
			v := s.get(&st).Value()
			if s.gauge {
				gauge(s.d, float64(v))
			} else {
				counter(s.d, v)
			}
		}
	}
	if c.src.Device != nil {
		ds := c.src.Device()
		counter(tunChecksumErrors, ds.ChecksumErrors)
		counter(tunBadVnetHeaders, ds.BadVnetHeaders)
	}
	if c.src.Gateway != nil {
		gs := c.src.Gateway()
		counter(gwFlows, gs.TCPFlows, "tcp")
		counter(gwFlows, gs.UDPFlows, "udp")
		counter(gwDNS, gs.DNSQueries)
		counter(gwDenied, gs.Denied)
		counter(gwRefused, gs.Refused)
		counter(gwInbound, gs.Inbound)
		gauge(gwLive, float64(gs.Live))
	}
}
