//go:build linux

package tcprelay

import (
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

const (
	// relayWindow caps guest data accepted but not yet taken by the host
	// socket (its send buffer full), per flow; it is the window the relay
	// offers, in units of 1<<relayWS bytes when the guest scales.
	relayWindow = 2 << 20
	relayWS     = 6
	// relaySendMax caps host data read but not yet acknowledged by the
	// guest, per flow.
	relaySendMax = 4 << 20
	// relayReadFirst is a flow's first host read, and relayReadMax the
	// read once one has filled its buffer.
	relayReadFirst = 4 << 10
	relayReadMax   = 64 << 10
	// relayDiscardBatch is how many acknowledged bytes a peek flow
	// leaves in its host socket before it takes them off in one call.
	// They count against the socket's receive buffer (the window the
	// host peer sees) meanwhile.
	relayDiscardBatch = 64 << 10
	relayRTO          = 200 * time.Millisecond // Linux's minimum RTO
	// relayDelAck is how long an ACK for a small segment may wait for
	// data to ride on. Linux waits 40 ms at least; a host answer on this
	// path comes within a fraction of a millisecond.
	relayDelAck = time.Millisecond
	relayMaxRTO = 30 * time.Second
	// relayRetries is how many times a segment is sent again, with no
	// answer from the guest, before the flow is reset: with the back-off
	// above, 51 s of silence, within the FIN timeout, so that a guest
	// gone silent mid-transfer (a killed namespace whose device lingers)
	// frees its flow as soon as one that closed. The link is a local one
	// to a kernel that answers even when its programs are stopped, so
	// that long a silence means the guest is gone. Any acceptable ACK
	// starts the count again: a guest that answers the probes of its
	// zero window keeps the flow as long as it likes (RFC 1122
	// 4.2.2.17).
	relayRetries = 7
	// relaySynTimeout ends a flow whose guest has not completed its
	// handshake this long after its SYN.
	relaySynTimeout = 10 * time.Second
	// relayFinTimeout ends a flow with one side closed (a FIN sent or
	// taken) when nothing has moved either way for this long.
	relayFinTimeout = 60 * time.Second
	// relayKeepIdle is the silence, in seconds, after which a host
	// socket's keepalive probes a host peer that may have died without a
	// word (keepAlive).
	relayKeepIdle = 600
)

type rstate uint8

const (
	stSynRcvd     rstate = iota // dialling the host, or SYN-ACK sent
	stEstablished               // data both ways; FINs tracked separately
	stDone                      // finished; the flow is out of the table
)

// rflow is one relayed connection. Its fields are guarded by mu, except
// the immutable ones at the top.
type rflow struct {
	r        *Relay
	key      relayKey
	v6       bool
	guestA   tcpip.Address // key's addresses, for the headers it writes
	remoteA  tcpip.Address
	guestMAC tcpip.LinkAddress // on an Ethernet link
	irs      seqnum.Value      // the guest's initial sequence number
	iss      seqnum.Value      // ours
	mss      int
	id       uint64 // in Relay.byID, once in the table

	// LOCK ORDERING: rflow.mu > Relay.mu, relayBudget.mu and the
	// Gateway's locks (see Relay). No two flows' locks are held at once.

	mu         sync.Mutex // guards the fields below
	state      rstate
	fd         int       // the host socket (host.go), or -1
	dialing    bool      // its connect is in progress
	synCounted bool      // counted in Relay.syns: the guest's handshake is not complete
	born       time.Time // the guest's SYN came
	lastActive time.Time // a segment last moved, either way (kept while idle timing is on; see active)
	idle       *time.Timer
	idleOn     bool
	idleAt     time.Time // when the armed idle timer is due
	outWatched bool      // its EPOLLOUT edges are asked for (host.go)
	readable   bool      // it may have data or a FIN to read
	finQueued  bool      // its last events said a FIN (or an error) is there to read
	readSize   int       // the next read's size
	guestWS    uint8     // scale of the guest's windows
	ourWS      uint8     // scale of ours

	// guest -> host
	rcvNxt    seqnum.Value
	pend      buffer.Buffer // accepted, not yet written to the host (its buffer was full); from the relay's budget
	guestFin  bool          // the guest's FIN is accepted
	hostShut  bool          // CloseWrite done on the host socket
	lastWnd   uint32        // the window last advertised, in bytes
	rcvAdv    seqnum.Value  // the furthest right edge advertised so far
	ackNeeded bool          // the guest has not heard of rcvNxt yet
	ackDelay  bool          // and may wait for relayDelAck (see input)
	rcvAcked  seqnum.Value  // the ACK number last sent
	delack    *time.Timer
	delackOn  bool

	// host -> guest
	sndUna, sndNxt seqnum.Value
	sndMax         seqnum.Value   // the highest sent (sndNxt goes back on a timeout)
	finSeq         seqnum.Value   // our FIN's, once finOut
	finOut         bool           // the FIN has been sent at least once
	sndWnd         uint32         // the guest's window, in bytes
	wl1, wl2       seqnum.Value   // the sequence and ACK numbers of the segment sndWnd came from
	q              []*buffer.View // bytes from sndUna on, sent or not, read from the host (not peek); from the relay's budget
	qLen           int            // bytes from sndUna on: q's, or (peek) those known to be in the host socket
	peek           bool           // host data stays in the socket until the guest acknowledges it (SO_PEEK_OFF): q stays empty
	skip           int            // peek: bytes the guest acknowledged that are still in the socket (discarded in batches)
	hostErr        error          // peek: the host socket's error, taken off it by a peek after data that goes first
	urgent         bool           // urgent data came: a short read does not mean an empty socket
	peekPos        int            // peek: the socket's peek offset from the head of its queue; -1 unknown
	hostEOF        bool           // the host sent its FIN (read returned EOF)
	finSent        bool
	finAcked       bool
	dupAcks        int
	recovering     bool // in fast recovery, until recover is acknowledged
	recover        seqnum.Value
	timer          *time.Timer
	timerOn        bool
	timerAt        time.Time // when the armed timer is due
	rto            time.Duration
	retries        int
	budgetWait     bool // in Relay.budget's waiting list
	hostFull       bool // the host socket's last write found it full; cleared once pend is written
}

// hostFailed ends the flow after a host socket error: a reset, or
// anything else, becomes a reset to the guest.
func (f *rflow) hostFailed(err error) {
	f.r.log.Debug("tcp flow: host error", "src", f.key.guest, "dst", f.key.remote, "err", err)
	f.finish(false) // first: a guest that hears the reset finds the flow gone
	f.r.write(f, header.TCPFlagRst|header.TCPFlagAck, f.sndNxt, f.rcvNxt, 0, buffer.Buffer{}, nil)
}

// finish ends the flow: gracefully (both FINs done) or by resetting the
// host side. The caller holds mu.
func (f *rflow) finish(graceful bool) {
	if f.state == stDone {
		return
	}
	f.state = stDone
	f.stopTimer()
	if f.delackOn {
		f.delack.Stop()
		f.delackOn = false
	}
	if f.idleOn {
		f.idle.Stop()
		f.idleOn = false
	}
	f.endDial()
	f.endSyn()
	if f.peek {
		if graceful && f.skip > 0 {
			// What the guest acknowledged leaves the socket first:
			// closed with unread data, it would reset its peer.
			if err := f.discard(); err != nil {
				graceful = false
			}
		}
	} else {
		f.trim(f.qLen)
	}
	f.r.budget.give(int(f.pend.Size()), true)
	f.pend.Release()
	f.closeHost(graceful)
	f.r.drop(f)
	f.r.gw.DropFlow()
}

// maybeDone ends the flow when both directions are closed.
func (f *rflow) maybeDone() {
	if f.state == stEstablished && f.guestFin && (f.hostShut || f.hostEOF) && f.pend.Size() == 0 && f.finAcked {
		f.finish(true)
	}
}

// endSyn stops counting f in Relay.syns: its handshake is complete, or
// it ended.
func (f *rflow) endSyn() {
	if f.synCounted {
		f.synCounted = false
		f.r.syns.Add(-1)
	}
}
