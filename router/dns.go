package router

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNS answers A and AAAA queries for the router's domains with the
// addresses of healthy edges near the client (its EDNS Client Subnet when
// the resolver sends one, else the resolver's own address), and refuses
// every other name: it is authoritative for its domains alone.
type DNS struct {
	// Domains are the names answered, lower case, fully qualified.
	Domains []string
	// Locator returns the locator in force (the zones may reload).
	Locator func() *Locator
	// Edges lists the healthy edges.
	Edges func() []Edge
	// Answers is how many edges an answer names (default 2); TTL their
	// time to live in seconds (default 30).
	Answers int
	TTL     uint32
	Log     *slog.Logger
	// Observe, when set, is told every answer's region and how the client
	// was located.
	Observe func(method, region, how string)
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	defer func() { _ = w.WriteMsg(m) }()
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return
	}
	q := req.Question[0]
	if !slices.Contains(d.Domains, strings.ToLower(q.Name)) {
		m.Rcode = dns.RcodeRefused
		return
	}
	client, subnet := d.client(w, req)
	if subnet != nil {
		// The answer holds for the client's subnet as the resolver sent it.
		subnet.SourceScope = subnet.SourceNetmask
		o := m.SetEdns0(dns.DefaultMsgSize, false).IsEdns0()
		o.Option = append(o.Option, subnet)
	} else if req.IsEdns0() != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
	}
	if q.Qtype != dns.TypeA && q.Qtype != dns.TypeAAAA {
		return // the name exists, with no record of this type
	}
	start := time.Now()
	loc := d.Locator()
	region, how := loc.Locate(client)
	n := d.Answers
	if n <= 0 {
		n = 2
	}
	ttl := d.TTL
	if ttl == 0 {
		ttl = 30
	}
	edges, from := Pick(loc.Zones(), d.Edges(), region, n)
	if len(edges) == 0 {
		// No healthy edge anywhere: a resolver asks another server.
		m.Rcode = dns.RcodeServerFailure
	}
	for _, e := range edges {
		host, _, err := net.SplitHostPort(e.HTTPAddr)
		if err != nil {
			continue
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || ip.IsUnspecified() {
			continue
		}
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: ttl}
		switch {
		case q.Qtype == dns.TypeA && ip.Is4():
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: ip.AsSlice()})
		case q.Qtype == dns.TypeAAAA && ip.Is6() && !ip.Is4In6():
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
		}
	}
	if d.Observe != nil {
		d.Observe("dns", from, how)
	}
	if d.Log != nil {
		names := make([]string, len(edges))
		for i, e := range edges {
			names[i] = e.Name
		}
		d.Log.Debug("route", "method", "dns", "client", client, "located", how, "region", region, "served_from", from,
			"edges", names, "latency", time.Since(start))
	}
}

// client is the address to place: the EDNS Client Subnet's, which it
// returns too, or the resolver's.
func (d *DNS) client(w dns.ResponseWriter, req *dns.Msg) (netip.Addr, *dns.EDNS0_SUBNET) {
	if o := req.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if s, ok := opt.(*dns.EDNS0_SUBNET); ok {
				if a, ok := netip.AddrFromSlice(s.Address); ok {
					c := *s
					return a.Unmap(), &c
				}
			}
		}
	}
	var a netip.Addr
	switch ra := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		a, _ = netip.AddrFromSlice(ra.IP)
	case *net.TCPAddr:
		a, _ = netip.AddrFromSlice(ra.IP)
	}
	return a.Unmap(), nil
}
