package httpcache

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dunglas/httpsfv"
)

// TargetedFields are the targeted cache-control fields (RFC 9213) the edge
// honours, first match wins: its own, then the one for every CDN. When
// one is present its directives replace Cache-Control's for the edge's own
// storing and serving, and it is not forwarded to clients; Cache-Control
// goes to them unchanged.
var TargetedFields = []string{"Meshcdn-Cache-Control", "Cdn-Cache-Control"}

// ResponseDirectives parses the directives that govern how the edge stores
// and serves a response: those of the first valid targeted field, else
// Cache-Control's.
func ResponseDirectives(h http.Header) Directives {
	for _, f := range TargetedFields {
		if lines, ok := h[f]; ok && ValidTargeted(lines) {
			return ParseCacheControl(http.Header{"Cache-Control": lines})
		}
	}
	return ParseCacheControl(h)
}

// ValidTargeted reports whether lines are a valid targeted field value
// (RFC 9213 §2.1): a non-empty Structured Fields Dictionary (RFC 8941)
// whose directives have the types Cache-Control gives them, a non-negative
// Integer for the delta-seconds ones, true for the bare ones, true or a
// String of field names for no-cache and private. A cache ignores any
// other, as if it were absent.
func ValidTargeted(lines []string) bool {
	d, err := httpsfv.UnmarshalDictionary(lines)
	if err != nil || len(d.Names()) == 0 {
		return false
	}
	for _, name := range d.Names() {
		m, _ := d.Get(name)
		item, ok := m.(httpsfv.Item)
		switch name {
		case "max-age", "s-maxage", "stale-while-revalidate", "stale-if-error":
			if n, isInt := item.Value.(int64); !ok || !isInt || n < 0 {
				return false
			}
		case "no-store", "public", "must-revalidate", "proxy-revalidate", "no-transform", "immutable", "must-understand":
			if !ok || item.Value != true {
				return false
			}
		case "no-cache", "private":
			if _, isString := item.Value.(string); !ok || item.Value != true && !isString {
				return false
			}
		}
	}
	return true
}

// DropInvalidTargeted removes the targeted fields that are not valid (a
// cache ignores them), before a response is stored: what remains first is
// the field the edge decided by, which DropTargeted finds without parsing.
func DropInvalidTargeted(h http.Header) {
	for _, f := range TargetedFields {
		if lines, ok := h[f]; ok && !ValidTargeted(lines) {
			delete(h, f)
		}
	}
}

// DropTargeted removes the targeted field the edge used from a response
// for a client.
func DropTargeted(h http.Header) {
	DropTargetedFields(HeaderFields(h))
}

// DropTargetedFields is DropTargeted for a header in any front's form.
func DropTargetedFields(f Fields) {
	if name := UsedTargeted(f); name != "" {
		f.Del(name)
	}
}

// UsedTargeted is the name of the targeted field the edge used, which a
// client does not get, or "" for none.
func UsedTargeted(f Fields) string {
	for _, name := range TargetedFields {
		if f.Has(name) {
			return name
		}
	}
	return ""
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
