package httpcache

import (
	"net/http"
	"strings"
)

// Unset marks a delta-seconds directive that is absent.
const Unset = -1

// maxDelta is the value a cache must use for a delta-seconds it cannot represent
// (RFC 9111 §1.2.2).
const maxDelta = 2147483648

// Directives is a parsed Cache-Control field (RFC 9111 §5.2). Delta-seconds
// directives hold Unset when absent; a malformed value (max-age=abc) counts as 0,
// which makes the response stale rather than fresh for longer than intended.
type Directives struct {
	MaxAge               int64
	SMaxAge              int64
	MaxStale             int64 // request only; "max-stale" without a value is maxDelta
	MinFresh             int64 // request only
	StaleWhileRevalidate int64 // RFC 5861
	StaleIfError         int64 // RFC 5861

	NoStore         bool
	NoCache         bool // unqualified no-cache
	Private         bool // unqualified private
	Public          bool
	MustRevalidate  bool
	ProxyRevalidate bool
	MustUnderstand  bool
	NoTransform     bool
	OnlyIfCached    bool
	Immutable       bool

	// NoCacheFields and PrivateFields list the field names of the qualified forms
	// (no-cache="set-cookie"), lower-cased. A shared cache strips them before storing.
	NoCacheFields []string
	PrivateFields []string
}

// ParseCacheControl parses every Cache-Control field line of h. The first
// occurrence of a repeated directive wins (RFC 9111 §4.2.1). Unknown directives are
// ignored.
func ParseCacheControl(h http.Header) Directives {
	d := Directives{MaxAge: Unset, SMaxAge: Unset, MaxStale: Unset, MinFresh: Unset,
		StaleWhileRevalidate: Unset, StaleIfError: Unset}
	for _, line := range h["Cache-Control"] {
		d.parse(line)
	}
	return d
}

// ParseDirectives parses one Cache-Control field value.
func ParseDirectives(s string) Directives {
	d := Directives{MaxAge: Unset, SMaxAge: Unset, MaxStale: Unset, MinFresh: Unset,
		StaleWhileRevalidate: Unset, StaleIfError: Unset}
	d.parse(s)
	return d
}

func (d *Directives) parse(s string) {
	for len(s) > 0 {
		var item string
		item, s = nextItem(s)
		name, value, hasValue := strings.Cut(item, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if strings.HasPrefix(value, `"`) {
			value = unquote(value)
		}
		switch name {
		case "max-age":
			setDelta(&d.MaxAge, value)
		case "s-maxage":
			setDelta(&d.SMaxAge, value)
		case "max-stale":
			if hasValue {
				setDelta(&d.MaxStale, value)
			} else if d.MaxStale == Unset {
				d.MaxStale = maxDelta
			}
		case "min-fresh":
			setDelta(&d.MinFresh, value)
		case "stale-while-revalidate":
			setDelta(&d.StaleWhileRevalidate, value)
		case "stale-if-error":
			setDelta(&d.StaleIfError, value)
		case "no-store":
			d.NoStore = true
		case "no-cache":
			if hasValue && value != "" {
				d.NoCacheFields = appendFields(d.NoCacheFields, value)
			} else {
				d.NoCache = true
			}
		case "private":
			if hasValue && value != "" {
				d.PrivateFields = appendFields(d.PrivateFields, value)
			} else {
				d.Private = true
			}
		case "public":
			d.Public = true
		case "must-revalidate":
			d.MustRevalidate = true
		case "proxy-revalidate":
			d.ProxyRevalidate = true
		case "must-understand":
			d.MustUnderstand = true
		case "no-transform":
			d.NoTransform = true
		case "only-if-cached":
			d.OnlyIfCached = true
		case "immutable":
			d.Immutable = true
		}
	}
}

// nextItem splits off the first comma-separated item, honouring quoted strings.
func nextItem(s string) (item, rest string) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote && i+1 < len(s):
			i++
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

func unquote(v string) string {
	v = strings.TrimPrefix(v, `"`)
	v = strings.TrimSuffix(v, `"`)
	if !strings.Contains(v, `\`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

func appendFields(dst []string, v string) []string {
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.ToLower(strings.TrimSpace(f)); f != "" {
			dst = append(dst, f)
		}
	}
	return dst
}

// setDelta stores the first occurrence of a delta-seconds directive.
func setDelta(dst *int64, v string) {
	if *dst != Unset {
		return
	}
	*dst = ParseDelta(v)
}

// ParseDelta parses delta-seconds (RFC 9111 §1.2.2): digits only; anything else
// gives 0, and values past 2^31 are capped at 2^31.
func ParseDelta(v string) int64 {
	if v == "" {
		return 0
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
		if n >= maxDelta {
			return maxDelta
		}
	}
	return n
}
