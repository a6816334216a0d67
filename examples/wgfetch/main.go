// Command wgfetch fetches a URL through a WireGuard tunnel, entirely in
// user space: no root, no TUN device, no change to the host's network.
//
// It reads a wg-quick configuration file, brings the peer up with
// wireguard-go over a ustack stack (package wgtun), and fetches the URL
// with net/http dialling through the stack. Names in the URL are resolved
// through the tunnel with the config's DNS servers.
//
//	wgfetch [-timeout 30s] [-v] wg0.conf http://10.0.0.1/
//
// The body goes to standard output; the status line and warnings to
// standard error. Exit status: 0 on a 2xx response, 1 on any other
// response or failure, 2 on bad usage or a bad configuration file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/ustacknet/ustack/portalloc"
	"github.com/ustacknet/ustack/wgtun"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is bad usage or a bad configuration: exit status 2.
type usageError struct{ error }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wgfetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long, handshake included")
	verbose := fs.Bool("v", false, "log wireguard-go's progress to standard error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: wgfetch [-timeout 30s] [-v] CONFIG URL")
		fmt.Fprintln(stderr, "Fetches URL through the WireGuard peer that the wg-quick file CONFIG describes.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "wgfetch: -timeout %v: want a positive duration\n", *timeout)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	err := fetch(ctx, fs.Arg(0), fs.Arg(1), *verbose, stdout, stderr)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "wgfetch: %v\n", err)
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

func fetch(ctx context.Context, configPath, url string, verbose bool, stdout, stderr io.Writer) error {
	cfg, err := wgtun.LoadQuickConfig(configPath)
	if err != nil {
		return usageError{err}
	}
	for _, note := range cfg.Ignored {
		fmt.Fprintf(stderr, "wgfetch: warning: %s\n", note)
	}
	uapi, err := cfg.UAPI(ctx)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{fmt.Errorf("URL %q: %w", url, err)}
	}

	// The tunnel: a ustack stack as wireguard-go's TUN.
	dc := cfg.DeviceConfig()
	// Every run starts a fresh stack. With the default sequential policy
	// each run would take the same first port toward the same server,
	// and meet the server's leftovers of the previous run's connection
	// (a SYN to a 4-tuple in LAST_ACK costs a 1 s retransmission). RFC
	// 6056's hash policy starts each run, and each destination, at a
	// secret offset.
	dc.Stack.Ports.TCP.Policy = portalloc.Hash
	dc.Stack.Ports.UDP.Policy = portalloc.Hash
	tdev, err := wgtun.New(dc)
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", configPath, err)}
	}
	logger := &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	if verbose {
		logger = device.NewLogger(device.LogLevelVerbose, "wireguard: ")
	}
	wg := device.NewDevice(tdev, conn.NewDefaultBind(), logger)
	defer wg.Close() // closes tdev and its stack
	if err := wg.IpcSet(uapi); err != nil {
		return fmt.Errorf("configuring wireguard-go: %w", err)
	}
	if err := wg.Up(); err != nil {
		return fmt.Errorf("bringing the tunnel up: %w", err)
	}

	// net/http, dialling through the stack.
	tr := &http.Transport{DialContext: tdev.Stack().DialContext, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	fmt.Fprintf(stderr, "%s %s\n", resp.Proto, resp.Status)
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
