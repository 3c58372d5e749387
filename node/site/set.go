package site

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Set finds the site of a request by its Host. It is immutable.
type Set struct {
	list     []*Site // in configuration order
	exact    map[string]*Site
	wildcard map[string]*Site // "example.com" for "*.example.com"
	fallback *Site
}

// NewSet indexes sites by host name. A host named by two sites is an error.
// defaultOrigins, when given, build a catch-all site for hosts no site names;
// without them such hosts get 404 and the edge is never an open proxy.
func NewSet(sites []*Site, defaultOrigins []*url.URL) (*Set, error) {
	s := &Set{list: slices.Clone(sites), exact: map[string]*Site{}, wildcard: map[string]*Site{}}
	for i, st := range sites {
		for _, h := range st.Hosts {
			m, name := s.exact, h
			if rest, ok := strings.CutPrefix(h, "*."); ok {
				m, name = s.wildcard, rest
			}
			if prev, dup := m[name]; dup {
				return nil, fmt.Errorf("sites[%d].hosts: %q is already bound to site %q", i, h, prev.Name)
			}
			m[name] = st
		}
	}
	if len(defaultOrigins) > 0 {
		cfg := Config{Name: "default", Hosts: []string{"default"}}
		for _, u := range defaultOrigins {
			cfg.Origins = append(cfg.Origins, OriginConfig{URL: u.String()})
		}
		fb, err := cfg.Compile()
		if err != nil {
			return nil, fmt.Errorf("default origin: %w", err)
		}
		fb.Hosts = nil
		s.fallback = fb
	}
	return s, nil
}

// Lookup returns the site for a Host value (a port is ignored).
func (s *Set) Lookup(host string) (*Site, bool) {
	host = NormalizeHost(host)
	if st, ok := s.exact[host]; ok {
		return st, true
	}
	for h := host; ; {
		_, rest, ok := strings.Cut(h, ".")
		if !ok {
			break
		}
		if st, ok := s.wildcard[rest]; ok {
			return st, true
		}
		h = rest
	}
	return s.fallback, s.fallback != nil
}

// Default returns the catch-all site of the default origins, or nil.
func (s *Set) Default() *Site { return s.fallback }

// Sites returns the configured sites in configuration order, not counting
// the default one.
func (s *Set) Sites() []*Site { return slices.Clone(s.list) }
