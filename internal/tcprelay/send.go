//go:build linux

package tcprelay

import (
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// push sends host data (and then the FIN) as far as the guest's window
// allows: what q holds, or, on a peek flow, what the host socket holds,
// peeked at as it goes out.
func (f *rflow) push() {
	if f.state == stSynRcvd {
		return // after the handshake
	}
	sent := int(f.sndUna.Size(f.sndNxt))
	if f.finSent && !f.finAcked {
		sent-- // the FIN is in flight
	}
	for f.state == stEstablished {
		avail := min(int(f.sndWnd), relaySendMax) - sent
		if avail <= 0 {
			break
		}
		seg := f.segMax()
		n := min(avail, seg)
		switch {
		case sent < f.qLen:
			n = min(n, f.qLen-sent)
		case !f.peek || !f.readable || f.hostEOF:
			n = 0
		default:
			// New data, peeked at once for as many segments as a read
			// would take (readSize), when segments are small.
			n = min(avail, max(seg, f.readSize))
		}
		if n == 0 {
			break
		}
		b, got, ok := f.data(sent, n)
		if !ok {
			return // the flow ended
		}
		if got == 0 {
			break // nothing more now; or the host's FIN, sent below
		}
		for got > 0 {
			k := min(got, seg)
			piece := b
			if k < got {
				piece = b.Clone()
				piece.Truncate(int64(k))
				b.TrimFront(int64(k))
			}
			got -= k
			// The host's FIN rides on its last data when both are in.
			fin := got == 0 && f.hostEOF && !f.finSent && sent+k == f.qLen
			f.sendData(piece, got == 0, f.sndNxt, fin)
			f.sndNxt = f.sndNxt.Add(seqnum.Size(k))
			sent += k
			if fin {
				f.finSent, f.finOut = true, true
				f.finSeq = f.sndNxt
				f.sndNxt++
			}
		}
		if f.hostErr != nil {
			// The host's reset, met by a peek after this data: the
			// data went first, and now the flow ends, as after a read.
			err := f.hostErr
			f.hostErr = nil
			f.hostFailed(err)
			return
		}
	}
	if f.state != stEstablished {
		return
	}
	if f.hostEOF && !f.finSent && sent == f.qLen {
		f.finSent, f.finOut = true, true
		f.finSeq = f.sndNxt
		f.r.write(f, header.TCPFlagFin|header.TCPFlagAck, f.sndNxt, f.rcvNxt, f.window(), buffer.Buffer{}, nil)
		f.ackNeeded = false
		f.sndNxt++
	}
	if f.sndMax.LessThan(f.sndNxt) {
		f.sndMax = f.sndNxt
	}
	if f.sndUna != f.sndNxt {
		f.armTimer()
	} else if f.unsent() && f.sndWnd == 0 {
		f.armTimer() // probe the zero window
	}
}

// unsent reports whether host data waits for the guest's window: in q,
// or, on a peek flow, maybe in the socket.
func (f *rflow) unsent() bool {
	sent := int(f.sndUna.Size(f.sndNxt))
	if f.finSent && !f.finAcked {
		sent--
	}
	return f.qLen > sent || (f.peek && f.readable && !f.hostEOF)
}

// segMax is the most payload one write to the link carries.
func (f *rflow) segMax() int {
	if f.r.gso {
		hdr := header.IPv4MinimumSize + header.TCPMinimumSize
		if f.v6 {
			hdr = header.IPv6MinimumSize + header.TCPMinimumSize
		}
		return max(f.mss, min(int(f.r.gsoMax)-hdr, 0xffff-hdr)/f.mss*f.mss)
	}
	return f.mss
}

// data returns up to n bytes of host data from offset off (from sndUna):
// from q, or peeked at in the host socket. ok is false if the flow ended.
func (f *rflow) data(off, n int) (b buffer.Buffer, got int, ok bool) {
	if f.peek {
		return f.peekData(off, n)
	}
	for _, v := range f.q {
		if got == n {
			break
		}
		if off >= v.Size() {
			off -= v.Size()
			continue
		}
		c := v.Clone()
		c.TrimFront(off)
		off = 0
		if c.Size() > n-got {
			c.CapLength(n - got)
		}
		got += c.Size()
		b.Append(c)
	}
	return b, got, true
}

// sendData sends payload b at seq; psh marks the end of what the host had.
func (f *rflow) sendData(b buffer.Buffer, psh bool, seq seqnum.Value, fin bool) {
	flags := header.TCPFlagAck
	if psh {
		flags |= header.TCPFlagPsh
	}
	if fin {
		flags |= header.TCPFlagFin
	}
	f.ackNeeded = false
	f.r.write(f, flags, seq, f.rcvNxt, f.window(), b, nil)
}

// retransmit sends the oldest unacknowledged segment again (after three
// duplicate ACKs).
func (f *rflow) retransmit() {
	switch {
	case f.qLen > 0:
		n := min(f.qLen, f.segMax(), int(f.sndUna.Size(f.sndNxt)))
		if n <= 0 {
			// Nothing is in flight: a timeout took sndNxt back to
			// sndUna, and push sends it all again.
			return
		}
		b, got, ok := f.data(0, n)
		if !ok || got == 0 {
			return
		}
		f.sendData(b, true, f.sndUna, f.finSent && !f.finAcked && got == f.qLen)
	case f.finSent && !f.finAcked:
		f.r.write(f, header.TCPFlagFin|header.TCPFlagAck, f.sndNxt-1, f.rcvNxt, f.window(), buffer.Buffer{}, nil)
	}
}

// trim drops n acknowledged bytes from the front of the send queue: from
// q, or, on a peek flow, from the host socket, in batches of up to
// relayDiscardBatch (one system call each).
func (f *rflow) trim(n int) {
	f.qLen -= n
	if f.peek {
		f.skip += n
		// Before the batch fills, too, once the guest has all it was
		// sent: a host peer may be waiting for the window those bytes
		// close (Linux offers none below a segment, and a segment on
		// loopback is 64 KiB).
		if f.skip >= relayDiscardBatch || f.qLen == 0 {
			if err := f.discard(); err != nil {
				f.hostFailed(err)
			}
		}
		return
	}
	f.r.budget.give(n, false)
	for n > 0 && len(f.q) > 0 {
		v := f.q[0]
		if v.Size() > n {
			v.TrimFront(n)
			return
		}
		n -= v.Size()
		v.Release()
		f.q[0] = nil
		f.q = f.q[1:]
	}
}

// readRoom is how much host data the flow may read now.
func (f *rflow) readRoom() int {
	inflight := f.qLen
	room := relaySendMax - inflight
	// Read no further ahead of the guest's window than one read.
	if w := int(f.sndWnd) - inflight + relayReadMax; w < room {
		room = w
	}
	if f.state != stEstablished && f.state != stSynRcvd {
		return 0
	}
	return room
}

// sendSynAck sends (or sends again) the SYN-ACK.
func (f *rflow) sendSynAck() {
	var opts [8]byte
	n := header.EncodeMSSOption(uint32(f.mss), opts[:])
	if f.ourWS != 0 || f.guestWS != 0 {
		n += header.EncodeNOP(opts[n:])
		n += header.EncodeWSOption(int(f.ourWS), opts[n:])
	}
	// The window of a SYN is never scaled (RFC 7323 2.2).
	wnd := uint16(min(f.rcvRoom(), 0xffff))
	f.lastWnd = uint32(wnd)
	f.r.write(f, header.TCPFlagSyn|header.TCPFlagAck, f.iss, f.rcvNxt, wnd, buffer.Buffer{}, opts[:n])
}

// resetFor answers a segment of no flow with a reset (RFC 9293 3.10.7.1).
func (r *Relay) resetFor(s *seg) {
	f := &rflow{r: r, key: s.key, v6: s.v6, guestA: s.src, remoteA: s.dst, guestMAC: s.mac}
	if s.flags&header.TCPFlagAck != 0 {
		r.write(f, header.TCPFlagRst, s.ack, 0, 0, buffer.Buffer{}, nil)
		return
	}
	ln := seqnum.Size(s.n)
	if s.flags&header.TCPFlagSyn != 0 {
		ln++
	}
	if s.flags&header.TCPFlagFin != 0 {
		ln++
	}
	r.write(f, header.TCPFlagRst|header.TCPFlagAck, 0, s.seq.Add(ln), 0, buffer.Buffer{}, nil)
}

// write sends one segment of f to the guest, with payload (which it
// takes) and TCP options opts.
func (r *Relay) write(f *rflow, flags header.TCPFlags, seq, ack seqnum.Value, wnd uint16, payload buffer.Buffer, opts []byte) {
	ipLen := header.IPv4MinimumSize
	if f.v6 {
		ipLen = header.IPv6MinimumSize
	}
	tcpLen := header.TCPMinimumSize + len(opts)
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		ReserveHeaderBytes: r.hdrLen + ipLen + tcpLen,
		Payload:            payload,
	})
	defer pkt.DecRef()
	n := pkt.Data().Size()
	t := header.TCP(pkt.TransportHeader().Push(tcpLen))
	t.Encode(&header.TCPFields{
		SrcPort:    f.key.remote.Port(),
		DstPort:    f.key.guest.Port(),
		SeqNum:     uint32(seq),
		AckNum:     uint32(ack),
		DataOffset: uint8(tcpLen),
		Flags:      flags,
		WindowSize: wnd,
	})
	copy(t[header.TCPMinimumSize:], opts)
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	src, dst := f.remoteA, f.guestA
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+n))
	if r.gso {
		gso := gvstack.GSO{Type: gvstack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset,
			MSS: uint16(f.mss), L3HdrLen: uint16(ipLen), MaxSize: r.gsoMax}
		if f.v6 {
			gso.Type = gvstack.GSOTCPv6
		}
		pkt.GSOOptions = gso
		t.SetChecksum(xsum)
	} else {
		xsum = checksum.Combine(xsum, pkt.Data().Checksum())
		t.SetChecksum(^t.CalculateChecksum(xsum))
	}
	if f.v6 {
		header.IPv6(pkt.NetworkHeader().Push(ipLen)).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen + n),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           src,
			DstAddr:           dst,
		})
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(ipLen))
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(ipLen + tcpLen + n),
			ID:          uint16(r.ipID.Add(1)),
			Flags:       header.IPv4FlagDontFragment,
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     src,
			DstAddr:     dst,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	}
	if r.eth {
		pkt.EgressRoute.LocalLinkAddress = r.mac
		pkt.EgressRoute.RemoteLinkAddress = f.guestMAC
		pkt.EgressRoute.NetProto = pkt.NetworkProtocolNumber
		r.Endpoint.AddHeader(pkt)
	}
	if flags&header.TCPFlagAck != 0 {
		f.rcvAcked = ack
		if f.delackOn && ack == f.rcvNxt {
			// The delayed ACK rode on this segment: a timer left
			// to fire would wake a thread for nothing.
			f.delack.Stop()
			f.delackOn = false
		}
	}
	var l gvstack.PacketBufferList
	l.PushBack(pkt)
	r.Endpoint.WritePackets(l) // a failed write is a lost segment
}
