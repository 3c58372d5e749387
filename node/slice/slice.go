// Package slice splits a large object into slices of a site's slice_size,
// each cached under a key of its own: the keys, the Range request that
// fetches a slice, the check of the origin's answer, and which slices a
// stretch of the object covers. It does no I/O; the pipeline fetches and
// stores the slices.
package slice

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Limits of a site's slice_size: smaller slices cost a request each for
// little data, larger ones defeat the spreading.
const (
	MinSize = 64 << 10
	MaxSize = 256 << 20
)

// A Spec names one slice: the index-th of Size bytes.
type Spec struct {
	Size  int64
	Index int64
}

// Valid reports whether s can name a slice of an object of the largest
// size a Content-Range can state.
func (s Spec) Valid() bool {
	return s.Size >= MinSize && s.Size <= MaxSize && s.Index >= 0 && s.Index <= (1<<62)/s.Size
}

// Start is the slice's first byte in the object.
func (s Spec) Start() int64 { return s.Index * s.Size }

// Range is the Range field value that asks the origin for the slice.
func (s Spec) Range() string {
	return "bytes=" + strconv.FormatInt(s.Start(), 10) + "-" + strconv.FormatInt(s.Start()+s.Size-1, 10)
}

// Key is the cache key the slice of the object stored under key is
// stored under. It extends key past a NUL byte, which no request's key
// holds, as the compressed variants' keys do (cache.CodingKey), so
// cache.BaseKey gives key back: a purge of the object covers its slices. The size is part of it, so that slices of
// another slice_size never mix.
func (s Spec) Key(key string) string {
	return key + "\x00slice/" + strconv.FormatInt(s.Size, 10) + "/" + strconv.FormatInt(s.Index, 10)
}

// FromKey returns the object's key and the slice a key made by Key names.
func FromKey(k string) (string, Spec, bool) {
	base, rest, ok := strings.Cut(k, "\x00slice/")
	if !ok {
		return "", Spec{}, false
	}
	size, index, ok := strings.Cut(rest, "/")
	if !ok {
		return "", Spec{}, false
	}
	var s Spec
	var err1, err2 error
	s.Size, err1 = strconv.ParseInt(size, 10, 64)
	s.Index, err2 = strconv.ParseInt(index, 10, 64)
	if err1 != nil || err2 != nil || !s.Valid() {
		return "", Spec{}, false
	}
	return base, s, true
}

// Count is how many slices of size bytes an object of total bytes has.
func Count(total, size int64) int64 {
	if total <= 0 {
		return 0
	}
	return (total-1)/size + 1
}

// Covering returns the first and last index of the slices of size bytes
// that hold [off, off+n) of an object; n must be positive.
func Covering(off, n, size int64) (first, last int64) {
	return off / size, (off + n - 1) / size
}

// ErrMismatch is returned for an origin's 206 that is not the slice asked
// for.
var ErrMismatch = errors.New("slice: the origin's partial response is not the slice asked for")

// Check verifies the Content-Range of the origin's 206 answer to s's Range
// request, and returns the object's total length: the answer must start
// where the slice does and end where it does or at the object's end.
func (s Spec) Check(contentRange string) (int64, error) {
	start, end, total, err := ParseContentRange(contentRange)
	if err != nil {
		return 0, err
	}
	want := min(s.Start()+s.Size, total) - 1
	if start != s.Start() || end != want {
		return 0, fmt.Errorf("%w: %q for %s", ErrMismatch, contentRange, s.Range())
	}
	return total, nil
}

// ParseContentRange parses a satisfied byte range's Content-Range value,
// "bytes first-last/complete-length" (RFC 9110 §14.4), with a known
// complete length.
func ParseContentRange(v string) (first, last, total int64, err error) {
	bad := fmt.Errorf("slice: Content-Range %q is not a satisfied byte range of a known length", v)
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, complete, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	first, err1 := parseLength(a)
	last, err2 := parseLength(b)
	total, err3 := parseLength(complete)
	if err1 != nil || err2 != nil || err3 != nil || first > last || last >= total {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// parseLength parses a non-negative decimal of at most 18 digits (so that
// sums of two stay in an int64).
func parseLength(s string) (int64, error) {
	if s == "" || len(s) > 18 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("not a length")
	}
	return strconv.ParseInt(s, 10, 64)
}

// Version is what tells one version of an object from another: the
// validators each slice's response carries, and the length.
type Version struct {
	ETag         string
	LastModified time.Time
	Total        int64
}

// Same reports whether a and b are slices of one version: the same length
// and ETag, or, without ETags, the same Last-Modified.
func (a Version) Same(b Version) bool {
	if a.Total != b.Total || a.ETag != b.ETag {
		return false
	}
	return a.ETag != "" || a.LastModified.Equal(b.LastModified)
}
