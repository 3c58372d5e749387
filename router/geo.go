package router

import (
	"fmt"
	"net/netip"

	"github.com/oschwald/maxminddb-golang/v2"
)

// GeoIP places client addresses by a MaxMind database (GeoLite2 City or
// any database with a location record).
type GeoIP struct {
	db *maxminddb.Reader
}

// OpenGeoIP opens a MaxMind database file and checks its data.
func OpenGeoIP(path string) (*GeoIP, error) {
	db, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("geoip: %w", err)
	}
	if err := db.Verify(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("geoip: %s: %w", path, err)
	}
	return &GeoIP{db: db}, nil
}

// Locate returns where addr is, when the database knows.
func (g *GeoIP) Locate(addr netip.Addr) (lat, lon float64, ok bool) {
	var rec struct {
		Location struct {
			Latitude  *float64 `maxminddb:"latitude"`
			Longitude *float64 `maxminddb:"longitude"`
		} `maxminddb:"location"`
	}
	res := g.db.Lookup(addr.Unmap())
	if !res.Found() || res.Decode(&rec) != nil || rec.Location.Latitude == nil || rec.Location.Longitude == nil {
		return 0, 0, false
	}
	return *rec.Location.Latitude, *rec.Location.Longitude, true
}

// Close closes the database.
func (g *GeoIP) Close() error { return g.db.Close() }
