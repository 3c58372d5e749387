package httpcache

import (
	"net/http"
	"slices"
	"strings"
)

// VaryStar reports whether the response varies on "*": it can never be reused.
func VaryStar(h http.Header) bool {
	for _, line := range h["Vary"] {
		for f := range strings.SplitSeq(line, ",") {
			if strings.TrimSpace(f) == "*" {
				return true
			}
		}
	}
	return false
}

// VaryFields returns the canonical, sorted, de-duplicated field names of the
// response's Vary header, or nil.
func VaryFields(h http.Header) []string {
	var names []string
	for _, line := range h["Vary"] {
		for f := range strings.SplitSeq(line, ",") {
			if f = strings.TrimSpace(f); f != "" && f != "*" {
				names = append(names, http.CanonicalHeaderKey(f))
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// SecondaryKey is the request's secondary cache key for the given Vary field
// names (RFC 9111 §4.1): each named field's values, normalised so that values
// that differ only in white space, case of the coding names or order of
// Accept-Encoding's codings share one entry. Empty names give "".
func SecondaryKey(names []string, req http.Header) string {
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	for _, name := range names {
		b.WriteString(name)
		b.WriteByte('=')
		switch name {
		case "Accept-Encoding":
			b.WriteString(NormalizeAcceptEncoding(req.Values(name)))
		case "Accept-Language":
			b.WriteString(NormalizeAcceptLanguage(req.Values(name)))
		default:
			for i, v := range req.Values(name) {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strings.Join(strings.Fields(v), " "))
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// knownCodings are the content codings the edge keeps apart, in a fixed order.
var knownCodings = []string{"br", "gzip", "zstd", "deflate"}

// NormalizeAcceptEncoding reduces Accept-Encoding to the known codings the client
// accepts (q > 0), in a fixed order, e.g. "br, gzip". "identity", unknown codings
// and parameters are dropped, so "gzip,deflate,br" and "br;q=1.0, gzip, deflate"
// give the same value. The edge sends this value to the origin on fills too, so a
// stored response always matches the key it is stored under.
func NormalizeAcceptEncoding(values []string) string {
	var accepted [4]bool
	star := false
	for _, line := range values {
		for item := range strings.SplitSeq(line, ",") {
			name, params, _ := strings.Cut(item, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if qZero(params) {
				continue
			}
			if name == "*" {
				star = true
			}
			for i, c := range knownCodings {
				if name == c || (name == "x-gzip" && c == "gzip") {
					accepted[i] = true
				}
			}
		}
	}
	if star {
		accepted = [4]bool{true, true, true, true}
	}
	var b strings.Builder
	for i, ok := range accepted {
		if ok {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(knownCodings[i])
		}
	}
	return b.String()
}

// qZero reports whether a coding's parameters carry q=0 (not acceptable).
func qZero(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
			v = strings.TrimSpace(v)
			return strings.Trim(v, "0.") == "" && v != ""
		}
	}
	return false
}
