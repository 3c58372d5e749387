package router

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// serveDNS runs d on a loopback UDP port until the test ends.
func serveDNS(t *testing.T, d *DNS) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: d}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// ask sends one query, with a client subnet when subnet is set, through a
// real DNS client.
func ask(t *testing.T, addr, name string, qtype uint16, subnet string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if subnet != "" {
		_, n, err := net.ParseCIDR(subnet)
		if err != nil {
			t.Fatal(err)
		}
		ones, _ := n.Mask.Size()
		family := uint16(1)
		if n.IP.To4() == nil {
			family = 2
		}
		o := m.SetEdns0(1232, false).IsEdns0()
		o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: family, SourceNetmask: uint8(ones), Address: n.IP})
	}
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func addrs(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	slices.Sort(out)
	return out
}

// TestDNS: a client subnet in a region's coverage zone gets that region's
// edges, with the subnet's scope; a client the GeoIP database places goes
// to the nearest region; AAAA gets IPv6 edges; other names are refused.
func TestDNS(t *testing.T) {
	z, err := ParseZones([]byte(zonesJSON))
	if err != nil {
		t.Fatal(err)
	}
	g, err := OpenGeoIP(testutil.WriteGeoIP(t, map[string][2]float64{"198.51.100.0/24": {48.86, 2.35}}))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	edges := []Edge{{Name: "hz1", Region: "hangzhou", HTTPAddr: "127.0.0.11:80"}, {Name: "hz2", Region: "hangzhou", HTTPAddr: "127.0.0.12:80"},
		{Name: "hz6", Region: "hangzhou", HTTPAddr: "[2001:db8:1::11]:80"},
		{Name: "fra1", Region: "frankfurt", HTTPAddr: "127.0.0.21:80"}, {Name: "fra2", Region: "frankfurt", HTTPAddr: "127.0.0.22:80"}}
	var mu sync.Mutex
	var seen []string
	loc := NewLocator(z, g, "frankfurt")
	d := &DNS{Domains: []string{"www.example.test."}, Locator: func() *Locator { return loc }, Answers: 3,
		Edges: func() []Edge { return edges }, Observe: func(method, region, how string) {
			mu.Lock()
			seen = append(seen, region+"/"+how)
			mu.Unlock()
		}}
	addr := serveDNS(t, d)

	r := ask(t, addr, "www.example.test.", dns.TypeA, "10.1.9.0/24")
	if got := addrs(r); !slices.Equal(got, []string{"127.0.0.11", "127.0.0.12"}) || !r.Authoritative || len(r.Answer) == 0 || r.Answer[0].Header().Ttl != 30 {
		t.Errorf("A for a Hangzhou subnet: %v (aa=%v)", got, r.Authoritative)
	}
	if o := r.IsEdns0(); o == nil || len(o.Option) != 1 || o.Option[0].(*dns.EDNS0_SUBNET).SourceScope != 24 {
		t.Errorf("the answer's client subnet: %v", r.Extra)
	}
	if got := addrs(ask(t, addr, "WWW.example.test.", dns.TypeA, "10.2.0.0/16")); !slices.Equal(got, []string{"127.0.0.21", "127.0.0.22"}) {
		t.Errorf("A for a Frankfurt subnet: %v", got)
	}
	if got := addrs(ask(t, addr, "www.example.test.", dns.TypeAAAA, "2001:db8:1::/56")); !slices.Equal(got, []string{"2001:db8:1::11"}) {
		t.Errorf("AAAA for a Hangzhou subnet: %v", got)
	}
	// Outside every zone, placed by GeoIP in Paris: Frankfurt.
	if got := addrs(ask(t, addr, "www.example.test.", dns.TypeA, "198.51.100.0/24")); !slices.Equal(got, []string{"127.0.0.21", "127.0.0.22"}) {
		t.Errorf("A for a client GeoIP places in Paris: %v", got)
	}
	if r := ask(t, addr, "other.test.", dns.TypeA, ""); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Errorf("another name: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if r := ask(t, addr, "www.example.test.", dns.TypeMX, ""); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("MX: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	// The resolver's own address, outside every zone and the database: the default region.
	if got := addrs(ask(t, addr, "www.example.test.", dns.TypeA, "")); !slices.Equal(got, []string{"127.0.0.21", "127.0.0.22"}) {
		t.Errorf("A without a client subnet: %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, []string{"hangzhou/zone", "frankfurt/zone", "hangzhou/zone", "frankfurt/geoip", "frankfurt/default"}) {
		t.Errorf("observed %v", seen)
	}
}
