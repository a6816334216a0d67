package main

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ustacknet/ustack/sandbox"
	"github.com/ustacknet/ustack/tun"
)

// The first SIGINT or SIGTERM ends the context with an Interrupt that
// names it; the ones after it arrive on Interrupt.More.
func TestSignalContext(t *testing.T) {
	ctx, stop := signalContext(context.Background())
	defer stop()
	syscall.Kill(os.Getpid(), syscall.SIGINT)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGINT did not end the context in 10 s")
	}
	var in *sandbox.Interrupt
	if !errors.As(context.Cause(ctx), &in) || in.Signal != syscall.SIGINT {
		t.Fatalf("cause %v, want an Interrupt by SIGINT", context.Cause(ctx))
	}
	if in.ExitCode() != 130 {
		t.Errorf("ExitCode %d, want 130", in.ExitCode())
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case s := <-in.More:
		if s != syscall.SIGTERM {
			t.Errorf("More gave %v, want SIGTERM", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second signal did not arrive on More in 10 s")
	}
}

// stop without a signal ends the context with no Interrupt.
func TestSignalContextStop(t *testing.T) {
	ctx, stop := signalContext(context.Background())
	stop()
	<-ctx.Done()
	var in *sandbox.Interrupt
	if errors.As(context.Cause(ctx), &in) {
		t.Errorf("cause %v, want no Interrupt", context.Cause(ctx))
	}
}

// readyHook writes "1" to --ready-fd and closes it once serve has
// succeeded, and not if it failed.
func TestReadyHook(t *testing.T) {
	for _, tc := range []struct {
		name     string
		serveErr error
		want     string
	}{
		{"served", nil, "1"},
		{"serve failed", errors.New("no"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			ctl := &control{ready: w, readyFD: 9}
			err = ctl.readyHook(func(*sandbox.Gateway, *tun.Device) error { return tc.serveErr })(nil, nil)
			if !errors.Is(err, tc.serveErr) {
				t.Fatalf("hook: %v, want %v", err, tc.serveErr)
			}
			if tc.serveErr != nil {
				w.Close()
			}
			got, _ := io.ReadAll(r)
			if string(got) != tc.want {
				t.Errorf("--ready-fd got %q, want %q", got, tc.want)
			}
		})
	}
}
