package site

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// ReroutingFields are request fields that some origin frameworks obey as a
// second request line: IIS's URL Rewrite and Symfony read X-Original-URL or
// X-Rewrite-URL as the path to serve, and many frameworks read the
// X-HTTP-Method family as the method. The cache keys a request by its own
// method and target, so an origin that obeys one of them answers another
// resource under this key, and one client's header poisons the entry every
// client gets. The edge drops them from every origin and peer request
// unless the site names them in forward_headers.
var ReroutingFields = []string{
	"X-Original-Url", "X-Rewrite-Url",
	"X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
}

// compileForwardHeaders sets the re-routing fields the site forwards.
func (c Config) compileForwardHeaders(s *Site, fail func(field, format string, a ...any)) {
	for i, f := range c.ForwardHeaders {
		name := http.CanonicalHeaderKey(strings.TrimSpace(f))
		if !slices.Contains(ReroutingFields, name) {
			fail(fmt.Sprintf("forward_headers[%d]", i), "%q is forwarded anyway; only %s are dropped and may be listed",
				f, strings.Join(ReroutingFields, ", "))
			continue
		}
		s.forward = append(s.forward, name)
	}
}

// Rerouting reports whether h carries a field that DropRerouting removes.
func (s *Site) Rerouting(h http.Header) bool {
	for _, f := range ReroutingFields {
		if _, ok := h[f]; ok && !slices.Contains(s.forward, f) {
			return true
		}
	}
	return false
}

// DroppedRerouting names the re-routing fields the site does not forward.
func (s *Site) DroppedRerouting() []string {
	var names []string
	for _, f := range ReroutingFields {
		if !slices.Contains(s.forward, f) {
			names = append(names, f)
		}
	}
	return names
}

// DropRerouting removes from h the re-routing fields the site does not
// forward (see ReroutingFields).
func (s *Site) DropRerouting(h http.Header) {
	for _, f := range s.DroppedRerouting() {
		delete(h, f)
	}
}
