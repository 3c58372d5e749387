package router

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// TestGeoIP: an address the database places is located, and the nearest
// region by coordinates serves it; an unknown one is not located.
func TestGeoIP(t *testing.T) {
	path := testutil.WriteGeoIP(t, map[string][2]float64{"198.51.100.0/24": {48.86, 2.35}, "203.0.113.0/24": {35.68, 139.69}})
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
