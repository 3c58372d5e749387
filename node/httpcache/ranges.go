package httpcache

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// MaxRanges bounds the ranges of one request; more are answered with the whole
// representation, as a defence against range amplification.
const MaxRanges = 32

// A Range is a resolved byte range [Start, Start+Length) of a representation.
type Range struct {
	Start, Length int64
}

// ContentRange formats the Content-Range value of r within size.
func (r Range) ContentRange(size int64) string {
	return "bytes " + strconv.FormatInt(r.Start, 10) + "-" + strconv.FormatInt(r.Start+r.Length-1, 10) +
		"/" + strconv.FormatInt(size, 10)
}

// Range parsing outcomes.
var (
	// ErrIgnoreRange means the Range field is malformed, not in bytes, or asks for
	// too many ranges: the full representation is served (RFC 9110 §14.2).
	ErrIgnoreRange = errors.New("httpcache: range ignored")
	// ErrUnsatisfiable means no range overlaps the representation: 416.
	ErrUnsatisfiable = errors.New("httpcache: range not satisfiable")
)

// ParseRange resolves a Range field value against a representation of size
// bytes. It returns the satisfiable ranges in request order, ErrIgnoreRange or
// ErrUnsatisfiable.
func ParseRange(s string, size int64) ([]Range, error) {
	unit, set, ok := strings.Cut(s, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return nil, ErrIgnoreRange
	}
	var out []Range
	n := 0
	for spec := range strings.SplitSeq(set, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		if n++; n > MaxRanges {
			return nil, ErrIgnoreRange
		}
		first, last, ok := strings.Cut(spec, "-")
		if !ok {
			return nil, ErrIgnoreRange
		}
		first, last = strings.TrimSpace(first), strings.TrimSpace(last)
		var r Range
		switch {
		case first == "": // suffix: the last N bytes
			k, err := parseUint(last)
			if err != nil {
				return nil, ErrIgnoreRange
			}
			if k == 0 || size == 0 {
				continue
			}
			k = min(k, size)
			r = Range{Start: size - k, Length: k}
		default:
			a, err := parseUint(first)
			if err != nil {
				return nil, ErrIgnoreRange
			}
			end := size - 1
			if last != "" {
				b, err := parseUint(last)
				if err != nil || b < a {
					return nil, ErrIgnoreRange
				}
				end = min(b, size-1)
			}
			if a >= size {
				continue
			}
			r = Range{Start: a, Length: end - a + 1}
		}
		out = append(out, r)
	}
	if n == 0 {
		return nil, ErrIgnoreRange
	}
	if len(out) == 0 {
		return nil, ErrUnsatisfiable
	}
	return coalesce(out), nil
}

// coalesce merges overlapping ranges (RFC 9110 §14.2 allows it), so that
// no request makes the edge send more bytes than the representation has:
// 32 times "bytes=0-" is one range. Ranges that do not overlap keep the
// order they were asked in.
func coalesce(rs []Range) []Range {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b Range) int { return cmp.Compare(a.Start, b.Start) })
	overlap := false
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Start < sorted[i-1].Start+sorted[i-1].Length {
			overlap = true
			break
		}
	}
	if !overlap {
		return rs
	}
	out := sorted[:1]
	for _, r := range sorted[1:] {
		last := &out[len(out)-1]
		if end := last.Start + last.Length; r.Start <= end {
			last.Length = max(end, r.Start+r.Length) - last.Start
			continue
		}
		out = append(out, r)
	}
	return out
}

func parseUint(s string) (int64, error) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, ErrIgnoreRange
	}
	return strconv.ParseInt(s, 10, 64)
}
