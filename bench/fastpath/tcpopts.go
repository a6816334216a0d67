//go:build linux

package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ustacknet/ustack/stack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// tcpFlag overrides gVisor TCP options on the ustack side after
// stack.New, for the measurements behind tune()'s choices, e.g.
// -tcp cc=cubic,rcvmax=8m,sndmax=8m,moderate=false,sack=false,rack=false.
var tcpFlag = flag.String("tcp", "", "override TCP options on the ustack side (cc=reno|cubic, rcvdef=, rcvmax=, snddef=, sndmax=, moderate=, sack=, rack=)")

func size(v string) int {
	mult := 1
	switch {
	case strings.HasSuffix(v, "k"):
		mult, v = 1<<10, strings.TrimSuffix(v, "k")
	case strings.HasSuffix(v, "m"):
		mult, v = 1<<20, strings.TrimSuffix(v, "m")
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "-tcp: bad size %q\n", v)
		os.Exit(2)
	}
	return n * mult
}

// applyTCPFlag applies -tcp to st.
func applyTCPFlag(st *stack.Stack) {
	if *tcpFlag == "" {
		return
	}
	s := st.GVisor()
	var rcv tcpip.TCPReceiveBufferSizeRangeOption
	var snd tcpip.TCPSendBufferSizeRangeOption
	s.TransportProtocolOption(tcp.ProtocolNumber, &rcv)
	s.TransportProtocolOption(tcp.ProtocolNumber, &snd)
	var opts []tcpip.SettableTransportProtocolOption
	for _, kv := range strings.Split(*tcpFlag, ",") {
		k, v, _ := strings.Cut(kv, "=")
		b := v == "true" || v == "on" || v == "1"
		switch k {
		case "cc":
			o := tcpip.CongestionControlOption(v)
			opts = append(opts, &o)
		case "rcvdef":
			rcv.Default = size(v)
		case "rcvmax":
			rcv.Max = size(v)
		case "snddef":
			snd.Default = size(v)
		case "sndmax":
			snd.Max = size(v)
		case "moderate":
			o := tcpip.TCPModerateReceiveBufferOption(b)
			opts = append(opts, &o)
		case "sack":
			o := tcpip.TCPSACKEnabled(b)
			opts = append(opts, &o)
		case "rack":
			o := tcpip.TCPRecovery(0)
			if b {
				o = tcpip.TCPRACKLossDetection
			}
			opts = append(opts, &o)
		default:
			fmt.Fprintf(os.Stderr, "-tcp: unknown option %q\n", k)
			os.Exit(2)
		}
	}
	opts = append(opts, &rcv, &snd)
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			fmt.Fprintf(os.Stderr, "-tcp: %T: %v\n", o, err)
			os.Exit(2)
		}
	}
}
