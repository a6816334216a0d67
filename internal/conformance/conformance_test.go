//go:build linux

package conformance

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serveLoopback starts a peer on 127.0.0.1 for the test.
func serveLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Serve(l, Config{})
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// With the kernel at both ends (no helper between them) the scenarios
// that need no packet filter pass: the scenarios' own logic is right.
func TestScenariosKernelToKernel(t *testing.T) {
	addr := serveLoopback(t)
	for _, name := range []string{"keepalive", "half-close", "reset", "simultaneous-close", "peer-vanishes"} {
		t.Run(name, func(t *testing.T) {
			r := RunGuest(context.Background(), addr, name, false)
			if !r.Pass {
				t.Fatalf("%s", r)
			}
			t.Log(r)
		})
	}
}

func TestRunGuestErrors(t *testing.T) {
	addr := serveLoopback(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name, addr, scenario string
		ctx                  context.Context
		want                 string
	}{
		{"unknown scenario", addr, "no-such", context.Background(), `unknown scenario "no-such" (want one of [keepalive`},
		{"bad address", "nonsense", "reset", context.Background(), `peer address "nonsense"`},
		{"no peer", deadAddr, "reset", context.Background(), "control connection: dial tcp " + deadAddr},
		{"cancelled", addr, "reset", ctx, "control connection:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := RunGuest(tc.ctx, tc.addr, tc.scenario, false)
			if r.Pass || !strings.Contains(r.Figures, tc.want) || !strings.HasPrefix(r.String(), "RESULT "+tc.scenario+" FAIL ") {
				t.Fatalf("got %q, want a failure containing %q", r, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v; want a prompt failure", d)
			}
		})
	}
}

// A peer that is asked for a scenario it does not know says so, by name.
func TestServeUnknownScenario(t *testing.T) {
	addr := serveLoopback(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := newCtl(c)
	if err := k.send(msg{Event: "hello", Scenario: "no-such", Params: &Params{}}); err != nil {
		t.Fatal(err)
	}
	m, err := k.expect("ready", 5*time.Second)
	var v *errVerdict
	if !errors.As(err, &v) || m.OK || !strings.Contains(m.Value, `unknown scenario "no-such"`) {
		t.Fatalf("got %+v, %v; want a failing verdict naming the scenario", m, err)
	}
}

func TestParamsString(t *testing.T) {
	for _, tc := range []struct {
		p    Params
		want string
	}{
		{Params{}, ""},
		{Params{Bytes: 64 << 10, Limit: time.Minute}, "Bytes=64KiB Limit=1m0s"},
		{Params{Bytes: 1 << 30, Hold: 190 * time.Second, Count: 3, LossPct: 1, Min: 2}, "Bytes=1024MiB Hold=3m10s Count=3 LossPct=1 Min=2"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%#v: got %q, want %q", tc.p, got, tc.want)
		}
	}
}

// Every scenario has both parts, a description, and parameters for both
// variants; names are unique.
func TestScenariosComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range All() {
		if s.Name == "" || seen[s.Name] || s.Doc == "" || s.guest == nil || s.host == nil || s.Params.Limit == 0 || s.Long.Limit == 0 {
			t.Errorf("scenario %q is incomplete or repeated", s.Name)
		}
		seen[s.Name] = true
	}
}
