package api

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/portalloc"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeSource struct{ a *portalloc.Allocator }

func (f fakeSource) Ports() []portalloc.Snapshot { return f.a.Snapshots() }

func TestPortsOverSocket(t *testing.T) {
	a, err := portalloc.New(portalloc.Config{TCP: portalloc.PoolConfig{Range: portalloc.Range{First: 40000, Last: 40009}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		a.Pool(portalloc.TCP).Allocate(portalloc.Request{})
	}
	a.Pool(portalloc.TCP).Release(40001)
	path := filepath.Join(t.TempDir(), "api.sock")
	srv, err := Listen(path, Config{Ports: fakeSource{a}})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("socket mode %o, want 600", m)
	}
	if _, err := Listen(path, Config{Ports: fakeSource{a}}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Listen on a live socket: %v, want an 'in use' error", err)
	}
	c := NewClient(path)
	got, err := c.Ports(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a.Snapshots(), got); diff != "" {
		t.Fatalf("snapshots over the API (-want +got):\n%s", diff)
	}
	var buf bytes.Buffer
	FormatPorts(&buf, got)
	for _, want := range []string{"tcp    40000-40009  sequential  40003   2", "tcp in use: 40000, 40002"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	srv.Close()
	srv.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind after Close: %v", err)
	}
	if _, err := c.Ports(context.Background()); err == nil || !strings.Contains(err.Error(), "no ustack is serving") {
		t.Errorf("client with no server: %v", err)
	}
	c.hc.CloseIdleConnections()
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	os.WriteFile(path, nil, 0o600)
	if _, err := Listen(path, Config{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a regular file: %v", err)
	}
}
