package httpcache

import (
	"strconv"
	"strings"
)

// CacheName is the cache's identifier in Cache-Status and Via.
const CacheName = "meshcdn"

// Fwd is the RFC 9211 "fwd" parameter: why the request went forward.
type Fwd string

// Forward reasons (RFC 9211 §2.2).
const (
	FwdNone    Fwd = ""         // a hit
	FwdBypass  Fwd = "bypass"   // configured not to use the cache (bypass rule, hit-for-pass)
	FwdMethod  Fwd = "method"   // the method is not cacheable
	FwdURIMiss Fwd = "uri-miss" // nothing stored for the URI
	FwdVary    Fwd = "vary-miss"
	FwdStale   Fwd = "stale" // stored but stale: revalidated or refetched
)

// Status is one response's Cache-Status entry.
type Status struct {
	Hit       bool
	Fwd       Fwd
	FwdStatus int  // the status the next hop answered, 0 if none
	Stored    bool // this response was stored
	Collapsed bool // this request joined another's fill
	Detail    string
}

// DetailHeuristic is the detail of a response whose freshness lifetime
// the cache guessed from its Last-Modified (RFC 9111 §4.2.2).
const DetailHeuristic = "heuristic"

// Precomputed values for the hot path.
const statusHit = CacheName + "; hit"

// String formats s as a Cache-Status field value, e.g.
// "meshcdn; fwd=uri-miss; fwd-status=200; stored".
func (s Status) String() string {
	if s.Hit && s.Detail == "" {
		return statusHit
	}
	var b strings.Builder
	b.Grow(64)
	b.WriteString(CacheName)
	if s.Hit {
		b.WriteString("; hit")
	}
	if s.Fwd != FwdNone {
		b.WriteString("; fwd=")
		b.WriteString(string(s.Fwd))
	}
	if s.FwdStatus != 0 {
		b.WriteString("; fwd-status=")
		b.WriteString(strconv.Itoa(s.FwdStatus))
	}
	if s.Stored {
		b.WriteString("; stored")
	}
	if s.Collapsed {
		b.WriteString("; collapsed")
	}
	if s.Detail != "" {
		b.WriteString("; detail=")
		b.WriteString(s.Detail)
	}
	return b.String()
}

// Label indexes Labels: a short name of s for metrics and access logs.
type Label int

// Labels of Status.Label, by index.
var Labels = [...]string{"hit", "miss", "stale", "revalidated", "bypass", "pass", "method", "served-stale"}

// Label values.
const (
	LabelHit Label = iota
	LabelMiss
	LabelStale
	LabelRevalidated
	LabelBypass
	LabelPass
	LabelMethod
	LabelServedStale
)

func (l Label) String() string { return Labels[l] }

// Label classifies s: hit, miss, stale (refetched), revalidated (304), bypass
// (rule), pass (hit-for-pass), method (not GET or HEAD) or served-stale (a stale
// entry served by stale-while-revalidate or stale-if-error).
func (s Status) Label() Label {
	switch {
	case s.Hit && s.Fwd == FwdStale:
		return LabelServedStale
	case s.Hit:
		return LabelHit
	case s.Fwd == FwdStale && s.FwdStatus == 304:
		return LabelRevalidated
	case s.Fwd == FwdStale:
		return LabelStale
	case s.Fwd == FwdBypass && s.Detail == "hit-for-pass":
		return LabelPass
	case s.Fwd == FwdBypass:
		return LabelBypass
	case s.Fwd == FwdMethod:
		return LabelMethod
	default:
		return LabelMiss
	}
}
