package access

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// ListConfig is an allow list or a deny list: exactly one of Allow and Deny.
type ListConfig struct {
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
}

// RefererConfig is a list of Referer host names: "example.com" matches it
// and its subdomains, "*.example.com" its subdomains only.
type RefererConfig struct {
	ListConfig `yaml:",inline"`
	// AllowEmpty lets a request without a Referer pass. Default: false for
	// an allow list (hot-linkers can drop the header), true for a deny list.
	AllowEmpty *bool `yaml:"allow_empty"`
}

// IPConfig is a list of client networks (CIDRs, or single addresses).
type IPConfig struct {
	ListConfig `yaml:",inline"`
	// TrustProxy lists the networks whose X-Forwarded-For is believed: a
	// request from one of them is judged (and rate limited) by the header's
	// first address.
	TrustProxy []string `yaml:"trust_proxy"`
}

// list is a compiled allow or deny list.
type list[T any] struct {
	allow bool
	items []T
}

func compileList[T any](field string, c ListConfig, parse func(string) (T, error)) (*list[T], error) {
	switch {
	case len(c.Allow) > 0 && len(c.Deny) > 0:
		return nil, fmt.Errorf("%s: allow and deny exclude each other", field)
	case len(c.Allow) == 0 && len(c.Deny) == 0:
		return nil, fmt.Errorf("%s: an allow or a deny list is required", field)
	}
	l := &list[T]{allow: len(c.Allow) > 0}
	src, name := c.Deny, "deny"
	if l.allow {
		src, name = c.Allow, "allow"
	}
	var errs []error
	for i, s := range src {
		v, err := parse(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%s[%d]: %w", field, name, i, err))
			continue
		}
		l.items = append(l.items, v)
	}
	return l, errors.Join(errs...)
}

// passes reports whether a value the list's items match (matched) passes.
func (l *list[T]) passes(match func(T) bool) bool {
	return slices.ContainsFunc(l.items, match) == l.allow
}

// refererPattern is a compiled Referer entry.
type refererPattern struct {
	host     string // lower case, without "*."
	wildcard bool   // "*.host": subdomains only
}

func parseReferer(s string) (refererPattern, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	p := refererPattern{}
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		p.wildcard, h = true, rest
	}
	if h == "" || strings.ContainsAny(h, "/:*?# ") {
		return p, fmt.Errorf("%q is not a host name (example.com or *.example.com)", s)
	}
	p.host = h
	return p, nil
}

func (p refererPattern) matches(host string) bool {
	if host == p.host {
		return !p.wildcard
	}
	return strings.HasSuffix(host, "."+p.host)
}

// refererHost is the host of a Referer value, lower case; ok is false for
// one that names none.
func refererHost(v string) (string, bool) {
	u, err := url.Parse(strings.TrimSpace(v))
	if err != nil || u.Host == "" {
		return "", false
	}
	return strings.TrimSuffix(strings.ToLower(u.Hostname()), "."), true
}

func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or an address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// glob is a User-Agent pattern: "*" matches any run of characters, the rest
// itself, case-insensitively.
type glob []string // the literal parts between the stars, lower case

func parseGlob(s string) (glob, error) {
	if s == "" {
		return nil, errors.New("an empty pattern (use * for any)")
	}
	return glob(strings.Split(strings.ToLower(s), "*")), nil
}

func (g glob) matches(s string) bool {
	s = strings.ToLower(s)
	if len(g) == 1 {
		return s == g[0]
	}
	if !strings.HasPrefix(s, g[0]) {
		return false
	}
	s = s[len(g[0]):]
	last := g[len(g)-1]
	for _, part := range g[1 : len(g)-1] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return strings.HasSuffix(s, last)
}
