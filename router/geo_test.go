package router

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// writeGeoIP writes a MaxMind database placing each network at its
// coordinates, with MaxMind's own writer.
func writeGeoIP(t *testing.T, places map[string][2]float64) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-City", IncludeReservedNetworks: true, IPVersion: 6,
		Description: map[string]string{"en": "meshcdn test locations"}})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, at := range places {
		_, network, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		rec := mmdbtype.Map{"location": mmdbtype.Map{
			"latitude": mmdbtype.Float64(at[0]), "longitude": mmdbtype.Float64(at[1])}}
		if err := tree.Insert(network, rec); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "geo.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGeoIP: an address the database places is located, and the nearest
// region by coordinates serves it; an unknown one is not located.
func TestGeoIP(t *testing.T) {
	path := writeGeoIP(t, map[string][2]float64{"198.51.100.0/24": {48.86, 2.35}, "203.0.113.0/24": {35.68, 139.69}})
	g, err := OpenGeoIP(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	z, err := ParseZones([]byte(zonesJSON))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ addr, want string }{{"198.51.100.7", "frankfurt"}, {"203.0.113.9", "hangzhou"}} {
		lat, lon, ok := g.Locate(netip.MustParseAddr(tt.addr))
		if !ok {
			t.Fatalf("%s not located", tt.addr)
		}
		if got, _ := z.Nearest(lat, lon); got != tt.want {
			t.Errorf("%s at %v, %v: nearest %s; want %s", tt.addr, lat, lon, got, tt.want)
		}
	}
	if _, _, ok := g.Locate(netip.MustParseAddr("192.0.2.1")); ok {
		t.Error("an address outside the database was located")
	}
	if _, err := OpenGeoIP(filepath.Join(t.TempDir(), "none.mmdb")); err == nil {
		t.Error("a missing database opened")
	}
}
