//go:build linux

package conformance

import (
	"fmt"
	"strings"
	"time"
)

// Params size a scenario. Each field means what the scenario's doc says;
// the zero value of a field the scenario uses is never valid.
type Params struct {
	// Bytes is how much data the scenario moves (each way, where it goes
	// both ways).
	Bytes int64 `json:"bytes,omitempty"`
	// Hold is how long a window stays closed.
	Hold time.Duration `json:"hold,omitempty"`
	// Count is how many flows, probes, SYNs or datagrams.
	Count int `json:"count,omitempty"`
	// LossPct is the share of packets dropped each way, in percent.
	LossPct int `json:"loss_pct,omitempty"`
	// Limit bounds the event the scenario waits for.
	Limit time.Duration `json:"limit,omitempty"`
	// Min is the least count that passes.
	Min int `json:"min,omitempty"`
}

// String lists the fields that are set, e.g. "Bytes=32MiB Hold=15s".
func (p Params) String() string {
	var f []string
	if p.Bytes != 0 {
		if p.Bytes >= 1<<20 {
			f = append(f, fmt.Sprintf("Bytes=%dMiB", p.Bytes>>20))
		} else {
			f = append(f, fmt.Sprintf("Bytes=%dKiB", p.Bytes>>10))
		}
	}
	if p.Hold != 0 {
		f = append(f, "Hold="+p.Hold.String())
	}
	if p.Count != 0 {
		f = append(f, fmt.Sprintf("Count=%d", p.Count))
	}
	if p.LossPct != 0 {
		f = append(f, fmt.Sprintf("LossPct=%d", p.LossPct))
	}
	if p.Min != 0 {
		f = append(f, fmt.Sprintf("Min=%d", p.Min))
	}
	if p.Limit != 0 {
		f = append(f, "Limit="+p.Limit.String())
	}
	return strings.Join(f, " ")
}

// Scenario is one conformance check.
type Scenario struct {
	Name string
	// Doc says what the scenario does and what passes.
	Doc string
	// Params are the default suite's: bounded in time. Long are the
	// real-scale ones; they equal Params where the default is already
	// at real scale.
	Params, Long Params
	// LongOnly marks a scenario that is meaningful only at real scale
	// (its bound is a timer of the helper that tests cannot shorten).
	LongOnly bool

	udp   bool // the peer opens a UDP socket too
	guest func(*guestRun) (string, error)
	host  func(*hostRun) (string, error)
}

