package main

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ustacknet/ustack/api"
	"github.com/ustacknet/ustack/portalloc"
)

type portsSource struct{ a *portalloc.Allocator }

func (s portsSource) Ports() []portalloc.Snapshot { return s.a.Snapshots() }

// TestPortsCmd runs `ustack ports` against an API server on a socket in
// a temporary directory: the table, the JSON and the errors.
func TestPortsCmd(t *testing.T) {
	a, err := portalloc.New(portalloc.Config{TCP: portalloc.PoolConfig{Range: portalloc.Range{First: 40000, Last: 40009}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		a.Pool(portalloc.TCP).Allocate(portalloc.Request{})
	}
	a.Pool(portalloc.TCP).Release(40001)
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	srv, err := api.Listen(sock, api.Config{Ports: portsSource{a}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	out, err := run("ports", "--api", sock)
	if err != nil {
		t.Fatalf("ports: %v\n%s", err, out)
	}
	var want strings.Builder
	api.FormatPorts(&want, a.Snapshots())
	if out != want.String() {
		t.Errorf("ports table:\n%s\nwant\n%s", out, want.String())
	}
	for _, row := range []string{"tcp    40000-40009  sequential  40003   2", "tcp in use: 40000, 40002\n"} {
		if !strings.Contains(out, row) {
			t.Errorf("ports table lacks %q:\n%s", row, out)
		}
	}

	out, err = run("ports", "--api", sock, "--json")
	if err != nil {
		t.Fatalf("ports --json: %v\n%s", err, out)
	}
	var got []portalloc.Snapshot
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("ports --json output is not JSON: %v\n%s", err, out)
	}
	if diff := cmp.Diff(a.Snapshots(), got); diff != "" {
		t.Errorf("ports --json (-want +got):\n%s", diff)
	}

	none := filepath.Join(dir, "none.sock")
	out, err = run("ports", "--api", none)
	checkOutcome(t, out, err, "", "no ustack is serving the API at "+none, 1)
	out, err = run("ports", "--api", sock, "extra")
	checkOutcome(t, out, err, "", "", 2)
}

// checkOutcome checks a command's output (on success, wantErr "") or its
// error's start and exit code.
func checkOutcome(t *testing.T, out string, err error, wantOut, wantErr string, wantCode int) {
	t.Helper()
	if wantErr == "" && wantCode == 0 {
		if err != nil {
			t.Fatalf("error %v; output:\n%s", err, out)
		}
		if out != wantOut {
			t.Errorf("output %q, want %q", out, wantOut)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error; output:\n%s", out)
	}
	if code := exitCode(err); code != wantCode {
		t.Errorf("exit code %d, want %d (err %v)", code, wantCode, err)
	}
	if got := err.Error(); !strings.HasPrefix(got, wantErr) {
		t.Errorf("error %q, want it to start with %q", got, wantErr)
	}
	var es exitStatus
	if errors.As(err, &es) {
		t.Errorf("error %v is an exitStatus: nothing would be printed", err)
	}
}
