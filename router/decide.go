package router

import "net/netip"

// Locator places a client in a region: by the coverage-zone file, then by
// GeoIP to the nearest region, then in the default region.
type Locator struct {
	zones *Zones
	geo   *GeoIP // nil without a database
	deflt string
}

// NewLocator locates by zones, then geo (may be nil), then deflt.
func NewLocator(zones *Zones, geo *GeoIP, deflt string) *Locator {
	return &Locator{zones: zones, geo: geo, deflt: deflt}
}

// Zones is the coverage-zone file in use.
func (l *Locator) Zones() *Zones { return l.zones }

// How a client was located.
const (
	ByZone    = "zone"
	ByGeoIP   = "geoip"
	ByDefault = "default"
)

// Locate returns the region of a client address and how it was found.
func (l *Locator) Locate(addr netip.Addr) (region, how string) {
	z := l.zones
	if r, ok := z.Locate(addr); ok {
		return r, ByZone
	}
	if l.geo != nil {
		if lat, lon, ok := l.geo.Locate(addr); ok {
			if r, ok := z.Nearest(lat, lon); ok {
				return r, ByGeoIP
			}
		}
	}
	return l.deflt, ByDefault
}
