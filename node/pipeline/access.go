package pipeline

import (
	"context"
	"math"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/meshcdn/meshcdn/node/access"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/site"
)

// operatorRequest marks a request the node makes for an operator (a
// prefetch through this node), which a site's access rules do not judge.
type operatorRequest struct{}

// WithOperator marks ctx's requests as an operator's.
func WithOperator(ctx context.Context) context.Context {
	return context.WithValue(ctx, operatorRequest{}, true)
}

// checkAccess applies the site's access rules to the request as the client
// sent it (orig, before normalisation): a refused one is answered here
// (403, or 429 with Retry-After) and checkAccess returns false; a valid
// signed URL goes on without its signing parts, normalised again.
func (pl *Pipeline) checkAccess(x *exchange, orig *http.Request) bool {
	p := x.site.Access
	if p == nil || x.fromPeer || x.r.Method == "PURGE" || x.r.Context().Value(operatorRequest{}) != nil {
		return true
	}
	remote, _ := netip.ParseAddrPort(orig.RemoteAddr)
	d := p.Check(&access.Request{Path: orig.URL.EscapedPath(), RawQuery: orig.URL.RawQuery, Remote: remote.Addr(),
		Header: orig.Header, Now: x.start})
	switch {
	case d.Reason == access.RateLimited:
		pl.metrics.rateLimited.WithLabelValues(x.site.Name).Inc()
		x.status = httpcache.Status{Detail: d.Reason}
		secs := int64(math.Ceil(d.RetryAfter.Seconds()))
		pl.edgeReply(x, d.Status, "meshcdn: too many requests from this client; retry later",
			http.Header{"Retry-After": {strconv.FormatInt(max(1, min(secs, 3600)), 10)}})
		return false
	case d.Reason != "":
		pl.metrics.accessDenied.WithLabelValues(x.site.Name, d.Reason).Inc()
		x.status = httpcache.Status{Detail: d.Reason}
		pl.edgeError(x, d.Status, "meshcdn: access denied ("+d.Reason+")")
		return false
	case d.Signed:
		c := copyRequest(orig)
		if err := site.SetPath(c.URL, d.Path); err != nil {
			x.status = httpcache.Status{Detail: "bad-path"}
			pl.edgeError(x, http.StatusBadRequest, "meshcdn: bad request path")
			return false
		}
		c.URL.RawQuery = d.RawQuery
		c.RequestURI = c.URL.RequestURI()
		clean, ok := normalize(c, x.site)
		if !ok {
			pl.edgeError(x, http.StatusBadRequest, "meshcdn: bad request path")
			return false
		}
		x.r = clean
	}
	return true
}
