//go:build linux

package integration

import "golang.org/x/net/dns/dnsmessage"

// dnsAnswer answers one query: svc.test A -> 198.18.7.7, anything else
// with no records.
func dnsAnswer(q []byte) []byte {
	var m dnsmessage.Message
	if m.Unpack(q) != nil || len(m.Questions) != 1 {
		return nil
	}
	m.Header.Response = true
	qq := m.Questions[0]
	if qq.Type == dnsmessage.TypeA && qq.Name.String() == "svc.test." {
		m.Answers = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: qq.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
			Body:   &dnsmessage.AResource{A: [4]byte{198, 18, 7, 7}},
		}}
	} else if qq.Name.String() != "svc.test." {
		m.Header.RCode = dnsmessage.RCodeNameError
	}
	out, _ := m.Pack()
	return out
}
