package router

import (
	"slices"
	"strings"
)

// Edge is an edge a user may be sent to, as it advertises itself.
type Edge struct {
	Name, Region, HTTPAddr string
	// Load is its client requests in flight.
	Load int
	// State is its membership state: alive, draining, leaving or
	// untrusted; Ready is set while it takes client traffic.
	State string
	Ready bool
}

// Healthy reports whether users may be sent to e: alive (not draining,
// leaving or unproven), ready, with an HTTP address, and fewer than maxLoad
// requests in flight (maxLoad 0: no limit).
func (e Edge) Healthy(maxLoad int) bool {
	return e.State == "alive" && e.Ready && e.HTTPAddr != "" && (maxLoad <= 0 || e.Load < maxLoad)
}

// Pick returns up to n edges for a client of region, least loaded first,
// and the region they are in: the region's own edges, else those of its
// fallbacks in order, else of the region nearest to it that has any (by
// coordinates), else of any region. edges are the healthy ones only.
func Pick(z *Zones, edges []Edge, region string, n int) ([]Edge, string) {
	byRegion := map[string][]Edge{}
	for _, e := range edges {
		byRegion[e.Region] = append(byRegion[e.Region], e)
	}
	order := []string{region}
	if r, ok := z.Region(region); ok {
		order = append(order, r.Fallback...)
	}
	order = append(order, z.ByDistance(region)...)
	var rest []string
	for name := range byRegion {
		rest = append(rest, name)
	}
	slices.Sort(rest)
	order = append(order, rest...)
	for _, r := range order {
		if es := byRegion[r]; len(es) > 0 {
			es = slices.Clone(es)
			slices.SortFunc(es, func(a, b Edge) int {
				if a.Load != b.Load {
					return a.Load - b.Load
				}
				return strings.Compare(a.Name, b.Name)
			})
			return es[:min(n, len(es))], r
		}
	}
	return nil, ""
}
