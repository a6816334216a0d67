//go:build linux

// Command conform runs the conformance scenarios of
// internal/conformance: "conform peer" is the host's side, on the host's
// loopback; "conform guest" runs inside a sandbox (ustack, slirp4netns,
// pasta) against it and prints one line per scenario:
//
//	RESULT NAME PASS|FAIL figures
//
// Usage:
//
//	conform peer [-listen 127.0.0.1:0]
//	conform guest -peer HOST:PORT [-long] NAME...
//	conform list [-long] [-doc]
//
// The peer prints "listening ADDR" once it serves, then "PEER NAME
// PASS|FAIL figures" for each scenario it ends, and runs until SIGINT or
// SIGTERM. The guest exits 0 when every scenario passed, 1 when one
// failed, 2 on bad usage. Several scenarios change the guest's packet
// filter with nft(8): run the guest as root in a network namespace of its
// own.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ustacknet/ustack/internal/conformance"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func usage() int {
	fmt.Fprintln(os.Stderr, "usage: conform peer [-listen ADDR] | conform guest -peer HOST:PORT [-long] NAME... | conform list [-long] [-doc]")
	return 2
}

func run(args []string) int {
	if len(args) == 0 {
		return usage()
	}
	switch args[0] {
	case "peer":
		return peer(args[1:])
	case "guest":
		return guest(args[1:])
	case "list":
		fs := flag.NewFlagSet("list", flag.ContinueOnError)
		long := fs.Bool("long", false, "real-scale parameters, and the scenarios that run only at real scale")
		doc := fs.Bool("doc", false, "each scenario's description and parameters too")
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		for _, s := range conformance.All() {
			if s.LongOnly && !*long {
				continue
			}
			if !*doc {
				fmt.Println(s.Name)
				continue
			}
			p := s.Params
			if *long {
				p = s.Long
			}
			fmt.Printf("%s: %s (%s)\n", s.Name, s.Doc, p)
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "conform: unknown command %q (want peer, guest or list)\n", args[0])
	return usage()
}

func peer(args []string) int {
	fs := flag.NewFlagSet("peer", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "control listener address; data listeners open on its IP")
	if fs.Parse(args) != nil {
		return 2
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "conform peer: %v\n", err)
		return 1
	}
	srv := conformance.Serve(l, conformance.Config{
		Event: func(name, event string) { fmt.Printf("EVENT %s %s\n", name, event) },
		Result: func(name string, ok bool, figs string) {
			v := "FAIL"
			if ok {
				v = "PASS"
			}
			fmt.Printf("PEER %s %s %s\n", name, v, figs)
		},
	})
	fmt.Printf("listening %s\n", l.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Close()
	return 0
}

func guest(args []string) int {
	fs := flag.NewFlagSet("guest", flag.ContinueOnError)
	addr := fs.String("peer", "", "the peer's control listener as the guest reaches it, HOST:PORT")
	long := fs.Bool("long", false, "real-scale parameters (3-minute zero windows, 1 GiB transfers)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *addr == "" || fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "conform guest: need -peer HOST:PORT and at least one scenario name")
		return usage()
	}
	for _, n := range fs.Args() {
		if _, ok := conformance.Lookup(n); !ok {
			fmt.Fprintf(os.Stderr, "conform guest: unknown scenario %q (want one of %s)\n", n, strings.Join(conformance.Names(), ", "))
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code := 0
	for _, n := range fs.Args() {
		r := conformance.RunGuest(ctx, *addr, n, *long)
		fmt.Println(r)
		if !r.Pass {
			code = 1
		}
	}
	return code
}
