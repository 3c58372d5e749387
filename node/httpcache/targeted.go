package httpcache

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TargetedFields are the targeted cache-control fields (RFC 9213) the edge
// honours, first match wins: its own, then the one for every CDN. When
// one is present its directives replace Cache-Control's for the edge's own
// storing and serving, and it is not forwarded to clients; Cache-Control
// goes to them unchanged.
var TargetedFields = []string{"Meshcdn-Cache-Control", "Cdn-Cache-Control"}

// ResponseDirectives parses the directives that govern how the edge stores
// and serves a response: those of the first targeted field present, else
// Cache-Control's.
func ResponseDirectives(h http.Header) Directives {
	for _, f := range TargetedFields {
		if lines, ok := h[f]; ok {
			return ParseCacheControl(http.Header{"Cache-Control": lines})
		}
	}
	return ParseCacheControl(h)
}

// DropTargeted removes the targeted field the edge used from a response
// for a client.
func DropTargeted(h http.Header) {
	for _, f := range TargetedFields {
		if _, ok := h[f]; ok {
			delete(h, f)
			return
		}
	}
}

// ParseHTTPDate parses an HTTP-date (RFC 9110 §5.6.7) strictly: one of the
// three formats recipients must accept, exactly as written there (no
// one-digit hour, no extra space), as a cache must to tell an invalid
// Expires (already expired) from a valid one.
func ParseHTTPDate(s string) (time.Time, bool) {
	t, err := http.ParseTime(s)
	if err != nil {
		return time.Time{}, false
	}
	for _, layout := range []string{http.TimeFormat, "Monday, 02-Jan-06 15:04:05 GMT", time.ANSIC} {
		if t.UTC().Format(layout) == s {
			return t, true
		}
	}
	return time.Time{}, false
}

// firstMember is the first member of a list-based field value: a cache
// that meets a list where one value belongs uses the first (RFC 9111 §5.1
// for Age).
func firstMember(v string) string {
	first, _, _ := strings.Cut(v, ",")
	return strings.TrimSpace(first)
}

// NormalizeAcceptLanguage orders Accept-Language's language ranges by
// quality, then by name, lower case, without spaces or q=1, so "en, fr" and
// "fr,en" (equal quality: equal preference) share one Vary variant.
func NormalizeAcceptLanguage(values []string) string {
	type lr struct {
		tag string
		q   float64
	}
	var ls []lr
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			tag, params, _ := strings.Cut(item, ";")
			tag = strings.ToLower(strings.TrimSpace(tag))
			if tag == "" {
				continue
			}
			q := 1.0
			if name, val, ok := strings.Cut(strings.TrimSpace(params), "="); ok && strings.EqualFold(strings.TrimSpace(name), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
					q = f
				}
			}
			ls = append(ls, lr{tag, q})
		}
	}
	slices.SortStableFunc(ls, func(a, b lr) int {
		if c := cmp.Compare(b.q, a.q); c != 0 {
			return c
		}
		return strings.Compare(a.tag, b.tag)
	})
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.tag)
		if l.q != 1 {
			b.WriteString(";q=" + strconv.FormatFloat(l.q, 'g', 3, 64))
		}
	}
	return b.String()
}
