package site

import (
	"slices"
	"strings"
)

// CacheKey is the primary cache key of a request: host (lower-cased, without
// port, so every edge of a cluster agrees whatever port it listens on), the escaped path and the query string normalised by the site's
// key options, e.g. "www.example.com/img/a.png?v=2".
func (s *Site) CacheKey(host, escapedPath, rawQuery string) string {
	host = NormalizeHost(host)
	if escapedPath == "" {
		escapedPath = "/"
	}
	q := s.normalizeQuery(rawQuery)
	var b strings.Builder
	b.Grow(len(host) + len(escapedPath) + len(q) + 1)
	b.WriteString(host)
	b.WriteString(escapedPath)
	if q != "" {
		b.WriteByte('?')
		b.WriteString(q)
	}
	return b.String()
}

func (s *Site) normalizeQuery(raw string) string {
	if raw == "" || s.query == "ignore" {
		return ""
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, p := range parts {
		if p == "" {
			continue
		}
		name, _, _ := strings.Cut(p, "=")
		switch s.query {
		case "include":
			if !slices.Contains(s.params, name) {
				continue
			}
		case "exclude":
			if slices.Contains(s.params, name) {
				continue
			}
		}
		kept = append(kept, p)
	}
	slices.SortStableFunc(kept, func(a, b string) int {
		an, _, _ := strings.Cut(a, "=")
		bn, _, _ := strings.Cut(b, "=")
		return strings.Compare(an, bn)
	})
	return strings.Join(kept, "&")
}

// NormalizeHost lower-cases a Host value and strips its port and a trailing dot.
func NormalizeHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}
