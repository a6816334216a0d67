//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// runPing measures ICMP echo round trips per second with one echo
// outstanding at a time: ustack's ping socket to the kernel over a TUN
// against a kernel ping socket to the kernel over veth.
func runPing() error {
	type result struct {
		rate   float64
		median time.Duration
	}
	res := map[string]result{}
	for _, name := range []string{"veth", "ustack", "veth again"} {
		var p *pair
		var err error
		if name == "ustack" {
			p, err = newTUNPair(tunOptions{mtu: 1500, multiQueue: *mq})
		} else {
			p, err = newVethPair(1500)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rate, median, err := pingRate(p)
		p.close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		progress("ping %s: %.0f round trips/s, median %v", name, rate, median)
		res[name] = result{rate, median}
	}
	u, v1, v2 := res["ustack"], res["veth"], res["veth again"]
	veth := (v1.rate + v2.rate) / 2
	vethMedian := (v1.median + v2.median) / 2
	fmt.Printf("### ICMP echo, one request outstanding, 56 data bytes (%v)\n\n", *dur)
	fmt.Println("ustack: a `stack.PingConn` to the kernel over a TUN; veth: a kernel ping socket (SOCK_DGRAM, IPPROTO_ICMP) to the kernel of another namespace, measured before and after ustack. Round trips per second over the whole run, and per second of the median round trip (which a busy machine disturbs less).")
	fmt.Println()
	fmt.Println("| measure | ustack | veth (before, after) | ustack / veth |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	fmt.Printf("| round trips/s | %.0f | %.0f (%.0f, %.0f) | %s |\n", u.rate, veth, v1.rate, v2.rate, ratio(u.rate, veth))
	fmt.Printf("| 1 / median round trip | %.0f (%v) | %.0f (%v, %v) | %s |\n\n", perSec(u.median), u.median, perSec(vethMedian), v1.median, v2.median, ratio(perSec(u.median), perSec(vethMedian)))
	return nil
}

// pingConn is the part of an echo socket the loop needs.
type pingConn interface {
	WriteTo(b []byte, to net.Addr) (int, error)
	ReadFrom(b []byte) (int, net.Addr, error)
	SetDeadline(t time.Time) error
	Close() error
}

func perSec(d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(time.Second) / float64(d)
}

// pingRate pings the pair's server for the measured time and returns the
// round trips per second and the median round trip.
func pingRate(p *pair) (float64, time.Duration, error) {
	var c pingConn
	var to net.Addr
	if p.clientNS == nil {
		pc, err := p.listenPkt("ping4", "")
		if err != nil {
			return 0, 0, err
		}
		c, to = pc, &net.IPAddr{IP: p.serverAddr.AsSlice()}
	} else {
		// A kernel ping socket needs the group in ping_group_range,
		// which a new namespace leaves empty.
		err := p.clientNS.Do(func() error {
			if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 0"), 0); err != nil {
				return err
			}
			pc, err := icmp.ListenPacket("udp4", p.clientAddr.String())
			c = pc
			return err
		})
		if err != nil {
			return 0, 0, err
		}
		to = &net.UDPAddr{IP: p.serverAddr.AsSlice()}
	}
	defer c.Close()
	buf := make([]byte, 1500)
	seq := 0
	once := func() error {
		seq++
		msg, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{Seq: seq & 0xffff, Data: make([]byte, 56)}}).Marshal(nil)
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.WriteTo(msg, to); err != nil {
			return err
		}
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("echo %d: %w", seq, err)
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil {
				return err
			}
			if e, ok := m.Body.(*icmp.Echo); ok && m.Type == ipv4.ICMPTypeEchoReply && e.Seq == seq&0xffff {
				return nil
			}
		}
	}
	for end := time.Now().Add(*warm); time.Now().Before(end); {
		if err := once(); err != nil {
			return 0, 0, err
		}
	}
	var rtts []time.Duration
	t0 := time.Now()
	for end := t0.Add(*dur); ; {
		t := time.Now()
		if !t.Before(end) {
			break
		}
		if err := once(); err != nil {
			return 0, 0, err
		}
		rtts = append(rtts, time.Since(t))
	}
	el := time.Since(t0)
	slices.Sort(rtts)
	return float64(len(rtts)) / el.Seconds(), rtts[len(rtts)/2], nil
}
