// Package ra sends IPv6 router advertisements (RFC 4861 section 6) for
// guests that configure IPv6 themselves by SLAAC (RFC 4862), as
// slirp4netns's guests do: the router advertises itself from fe80::2
// (Source) as the default router, a prefix as on-link and autonomous, the
// link's MTU, and a resolver (RFC 8106). gVisor answers neighbour
// solicitations for fe80::2 but sends no advertisements itself.
//
// Build makes an advert (advert.go). An Advertiser (advertiser.go) sits
// on the link below a gVisor stack and sends adverts on the stack's NICs:
// one at start, a few more over the first seconds (the guest may bring
// its link up later), then one a minute, and one in answer to each router
// solicitation (at most one per 200 ms). Linux only.
package ra
