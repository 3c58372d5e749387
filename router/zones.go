// Package router decides which edges a user should talk to: it locates the
// client (a coverage-zone file, then a GeoIP database, then a default
// region) and picks healthy edges of that region, or of its fallbacks, from
// what the edges advertise in gossip.
package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"os"
	"slices"
	"sort"
)

// Zones is a coverage-zone file: the networks each region serves, where the
// region is, and which regions stand in for it. It is immutable.
type Zones struct {
	regions  map[string]*Region
	prefixes []zonePrefix // longest first
}

// Region is one region of a coverage-zone file.
type Region struct {
	Name string
	// Latitude and Longitude place the region, for clients located by
	// GeoIP; HasCoordinates is false when the file gives none.
	Latitude, Longitude float64
	HasCoordinates      bool
	// Fallback lists the regions that serve its clients when it has no
	// healthy edge, in order.
	Fallback []string
}

type zonePrefix struct {
	prefix netip.Prefix
	region string
}

// zonesFile is the file's JSON.
type zonesFile struct {
	Regions map[string]struct {
		Networks    []string `json:"networks"`
		Networks6   []string `json:"networks6"`
		Coordinates *struct {
			Latitude  float64 `json:"latitude"`
			Longitude float64 `json:"longitude"`
		} `json:"coordinates"`
		Fallback []string `json:"fallback"`
	} `json:"regions"`
}

// LoadZones reads a coverage-zone file.
func LoadZones(path string) (*Zones, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	z, err := ParseZones(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return z, nil
}

// ParseZones parses a coverage-zone file:
//
//	{"regions": {"NAME": {"networks": [CIDR...], "networks6": [CIDR...],
//	  "coordinates": {"latitude": ..., "longitude": ...}, "fallback": [NAME...]}}}
//
// Errors name the region and the field.
func ParseZones(b []byte) (*Zones, error) {
	var f zonesFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("not a coverage-zone file: %w", err)
	}
	if len(f.Regions) == 0 {
		return nil, errors.New("regions: no region")
	}
	z := &Zones{regions: map[string]*Region{}}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, name := range slices.Sorted(maps.Keys(f.Regions)) {
		rf := f.Regions[name]
		r := &Region{Name: name, Fallback: rf.Fallback}
		if c := rf.Coordinates; c != nil {
			if c.Latitude < -90 || c.Latitude > 90 || c.Longitude < -180 || c.Longitude > 180 {
				bad("regions.%s.coordinates: %v, %v is not a latitude and longitude", name, c.Latitude, c.Longitude)
			}
			r.Latitude, r.Longitude, r.HasCoordinates = c.Latitude, c.Longitude, true
		}
		for field, nets := range map[string][]string{"networks": rf.Networks, "networks6": rf.Networks6} {
			for i, s := range nets {
				p, err := netip.ParsePrefix(s)
				switch {
				case err != nil:
					bad("regions.%s.%s[%d]: %q is not a CIDR", name, field, i, s)
					continue
				case field == "networks" && !p.Addr().Is4(), field == "networks6" && !p.Addr().Is6():
					bad("regions.%s.%s[%d]: %s is not an IPv%s network", name, field, i, s, map[string]string{"networks": "4", "networks6": "6"}[field])
					continue
				}
				z.prefixes = append(z.prefixes, zonePrefix{prefix: p.Masked(), region: name})
			}
		}
		z.regions[name] = r
	}
	for _, r := range z.regions {
		for i, fb := range r.Fallback {
			if _, ok := z.regions[fb]; !ok || fb == r.Name {
				bad("regions.%s.fallback[%d]: %q is not another region of the file", r.Name, i, fb)
			}
		}
	}
	sort.SliceStable(z.prefixes, func(i, j int) bool { return z.prefixes[i].prefix.Bits() > z.prefixes[j].prefix.Bits() })
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return z, nil
}

// Locate returns the region whose networks hold addr, the most specific
// network winning.
func (z *Zones) Locate(addr netip.Addr) (string, bool) {
	addr = addr.Unmap()
	for _, p := range z.prefixes {
		if p.prefix.Contains(addr) {
			return p.region, true
		}
	}
	return "", false
}

// Region returns the region named name.
func (z *Zones) Region(name string) (*Region, bool) {
	r, ok := z.regions[name]
	return r, ok
}

// Nearest returns the region with coordinates closest to a point by
// great-circle distance.
func (z *Zones) Nearest(lat, lon float64) (string, bool) {
	best, bestD := "", math.Inf(1)
	for _, name := range slices.Sorted(maps.Keys(z.regions)) {
		r := z.regions[name]
		if !r.HasCoordinates {
			continue
		}
		if d := Distance(lat, lon, r.Latitude, r.Longitude); d < bestD {
			best, bestD = name, d
		}
	}
	return best, best != ""
}

// ByDistance lists the regions with coordinates, nearest to region's first
// (region excluded).
func (z *Zones) ByDistance(region string) []string {
	from, ok := z.regions[region]
	if !ok || !from.HasCoordinates {
		return nil
	}
	var out []string
	for name, r := range z.regions {
		if name != region && r.HasCoordinates {
			out = append(out, name)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := z.regions[out[i]], z.regions[out[j]]
		da := Distance(from.Latitude, from.Longitude, a.Latitude, a.Longitude)
		db := Distance(from.Latitude, from.Longitude, b.Latitude, b.Longitude)
		return da < db || (da == db && out[i] < out[j])
	})
	return out
}

// earthRadius is the Earth's mean radius in kilometres.
const earthRadius = 6371.0

// Distance is the great-circle distance in kilometres between two points
// (haversine).
func Distance(lat1, lon1, lat2, lon2 float64) float64 {
	rad := math.Pi / 180
	dLat, dLon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadius * math.Asin(math.Min(1, math.Sqrt(a)))
}
