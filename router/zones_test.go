package router

import (
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const zonesJSON = `{"regions": {
  "hangzhou":  {"networks": ["10.1.0.0/16", "10.1.5.0/24"], "networks6": ["2001:db8:1::/48"],
                "coordinates": {"latitude": 30.27, "longitude": 120.15}, "fallback": ["frankfurt"]},
  "frankfurt": {"networks": ["10.2.0.0/16"], "coordinates": {"latitude": 50.11, "longitude": 8.68}},
  "special":   {"networks": ["10.1.5.128/25"], "fallback": ["hangzhou", "frankfurt"]},
  "virginia":  {"coordinates": {"latitude": 38.03, "longitude": -78.48}}
}}`

// TestZones: a client is placed by the most specific network holding it,
// IPv4 (mapped too) and IPv6; regions are found by distance.
func TestZones(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zones.json")
	if err := os.WriteFile(path, []byte(zonesJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	z, err := LoadZones(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ addr, want string }{
		{"10.1.2.3", "hangzhou"}, {"10.1.5.1", "hangzhou"}, {"10.1.5.200", "special"},
		{"::ffff:10.2.0.9", "frankfurt"}, {"2001:db8:1::7", "hangzhou"}, {"192.0.2.1", ""},
	} {
		got, ok := z.Locate(netip.MustParseAddr(tt.addr))
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Locate(%s) = %q, %v; want %q", tt.addr, got, ok, tt.want)
		}
	}
	if r, ok := z.Region("special"); !ok || r.HasCoordinates || len(r.Fallback) != 2 {
		t.Errorf("special: %+v", r)
	}
	// Paris is nearest Frankfurt; Tokyo nearest Hangzhou; New York nearest Virginia.
	for _, tt := range []struct {
		lat, lon float64
		want     string
	}{{48.86, 2.35, "frankfurt"}, {35.68, 139.69, "hangzhou"}, {40.71, -74.0, "virginia"}} {
		if got, _ := z.Nearest(tt.lat, tt.lon); got != tt.want {
			t.Errorf("Nearest(%v, %v) = %s; want %s", tt.lat, tt.lon, got, tt.want)
		}
	}
	if got := z.ByDistance("frankfurt"); strings.Join(got, ",") != "virginia,hangzhou" {
		t.Errorf("ByDistance(frankfurt) = %v", got)
	}
	// Frankfurt to Hangzhou is about 8,900 km.
	if d := Distance(50.11, 8.68, 30.27, 120.15); math.Abs(d-8900) > 150 {
		t.Errorf("Distance = %.0f km", d)
	}
}

// TestZonesErrors: a bad file is refused with the region and the field.
func TestZonesErrors(t *testing.T) {
	for _, tt := range []struct{ json, want string }{
		{`{"regions": {}}`, "regions: no region"},
		{`{"regions": {"a": {"networks": ["10.0.0.0/33"]}}}`, `regions.a.networks[0]: "10.0.0.0/33" is not a CIDR`},
		{`{"regions": {"a": {"networks": ["2001:db8::/32"]}}}`, "regions.a.networks[0]: 2001:db8::/32 is not an IPv4 network"},
		{`{"regions": {"a": {"networks6": ["10.0.0.0/8"]}}}`, "regions.a.networks6[0]: 10.0.0.0/8 is not an IPv6 network"},
		{`{"regions": {"a": {"fallback": ["b"]}}}`, `regions.a.fallback[0]: "b" is not another region of the file`},
		{`{"regions": {"a": {"coordinates": {"latitude": 91, "longitude": 0}}}}`, "regions.a.coordinates: 91, 0 is not a latitude and longitude"},
		{`{"regions": {"a": {"network": []}}}`, `unknown field "network"`},
		{`not json`, "not a coverage-zone file"},
	} {
		if _, err := ParseZones([]byte(tt.json)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v; want %q", tt.json, err, tt.want)
		}
	}
}

// TestPick: a region's own edges first (least loaded first), else its
// fallbacks in order, else the nearest region with edges, else any.
func TestPick(t *testing.T) {
	z, err := ParseZones([]byte(zonesJSON))
	if err != nil {
		t.Fatal(err)
	}
	edges := []Edge{
		{Name: "hz1", Region: "hangzhou", Load: 5}, {Name: "hz2", Region: "hangzhou", Load: 1},
		{Name: "fra1", Region: "frankfurt"}, {Name: "va1", Region: "virginia"},
	}
	names := func(es []Edge) string {
		var out []string
		for _, e := range es {
			out = append(out, e.Name)
		}
		return strings.Join(out, ",")
	}
	without := func(region string) []Edge {
		var out []Edge
		for _, e := range edges {
			if e.Region != region {
				out = append(out, e)
			}
		}
		return out
	}
	for _, tt := range []struct {
		edges  []Edge
		region string
		n      int
		want   string
		from   string
	}{
		{edges, "hangzhou", 2, "hz2,hz1", "hangzhou"},
		{edges, "hangzhou", 1, "hz2", "hangzhou"},
		{without("hangzhou"), "hangzhou", 2, "fra1", "frankfurt"}, // its fallback
		{edges, "special", 2, "hz2,hz1", "hangzhou"},              // no edges of its own: first fallback
		{without("frankfurt"), "frankfurt", 2, "va1", "virginia"}, // no fallback: nearest with edges
		{edges[3:], "nowhere", 2, "va1", "virginia"},              // unknown region: any
		{nil, "hangzhou", 2, "", ""},
	} {
		got, from := Pick(z, tt.edges, tt.region, tt.n)
		if names(got) != tt.want || from != tt.from {
			t.Errorf("Pick(%s) = %s from %q; want %s from %q", tt.region, names(got), from, tt.want, tt.from)
		}
	}
}
