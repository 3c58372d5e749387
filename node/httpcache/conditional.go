package httpcache

import (
	"net/http"
	"strings"
	"time"
)

// Validators are what a stored response offers for conditional requests.
type Validators struct {
	ETag         string    // as sent, including W/ and quotes; "" if none
	LastModified time.Time // zero if none or unparsable
}

// ValidatorsOf extracts the validators of a response header.
func ValidatorsOf(h http.Header) Validators {
	v := Validators{ETag: h.Get("ETag")}
	if lm, err := http.ParseTime(h.Get("Last-Modified")); err == nil {
		v.LastModified = lm
	}
	return v
}

// CheckPreconditions evaluates the request's preconditions against a stored
// response in the order of RFC 9110 §13.2.2 and returns 0 to serve it as usual,
// 304 Not Modified or 412 Precondition Failed.
func CheckPreconditions(method string, req http.Header, v Validators) int {
	safe := method == http.MethodGet || method == http.MethodHead
	if im := req.Get("If-Match"); im != "" {
		if !matchETag(im, v.ETag, false) {
			return http.StatusPreconditionFailed
		}
	} else if ius := req.Get("If-Unmodified-Since"); ius != "" && !v.LastModified.IsZero() {
		if t, err := http.ParseTime(ius); err == nil && v.LastModified.After(t) {
			return http.StatusPreconditionFailed
		}
	}
	if inm := req.Get("If-None-Match"); inm != "" {
		if matchETag(inm, v.ETag, true) {
			if safe {
				return http.StatusNotModified
			}
			return http.StatusPreconditionFailed
		}
		return 0
	}
	if ims := req.Get("If-Modified-Since"); ims != "" && safe && !v.LastModified.IsZero() {
		if t, err := http.ParseTime(ims); err == nil && !v.LastModified.After(t) {
			return http.StatusNotModified
		}
	}
	return 0
}

// matchETag reports whether the list (an If-Match or If-None-Match value)
// matches etag, with weak or strong comparison (RFC 9110 §8.8.3.2).
func matchETag(list, etag string, weak bool) bool {
	if strings.TrimSpace(list) == "*" {
		return etag != ""
	}
	if etag == "" {
		return false
	}
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if weak {
			if opaque(item) == opaque(etag) {
				return true
			}
		} else if !isWeak(item) && !isWeak(etag) && item == etag {
			return true
		}
	}
	return false
}

func isWeak(tag string) bool { return strings.HasPrefix(tag, "W/") }

func opaque(tag string) string { return strings.TrimPrefix(tag, "W/") }

// IfRangeMatches reports whether a Range request's If-Range (RFC 9110 §13.1.5)
// allows answering with a partial response. No If-Range always does. An entity
// tag must match strongly; a date must equal Last-Modified exactly.
func IfRangeMatches(req http.Header, v Validators) bool {
	ir := strings.TrimSpace(req.Get("If-Range"))
	if ir == "" {
		return true
	}
	if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
		return !isWeak(ir) && !isWeak(v.ETag) && ir == v.ETag
	}
	t, err := http.ParseTime(ir)
	return err == nil && !v.LastModified.IsZero() && t.Equal(v.LastModified)
}
