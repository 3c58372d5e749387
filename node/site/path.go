package site

import (
	"net/url"
	"strings"
)

// NormalizePath returns the escaped request path p as rules, cache keys and
// the origin see it: dot segments removed (RFC 3986 5.2.4), spelled
// percent-encoded too ("%2e%2e"), and, with mergeSlashes, runs of slashes
// merged into one. A path that does not start with "/" is returned as it
// is. "/static/../dyn/x" becomes "/dyn/x", so it meets the rules of /dyn/.
func NormalizePath(p string, mergeSlashes bool) string {
	if !strings.HasPrefix(p, "/") || !mayNormalize(p, mergeSlashes) {
		return p // the common case (/img/logo.png), untouched and unallocated
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch dots(s) {
		case 1: // "."
		case 2: // "..": up one, never above the root
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			if s == "" && mergeSlashes && !last {
				continue
			}
			out = append(out, s)
			continue
		}
		if last { // "/a/b/.." is "/a/": the path stays a directory
			out = append(out, "")
		}
	}
	return "/" + strings.Join(out, "/")
}

// mayNormalize reports whether p may hold a dot segment (every segment
// follows a slash) or, with mergeSlashes, a run of slashes.
func mayNormalize(p string, mergeSlashes bool) bool {
	return strings.Contains(p, "/.") || strings.Contains(p, "/%2e") || strings.Contains(p, "/%2E") ||
		(mergeSlashes && strings.Contains(p, "//"))
}

// dots tells a dot segment: 1 for ".", 2 for "..", in any mix of "." and
// "%2e"; 0 for anything else.
func dots(s string) int {
	if len(s) == 0 || len(s) > 6 {
		return 0
	}
	n := 0
	for s != "" {
		switch {
		case s[0] == '.':
			s = s[1:]
		case len(s) >= 3 && s[0] == '%' && s[1] == '2' && (s[2] == 'e' || s[2] == 'E'):
			s = s[3:]
		default:
			return 0
		}
		n++
	}
	if n > 2 {
		return 0
	}
	return n
}

// SetPath sets u's path to the escaped path p, keeping RawPath only where
// the escaping differs from the default (as url.URL does itself).
func SetPath(u *url.URL, p string) error {
	dec, err := url.PathUnescape(p)
	if err != nil {
		return err
	}
	u.Path, u.RawPath = dec, ""
	if u.EscapedPath() != p {
		u.RawPath = p
	}
	return nil
}
