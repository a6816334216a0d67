package nsexec

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The hand-back protocol, over a SOCK_SEQPACKET pair between the parent
// and the process inside the namespaces (descriptor 3 there). The child
// sends one message: 'T' + the device's name [+ "\x00" + its MTU] with
// the device's descriptor attached (SCM_RIGHTS), or 'E' + an error
// message, or 'N' + a message when the command does not exist. Start's
// child then waits for the parent's go-ahead, 'G', before it runs the
// command; OpenDevice's helper exits at once.
const (
	msgDevice   = 'T'
	msgError    = 'E'
	msgNotFound = 'N'
	msgGo       = 'G'
)

// NotFoundError reports that the command to run was not found; the
// sandbox exits with code 127 with it, as shells do.
type NotFoundError struct{ msg string }

func (e *NotFoundError) Error() string { return e.msg }

// sendFail sends an error message of kind (msgError or msgNotFound).
func sendFail(sock *os.File, kind byte, msg string) {
	sock.Write(append([]byte{kind}, msg...))
}

// sendDevice sends the device's descriptor and name, and its MTU if not
// 0.
func sendDevice(sock *os.File, f *os.File, name string, mtu int) error {
	msg := append([]byte{msgDevice}, name...)
	if mtu != 0 {
		msg = append(msg, fmt.Sprintf("\x00%d", mtu)...)
	}
	return unix.Sendmsg(int(sock.Fd()), msg, unix.UnixRights(int(f.Fd())), nil, 0)
}

// handedDevice is the child's message: a descriptor, or an error.
type handedDevice struct {
	fd   int
	name string
	mtu  int // 0 if not sent
	err  error
}

// receiveDevice reads the child's message: the device's descriptor and
// its name, or an error. It gives up if the child exits first: exited
// gets Wait's result (which receiveDevice puts back).
func receiveDevice(sock *os.File, exited chan error) handedDevice {
	got := make(chan handedDevice, 1)
	go func() {
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(4))
		n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			got <- handedDevice{err: fmt.Errorf("sandbox: receiving the TUN device: %w", err)}
			return
		}
		if n == 0 {
			got <- handedDevice{err: errors.New("sandbox: the sandbox process ended before creating its network")}
			return
		}
		switch buf[0] {
		case msgError:
			got <- handedDevice{err: errors.New(string(buf[1:n]))}
			return
		case msgNotFound:
			got <- handedDevice{err: &NotFoundError{msg: string(buf[1:n])}}
			return
		}
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(cmsgs) != 1 {
			got <- handedDevice{err: fmt.Errorf("sandbox: bad message from the sandbox process: %v", err)}
			return
		}
		fds, err := unix.ParseUnixRights(&cmsgs[0])
		if err != nil || len(fds) != 1 {
			got <- handedDevice{err: fmt.Errorf("sandbox: bad descriptor from the sandbox process: %v", err)}
			return
		}
		name, mtu, _ := strings.Cut(string(buf[1:n]), "\x00")
		m := handedDevice{fd: fds[0], name: name}
		m.mtu, _ = strconv.Atoi(mtu)
		got <- m
	}()
	select {
	case m := <-got:
		return m
	case err := <-exited:
		exited <- err
		// The child may have sent its error just before exiting: with its
		// end closed, the reader gets the message (or the end of the
		// stream) at once, though maybe after Wait returned. Bounded, in
		// case something else still holds that end.
		select {
		case m := <-got:
			// An error, or the device, which came before the exit:
			// OpenDevice's helper exits as soon as it has sent it, and
			// on a loaded machine its exit can be seen first. Start's
			// child, which waits for the go-ahead, is caught when that
			// write fails.
			return m
		case <-time.After(2 * time.Second):
		}
		return handedDevice{err: fmt.Errorf("sandbox: the sandbox process exited before creating its network: %v", err)}
	}
}
