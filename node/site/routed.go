package site

import (
	"errors"
	"net/netip"
	"strings"
)

// RoutedPrefix starts the path of a URL the router redirects a user to:
// http://EDGE-ADDRESS/_host/HOST/PATH asks the edge for http://HOST/PATH.
// A redirect to an edge's address would otherwise lose the site's host
// name, and with it the site and the cache key the other edges use.
const RoutedPrefix = "/_host/"

// ErrRoutedHost is a routed path whose host is not a host name.
var ErrRoutedHost = errors.New("the host of a /_host/ path is not a host name")

// Routed splits a routed request: when the escaped path starts with
// RoutedPrefix and the Host the client sent is an IP address (an edge's own
// address, as the router gives it) or the host the path names (a client
// that kept the Host header across the redirect), it returns the host named
// in the path and the rest of the path. ok is false for any other request,
// which is served as it is: a site reached by its name never sees its
// paths rewritten to another host.
func Routed(reqHost, escapedPath string) (host, path string, ok bool, err error) {
	if !strings.HasPrefix(escapedPath, RoutedPrefix) {
		return "", "", false, nil
	}
	name, rest, _ := strings.Cut(escapedPath[len(RoutedPrefix):], "/")
	name = strings.ToLower(name)
	h := NormalizeHost(reqHost)
	if _, perr := netip.ParseAddr(strings.Trim(h, "[]")); perr != nil && h != name {
		return "", "", false, nil
	}
	if !hostName(name) {
		return "", "", false, ErrRoutedHost
	}
	return name, "/" + rest, true, nil
}

// hostName reports whether s is a DNS host name (letters, digits, hyphens
// and dots, at most 253 characters) or an IPv4 address.
func hostName(s string) bool {
	if s == "" || len(s) > 253 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
