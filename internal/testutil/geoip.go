package testutil

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// WriteGeoIP writes a MaxMind database placing each network at its
// coordinates, with MaxMind's own writer.
func WriteGeoIP(t *testing.T, places map[string][2]float64) string {
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
