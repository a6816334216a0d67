package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ustacknet/ustack/internal/nsexec"
)

// Target is an existing network namespace for Attach to serve, as
// slirp4netns and pasta serve one given by PID or path (rootless
// container engines start them so).
type Target struct {
	// PID, if not 0, names the namespace of that process
	// (/proc/PID/ns/net), and Attach returns when the process exits.
	PID int
	// NetNS is the namespace's file when PID is 0: /proc/PID/ns/net,
	// /run/netns/NAME, or any bind mount of one.
	NetNS string
	// UserNS is the user namespace to join to create the device when
	// ustack is not root. Default: the one that owns the network
	// namespace. Joining goes through nsenter(1) from util-linux, because
	// a multithreaded process (any Go program) cannot join a user
	// namespace itself.
	UserNS string
}

// Attach serves t's network namespace: it creates o.IfName there with the
// guest's addresses and default routes via the gateway, serves it with a
// Gateway, and returns 0 when ctx is done (whatever its cause) or t.PID
// exits (1 and an error if someone deletes the device). The device is
// deleted on return (unless it is a TAP device made beforehand, see
// Options.NoConfigure); nothing else in the namespace is touched (its lo
// keeps its state). While it runs, the device's descriptor keeps the
// namespace alive, as slirp4netns's and pasta's do, so a namespace given
// by path is served until ctx ends or the device is deleted.
// o.Command must be empty.
func Attach(ctx context.Context, o Options, t Target) (int, error) {
	if len(o.Command) != 0 {
		return 0, errors.New("sandbox: a command and a namespace to attach to are exclusive")
	}
	guest, err := o.check()
	if err != nil {
		return 0, err
	}
	if o.NoConfigure {
		guest.Addrs, guest.Gateways, guest.Down = nil, nil, true
	}
	exited, path, stop, err := t.open()
	if err != nil {
		return 0, err
	}
	defer stop()
	nsf, err := t.openNS(path)
	if err != nil {
		return 0, err
	}
	dev, err := nsexec.OpenDevice(nsf, t.UserNS, guest, o.Self)
	// Not kept open: ustack does not keep a namespace alive that its
	// processes and mounts have left.
	nsf.Close()
	if err != nil {
		return 1, err
	}
	defer dev.Close() // deletes the device in the namespace
	gw, err := o.serve(dev)
	if err != nil {
		return 1, err
	}
	defer gw.Close()
	select {
	case <-ctx.Done():
	case <-exited:
	case <-dev.Gone():
		return 1, fmt.Errorf("sandbox: %s was deleted in the namespace (ip link del); stopping", dev.Name())
	}
	return 0, nil
}

// open checks t (a *ConfigError for a field it refuses), starts
// watching t.PID if set, and returns the channel closed when it exits
// (nil without a PID), the namespace's path and the function that stops
// the watch.
func (t Target) open() (<-chan struct{}, string, func(), error) {
	path := t.NetNS
	switch {
	case t.PID < 0:
		return nil, "", nil, fieldError("Target.PID", t.PID)
	case t.PID > 0:
		if t.NetNS != "" {
			return nil, "", nil, &ConfigError{Field: "Target.NetNS", Value: t.NetNS, Reason: "given with Target.PID", Allowed: allowed["Target.NetNS"]}
		}
		w, err := nsexec.WatchPID(t.PID)
		if err != nil {
			return nil, "", nil, err
		}
		return w.Done(), fmt.Sprintf("/proc/%d/ns/net", t.PID), w.Close, nil
	case path == "":
		return nil, "", nil, &ConfigError{Field: "Target.NetNS", Value: "", Reason: "no namespace to attach to", Allowed: allowed["Target.NetNS"]}
	}
	return nil, path, func() {}, nil
}

// openNS opens the network namespace at path, and checks t.UserNS.
func (t Target) openNS(path string) (*os.File, error) {
	nsf, err := nsexec.OpenNetNS(path)
	if err != nil {
		return nil, err
	}
	if t.UserNS != "" {
		// Checked even where it is not needed (as root), rather than
		// ignored when wrong.
		f, err := nsexec.OpenUserNS(t.UserNS)
		if err != nil {
			nsf.Close()
			return nil, err
		}
		f.Close()
	}
	return nsf, nil
}
