//go:build linux

package main

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// runUDP measures 64-byte UDP datagrams per second received, each way,
// ustack<->kernel over a TUN against kernel<->kernel over veth.
func runUDP() error {
	type key struct {
		name string
		up   bool
	}
	type result struct{ sent, recv float64 }
	res := map[key]result{}
	mks := []struct {
		name string
		mk   func() (*pair, error)
	}{
		{"veth", func() (*pair, error) { return newVethPair(1500) }},
		{"ustack", func() (*pair, error) { return newTUNPair(tunOptions{mtu: 1500, multiQueue: *mq}) }},
	}
	for _, m := range mks {
		for _, up := range []bool{true, false} {
			p, err := m.mk()
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			sent, recv, err := udpRate(p, up)
			p.close()
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			progress("udp %s up=%v: sent %.0f/s, received %.0f/s", m.name, up, sent, recv)
			res[key{m.name, up}] = result{sent, recv}
		}
	}
	fmt.Printf("### UDP, 64-byte datagrams, one sender, one receiver (%v)\n\n", *dur)
	fmt.Println("Received datagrams per second (sent per second in brackets; the difference was dropped, mostly at the receiving socket).")
	fmt.Println()
	fmt.Println("| direction | ustack | veth | ustack / veth |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	for _, up := range []bool{true, false} {
		dir := "kernel to ustack (veth: B to A)"
		if up {
			dir = "ustack to kernel (veth: A to B)"
		}
		u, v := res[key{"ustack", up}], res[key{"veth", up}]
		fmt.Printf("| %s | %.0f (%.0f) | %.0f (%.0f) | %s |\n", dir, u.recv, u.sent, v.recv, v.sent, ratio(u.recv, v.recv))
	}
	fmt.Println()
	return nil
}

// udpRate sends 64-byte datagrams from one side to the other for the
// measured time and returns the rates sent and received per second.
func udpRate(p *pair, up bool) (sent, recv float64, err error) {
	client, err := p.listenPkt("udp4", netip.AddrPortFrom(p.clientAddr, 9001).String())
	if err != nil {
		return 0, 0, err
	}
	defer client.Close()
	server, err := p.server.ListenPacket("udp4", netip.AddrPortFrom(p.serverAddr, 9000).String())
	if err != nil {
		return 0, 0, err
	}
	defer server.Close()
	src, dst := server, client
	to := client.LocalAddr()
	if up {
		src, dst = client, server
		to = server.LocalAddr()
	}
	if u, ok := dst.(*net.UDPConn); ok {
		u.SetReadBuffer(4 << 20) // capped by net.core.rmem_max
	}
	var nRecv, nSent atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := dst.ReadFrom(buf); err != nil {
				return
			}
			nRecv.Add(1)
		}
	}()
	var stop atomic.Bool
	senderDone := make(chan error, 1)
	go func() {
		msg := make([]byte, 64)
		for !stop.Load() {
			if _, err := src.WriteTo(msg, to); err != nil {
				// A full queue on the way is a drop, not a failure.
				continue
			}
			nSent.Add(1)
		}
		senderDone <- nil
	}()
	time.Sleep(*warm)
	r0, s0, t0 := nRecv.Load(), nSent.Load(), time.Now()
	time.Sleep(*dur)
	r1, s1, el := nRecv.Load(), nSent.Load(), time.Since(t0)
	stop.Store(true)
	<-senderDone
	return float64(s1-s0) / el.Seconds(), float64(r1-r0) / el.Seconds(), nil
}
