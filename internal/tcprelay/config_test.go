//go:build linux

package tcprelay

import (
	"strings"
	"testing"
	"time"

	"github.com/ustacknet/ustack/tun"
)

// TestNewConfig: New refuses a bad Config with an error naming the field
// and what it allows; the zero Config works.
func TestNewConfig(t *testing.T) {
	p, err := tun.NewPipe(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct {
		name string
		gw   Gateway
		cfg  Config
		want string // in the error; "" for none
	}{
		{"zero", &fakeGateway{}, Config{}, ""},
		{"nil Gateway", nil, Config{}, "Gateway is nil"},
		{"MaxSYNs", &fakeGateway{}, Config{MaxSYNs: -1}, "MaxSYNs -1: want 0"},
		{"Buffer", &fakeGateway{}, Config{Buffer: 1000}, "Buffer 1000: want 0 (the default) or at least 65536"},
		{"IdleTimeout", &fakeGateway{}, Config{IdleTimeout: -time.Second}, "IdleTimeout -1s: want 0"},
		{"DialTimeout", &fakeGateway{}, Config{DialTimeout: -time.Second}, "DialTimeout -1s: want 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(p.A(), tc.gw, tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if r.maxSYNs != DefaultMaxSYNs || r.budget.limit != DefaultBuffer || r.dialWait != DefaultDialTimeout || r.tm != defaultTiming(0) {
					t.Errorf("zero Config: MaxSYNs %d, Buffer %d, DialTimeout %v, timing %+v; want the defaults", r.maxSYNs, r.budget.limit, r.dialWait, r.tm)
				}
				r.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				if r != nil {
					r.Close()
				}
				t.Fatalf("New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
