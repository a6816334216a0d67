package privtest

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// probe gathers the facts about the running process.
func probe() facts {
	f := facts{euid: os.Geteuid()}
	f.missingCaps, f.capErr = missingCaps()
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		f.tunErr = &os.PathError{Op: "open", Path: tunPath, Err: err}
	} else {
		// Opening the clone device without TUNSETIFF creates nothing.
		unix.Close(fd)
	}
	return f
}

// missingCaps reports which of CAP_NET_ADMIN and CAP_SYS_ADMIN the calling
// thread lacks in its effective set.
func missingCaps() ([]string, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("capget: %w", err)
	}
	var missing []string
	for _, c := range []struct {
		bit  int
		name string
	}{{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}} {
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			missing = append(missing, c.name)
		}
	}
	return missing, nil
}

// DropCap removes capability c from the calling thread's effective set,
// for tests of what happens without it (lock the OS thread first, and
// end it after: the capability does not come back).
func DropCap(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Effective &^= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}