// Lookup finds a scenario by name.
func Lookup(name string) (Scenario, bool) {
	for _, s := range All() {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Names lists the scenarios' names in order.
func Names() []string {
	var n []string
	for _, s := range All() {
		n = append(n, s.Name)
	}
	return n
}

// All lists the scenarios in the order of the conformance table.
func All() []Scenario {
	return []Scenario{
		{
			Name:   "keepalive",
			Doc:    "guest socket with SO_KEEPALIVE (idle 1 s, interval 1 s, count 2) while the peer is alive but silent: Count probes answered (the guest sees each ACK in TCP_INFO), then an echo round trip on the same connection",
			Params: Params{Count: 3, Limit: 15 * time.Second},
			Long:   Params{Count: 3, Limit: 15 * time.Second},
			guest:  keepaliveGuest, host: keepaliveHost,
		},
		{
			Name:   "zerowindow-down",
			Doc:    "the peer sends Bytes while the guest does not read for Hold (a zero window toward the guest), then the guest reads everything: SHA-256 intact",
			Params: Params{Bytes: 32 << 20, Hold: 15 * time.Second, Limit: 60 * time.Second},
			Long:   Params{Bytes: 32 << 20, Hold: 190 * time.Second, Limit: 60 * time.Second},
			guest:  zeroWindowDownGuest, host: zeroWindowDownHost,
		},
		{
			Name:   "zerowindow-up",
			Doc:    "the guest sends Bytes while the peer does not read for Hold: the guest's zero-window probes are answered (at least 3 answered, never 2 unanswered in a row, from TCP_INFO), then the peer reads everything: SHA-256 intact",
			Params: Params{Bytes: 32 << 20, Hold: 15 * time.Second, Limit: 60 * time.Second},
			Long:   Params{Bytes: 32 << 20, Hold: 190 * time.Second, Limit: 60 * time.Second},
			guest:  zeroWindowUpGuest, host: zeroWindowUpHost,
		},
		{
			Name:   "lost-window-update",
			Doc:    "the guest fills its receive buffer, then reads it while nft drops its window updates; the transfer must resume through the helper's zero-window probes within Limit, SHA-256 intact",
			Params: Params{Bytes: 16 << 20, Limit: 30 * time.Second},
			Long:   Params{Bytes: 16 << 20, Limit: 30 * time.Second},
			guest:  lostWindowUpdateGuest, host: lostWindowUpdateHost,
		},
		{
			Name:   "half-close",
			Doc:    "each side in turn closes its sending half first and then receives Bytes on the other half: SHA-256 intact both times",
			Params: Params{Bytes: 1 << 20, Limit: 10 * time.Second},
			Long:   Params{Bytes: 1 << 20, Limit: 10 * time.Second},
			guest:  halfCloseGuest, host: halfCloseHost,
		},
		{
			Name:   "reset",
			Doc:    "each side in turn aborts (SO_LINGER 0): the other side reads ECONNRESET, not EOF, within Limit",
			Params: Params{Limit: 5 * time.Second},
			Long:   Params{Limit: 5 * time.Second},
			guest:  resetGuest, host: resetHost,
		},
		{
			Name:   "simultaneous-close",
			Doc:    "both sides send a message and close at the same time: each reads the other's message and EOF, and each socket leaves FIN-WAIT/CLOSING/LAST-ACK within Limit",
			Params: Params{Limit: 5 * time.Second},
			Long:   Params{Limit: 5 * time.Second},
			guest:  simCloseGuest, host: simCloseHost,
		},
		{
			Name:   "peer-vanishes",
			Doc:    "the peer closes with unread data while the guest uploads (a reset), and closes an idle connection (a FIN): the guest sees the error, then EOF, within Limit",
			Params: Params{Limit: 5 * time.Second},
			Long:   Params{Limit: 5 * time.Second},
			guest:  peerVanishesGuest, host: peerVanishesHost,
		},
		{
			Name:     "guest-vanishes",
			Doc:      "mid-transfer the guest falls silent (nft drops all of the flow's packets both ways, then the socket is closed), as a killed namespace would: the peer sees its connection end within Limit (the 60 s FIN timeout, plus 5 s)",
			Params:   Params{Limit: 65 * time.Second},
			Long:     Params{Limit: 65 * time.Second},
			LongOnly: true,
			guest:    guestVanishesGuest, host: guestVanishesHost,
		},
		{
			Name:   "syn-flood",
			Doc:    "the guest sends Count SYNs from a raw socket and never ACKs (nft drops its kernel's resets): once the helper has answered, every host connection it opened for them is closed within Limit of the last SYN (10 s SYN-RECEIVED timeout plus 2 s), then a new connection succeeds",
			Params: Params{Count: 1100, Limit: 12 * time.Second},
			Long:   Params{Count: 1100, Limit: 12 * time.Second},
			guest:  synFloodGuest, host: synFloodHost,
		},
		{
			Name:   "mss-1",
			Doc:    "the guest's SYN carries MSS 1 (nft rewrites the option): Bytes arrive intact within Limit, with at least 32 bytes of data per segment on average (Linux floors the MSS at 48 and sends 36 bytes next to timestamps) and none above 536 (segment sizes from the packets' GSO headers, through a PACKET_VNET_HDR socket)",
			Params: Params{Bytes: 64 << 10, Limit: 60 * time.Second},
			Long:   Params{Bytes: 64 << 10, Limit: 60 * time.Second},
			guest:  mss1Guest, host: mss1Host,
		},
		{
			Name:   "stalled-flows",
			Doc:    "the guest opens Count flows and writes to each until the helper closes its window, while the peer never reads: all stall within Limit (the helper's peak RSS is measured outside)",
			Params: Params{Count: 256, Limit: 60 * time.Second},
			Long:   Params{Count: 256, Limit: 60 * time.Second},
			guest:  stalledGuest, host: stalledHost,
		},
		{
			Name:   "bulk-loss",
			Doc:    "Bytes each way at once with LossPct of the flow's packets dropped each way by nft: SHA-256 intact both ways within Limit",
			Params: Params{Bytes: 64 << 20, LossPct: 1, Limit: 5 * time.Minute},
			Long:   Params{Bytes: 1 << 30, LossPct: 1, Limit: 20 * time.Minute},
			guest:  bulkLossGuest, host: bulkLossHost,
		},
		{
			Name:   "udp-burst",
			Doc:    "Count guest UDP sockets each send one datagram to one peer port, back to back: at least Min arrive",
			Params: Params{Count: 3000, Min: 2700, Limit: 10 * time.Second},
			Long:   Params{Count: 3000, Min: 2700, Limit: 10 * time.Second},
			udp:    true,
			guest:  udpBurstGuest, host: udpBurstHost,
		},
	}
}
