package pipeline

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/earlydata"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/site"
)

// via is this hop's Via entry (RFC 9110 §7.6.3).
const via = "1.1 " + httpcache.CacheName

// exchange is one client request as the front sees it.
type exchange struct {
	w        http.ResponseWriter
	r        *http.Request
	site     *site.Site
	stats    *siteMetrics
	start    time.Time
	ttfb     time.Duration
	code     int
	written  int64
	status   httpcache.Status
	fromPeer bool // another node's fetch: counted apart from client traffic
	// front is the writer the front gave; w is it or a wrapper (hsts, which
	// a response over HTTPS of a site with HSTS gets).
	front http.ResponseWriter
	hsts  bool
	// coding is the content coding the edge encodes the response in ("" for
	// none: see negotiateCoding); key is the request's cache key, for a
	// request the cache may answer; clientAE is the client's
	// Accept-Encoding, which negotiateCoding took out of r, for a request
	// that goes to the origin after all.
	coding, key string
	clientAE    []string
	// noCompress: the response is sent as the origin's bytes (an object
	// stored as slices).
	noCompress bool
}

// normalized is a request copied to be changed, with its URL: one
// allocation for both.
type normalized struct {
	r http.Request
	u url.URL
}

// copyRequest returns a copy of r, its URL a copy too.
func copyRequest(r *http.Request) *http.Request {
	n := &normalized{r: *r, u: *r.URL}
	n.r.URL = &n.u
	return &n.r
}

// writeHeader sends the status line once and records time to first byte.
func (x *exchange) writeHeader(code int) {
	x.code = code
	x.ttfb = time.Since(x.start)
	x.w.WriteHeader(code)
}

// Detacher is a ResponseWriter of a front that cannot stream a response
// body while its handler runs (fasthttp's). The pipeline answers from
// memory on the handler's goroutine; the rest of any other request, which
// may stream (a fill, a disk object, the origin's answer), it hands to
// Detach, which must run it exactly once, on a goroutine of its own, with
// a writer that streams.
type Detacher interface {
	Detach(rest func(w http.ResponseWriter))
}

// ServeHTTP is the client-facing front: find the site, classify the request,
// then serve it from the cache, through a fill, or straight from the origin.
func (pl *Pipeline) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pl.handlers.Add(1)
	pl.inflight.Add(1)
	x := exchange{w: w, front: w, r: r, start: time.Now()}
	detached := false
	defer func() {
		if !detached {
			pl.end(&x)
		}
	}()
	detached = pl.serve(&x)
}

// end closes the books of a request: its metrics and access log line, and
// the counts of requests in progress.
func (pl *Pipeline) end(x *exchange) {
	pl.observe(x)
	pl.inflight.Add(-1)
	pl.handlers.Done()
}

// later runs rest, the part of x's answer that may stream: at once, or
// through the front's Detacher, and then reports true: x is the
// detached goroutine's to finish.
func (pl *Pipeline) later(x *exchange, rest func(x *exchange)) bool {
	d, ok := x.front.(Detacher)
	if !ok {
		rest(x)
		return false
	}
	y := new(exchange)
	*y = *x
	d.Detach(func(w http.ResponseWriter) {
		defer pl.end(y)
		y.front, y.w = w, w
		if y.hsts {
			y.w = &hstsWriter{ResponseWriter: w, value: y.site.HSTS}
		}
		rest(y)
	})
	return true
}

// serve answers x, and reports whether it handed the rest to the front's
// Detacher.
func (pl *Pipeline) serve(x *exchange) bool {
	w, r := x.w, x.r
	if host, path, ok, err := site.Routed(r.Host, r.URL.EscapedPath()); err != nil {
		x.stats, x.status = pl.unknown, httpcache.Status{Detail: "bad-routed-host"}
		pl.edgeError(x, http.StatusBadRequest, "meshcdn: "+err.Error())
		return false
	} else if ok {
		// The router sent the user here by address: serve the host it named.
		c := copyRequest(r)
		c.Host = host
		if err := site.SetPath(c.URL, path); err != nil {
			x.stats, x.status = pl.unknown, httpcache.Status{Detail: "bad-path"}
			pl.edgeError(x, http.StatusBadRequest, "meshcdn: bad request path")
			return false
		}
		c.RequestURI = c.URL.RequestURI()
		r, x.r = c, c
	}
	if r.Host == "" {
		// RFC 9112 §3.2: an origin-form request names its host; an empty
		// one selects no site and must not share an entry.
		x.stats, x.status = pl.unknown, httpcache.Status{Detail: "no-host"}
		pl.edgeError(x, http.StatusBadRequest, "meshcdn: the request has an empty Host")
		return false
	}
	st, ok := pl.sites.Lookup(r.Host)
	if !ok {
		x.stats = pl.unknown
		x.status = httpcache.Status{Detail: "unknown-host"}
		pl.edgeError(x, http.StatusNotFound, "meshcdn: no site is configured for host "+strconv.Quote(truncate(r.Host, 200)))
		return false
	}
	x.site, x.stats = st, pl.siteStats[st]
	if r.TLS != nil && st.HSTS != "" {
		x.hsts = true
		x.w = &hstsWriter{ResponseWriter: w, value: st.HSTS}
	}
	orig := r // as the client sent it: what a signature signs
	if r, ok = normalize(r, st); !ok {
		pl.edgeError(x, http.StatusBadRequest, "meshcdn: bad request path")
		return false
	}
	x.r = r
	if _, ok := peer.FromPeer(r.Context()); ok {
		pl.metrics.peerServed.Inc()
		x.fromPeer = true
	}
	if pl.serveChallenge(x) || pl.httpsPolicy(x) || !pl.checkAccess(x, orig) {
		return false
	}
	r = x.r

	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case "PURGE":
		pl.servePurge(x)
		return false
	case http.MethodOptions, http.MethodTrace, "PRI":
		return pl.bypass(x, httpcache.Status{Fwd: httpcache.FwdMethod}, false)
	default:
		return pl.bypass(x, httpcache.Status{Fwd: httpcache.FwdMethod}, true)
	}
	rule := st.Classify(r.URL.Path)
	if rule.Action == site.ActionBypass || r.Header.Get("Upgrade") != "" {
		return pl.bypass(x, httpcache.Status{Fwd: httpcache.FwdBypass}, false)
	}
	pl.negotiateCoding(x)
	key := st.CacheKey(r.Host, r.URL.EscapedPath(), r.URL.RawQuery)
	return pl.serveCacheable(x, rule, key)
}

// normalize returns r as the rest of the edge sees it, the same for every
// spelling of one resource: the Host lower case, without a port or a
// trailing dot (the cache key ignores them, so the origin must not see
// them either); the path without dot segments ("%2e%2e" included) and, per
// the site, without runs of slashes. r itself is copied only if it
// changes. ok is false for a path that cannot be decoded.
func normalize(r *http.Request, st *site.Site) (*http.Request, bool) {
	host := site.NormalizeHost(r.Host)
	p := r.URL.EscapedPath()
	np := site.NormalizePath(p, st.MergeSlashes)
	if host == r.Host && np == p {
		return r, true
	}
	c := copyRequest(r)
	c.Host = host
	if np != p {
		if err := site.SetPath(c.URL, np); err != nil {
			return r, false
		}
		c.RequestURI = c.URL.RequestURI()
	}
	return c, true
}

// serveCacheable serves a GET or HEAD the cache may answer: a hit, stale
// while it is refreshed, or through a fill. It reports whether it handed
// the rest to the front's Detacher (see later): everything but an answer
// from memory.
func (pl *Pipeline) serveCacheable(x *exchange, rule *site.Rule, key string) bool {
	now := time.Now()
	x.key = key
	if x.fromPeer {
		if spec, ok := peer.SliceOf(x.r.Context()); ok {
			return pl.serveSliceToPeer(x, rule, key, spec, now)
		}
	}
	if x.coding != "" && pl.serveCompressedHit(x, key, now) {
		return false
	}
	f := pl.lookup(key, x.r.Header, now, serving)
	if f.pass {
		if onlyIfCached(x.r) {
			pl.notCached(x, httpcache.FwdBypass)
			return false
		}
		return pl.bypass(x, httpcache.Status{Fwd: httpcache.FwdBypass, Detail: "hit-for-pass"}, false)
	}
	fwd := httpcache.FwdURIMiss
	if f.known {
		fwd = httpcache.FwdVary
	}
	switch {
	case f.e == nil || pl.suspect(f.e, f.de, now):
		// A miss; or the node may have missed a purge of this object: ask the origin.
		if onlyIfCached(x.r) {
			// RFC 9111 5.2.1.7; also how a new owner asks a previous owner's cache.
			pl.notCached(x, fwd)
			return false
		}
		if !pl.handshake(x) {
			return false
		}
		var stale *stored
		if f.e != nil {
			stale, fwd = f.stored(), httpcache.FwdStale
		}
		if x.site.SliceSize > 0 && !x.fromPeer && stale == nil && !f.known && pl.sliceable(x.site, key, now) {
			return pl.later(x, func(x *exchange) { pl.serveSliced(x, rule, key, fwd) })
		}
		return pl.later(x, func(x *exchange) { pl.serveFill(x, rule, key, f.vary, stale, fwd, 0) })
	case onlyIfCached(x.r) && x.fromPeer && !f.e.Fresh(now):
		// A new owner asks this previous owner's cache during a hand-off: a
		// stale object (soft-purged, or expired) would be stored there as
		// fresh, so it is not handed off; the new owner asks the origin.
		pl.notCached(x, httpcache.FwdStale)
		return false
	case f.e.Fresh(now) || onlyIfCached(x.r):
		x.status = hitStatusOf(f.e)
		if cache.InMemory(f.src) {
			pl.respond(x, f.e, f.src, now)
			return false
		}
		return pl.later(x, func(x *exchange) { pl.respond(x, f.e, f.src, now) })
	default:
		return pl.later(x, func(x *exchange) { pl.serveStale(x, rule, key, f, now) })
	}
}

// serveStale serves a stored response past its freshness: at once while a
// background fill refreshes it (stale-while-revalidate), else through a
// revalidating fill.
func (pl *Pipeline) serveStale(x *exchange, rule *site.Rule, key string, f held, now time.Time) {
	stale := f.stored()
	if window := swrWindow(f.e, x.site); !f.e.NoStale && f.e.Staleness(now) < window {
		if !earlydata.In(x.r.Context()) {
			// A request in early data may be replayed: it refreshes
			// nothing; the next request after a handshake does.
			pl.refreshInBackground(x, rule, key, f.vary, stale)
		}
		x.status = httpcache.Status{Hit: true, Fwd: httpcache.FwdStale, Detail: "stale-while-revalidate"}
		pl.respond(x, f.e, f.src, now)
		return
	}
	if !pl.handshake(x) {
		return
	}
	pl.serveFill(x, rule, key, f.vary, stale, httpcache.FwdStale, 0)
}

// handshake waits, for a request taken in TLS early data (0-RTT), until
// the client's handshake completes: nothing a replayed request asks for
// goes past the cache, and the origin never sees a request in early data.
// If the handshake fails it answers 425 Too Early and reports false.
func (pl *Pipeline) handshake(x *exchange) bool {
	if err := earlydata.Wait(x.r.Context()); err != nil {
		x.status = httpcache.Status{Detail: "too-early"}
		pl.edgeError(x, http.StatusTooEarly, "meshcdn: "+err.Error()+": send the request again")
		return false
	}
	return true
}

// notCached answers a request that forbids going upstream (only-if-cached)
// and that the store cannot answer.
func (pl *Pipeline) notCached(x *exchange, fwd httpcache.Fwd) {
	x.status = httpcache.Status{Fwd: fwd, Detail: "only-if-cached"}
	pl.edgeError(x, http.StatusGatewayTimeout, "meshcdn: not in the cache (only-if-cached)")
}

// suspect reports whether e may have been purged without this node knowing:
// it comes from a disk index not yet checked against the purge log, or the
// node's purge log is out of step with the cluster and e was fetched before
// the purge lease (see purge.Service.Suspect).
func (pl *Pipeline) suspect(e *cache.Entry, de *cache.DiskEntry, now time.Time) bool {
	if de != nil && !pl.diskChecked.Load() {
		return true
	}
	return pl.purges.Suspect(e.FetchedAt(), now)
}

// servePurge handles the HTTP PURGE method (Varnish's convention): the target
// URL is purged on every node, for clients of the allowed networks only.
func (pl *Pipeline) servePurge(x *exchange) {
	x.status = httpcache.Status{Fwd: httpcache.FwdMethod, Detail: "purge"}
	ip, err := netip.ParseAddr(clientIP(x.r))
	allowed := err == nil && slices.ContainsFunc(pl.cfg.PurgeAllow, func(p netip.Prefix) bool { return p.Contains(ip.Unmap()) })
	if !allowed {
		pl.edgeError(x, http.StatusForbidden, "meshcdn: PURGE is not allowed from "+clientIP(x.r))
		return
	}
	target := "http://" + x.r.Host + x.r.URL.RequestURI()
	id, receipts, err := pl.cfg.Purge(x.r.Context(), []string{target})
	if err != nil {
		pl.edgeError(x, http.StatusBadRequest, "meshcdn: "+err.Error())
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "purged %s (purge %s)\n", target, id)
	code := http.StatusOK
	for _, r := range receipts {
		if r.Applied {
			fmt.Fprintf(&b, "%s\tapplied\tremoved %d\n", r.Node, r.Removed)
		} else {
			fmt.Fprintf(&b, "%s\tNOT APPLIED\t%s\n", r.Node, r.Error)
			code = http.StatusMultiStatus
		}
	}
	h := x.w.Header()
	setEdgeHeaders(h, code)
	h.Set("Cache-Status", x.status.String())
	x.writeHeader(code)
	m, _ := x.w.Write([]byte(b.String()))
	x.written = int64(m)
}

// onlyIfCached reports whether the request forbids going upstream.
func onlyIfCached(r *http.Request) bool {
	cc, ok := r.Header["Cache-Control"]
	return ok && httpcache.ParseCacheControl(http.Header{"Cache-Control": cc}).OnlyIfCached
}

// stored is a response the node holds: its metadata, its body, and the disk
// entry when the body is a file of the disk tier.
type stored struct {
	e    *cache.Entry
	src  cache.Body
	de   *cache.DiskEntry
	copy bool // held in the copies' share: another node owns it
}

// swrWindow is how long past its freshness e may be served while a background
// fill refreshes it: the origin's stale-while-revalidate, else the site's.
func swrWindow(e *cache.Entry, st *site.Site) time.Duration {
	if e.StaleWhileRevalidate >= 0 {
		return e.StaleWhileRevalidate
	}
	return st.StaleWhileRevalidate
}

// clientGone ends a handler whose client left before anything was written
// to it. Returning would let net/http send an empty 200 that looks complete
// to whatever still reads the connection; the connection (or HTTP/2 stream)
// is reset instead.
func clientGone() {
	panic(http.ErrAbortHandler)
}

// setEdgeHeaders sets the fields of a response the edge generates itself.
func setEdgeHeaders(h http.Header, code int) {
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Age", "0")
	h.Set("Via", via)
	if code == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
}

// edgeError answers with an error the edge itself generates.
func (pl *Pipeline) edgeError(x *exchange, code int, msg string) {
	pl.edgeReply(x, code, msg, nil)
}

// edgeReply is edgeError with the fields of extra added.
func (pl *Pipeline) edgeReply(x *exchange, code int, msg string, extra http.Header) {
	h := x.w.Header()
	closeConn := h.Get("Connection") == "close"
	clear(h) // nothing of a stored response may leak onto the error
	if closeConn {
		h.Set("Connection", "close")
	}
	for k, v := range extra {
		h[k] = v
	}
	setEdgeHeaders(h, code)
	h.Set("Cache-Status", x.status.String())
	x.writeHeader(code)
	m, _ := x.w.Write([]byte(msg + "\n"))
	x.written = int64(m)
}

// invalidation is what an unsafe request will invalidate once its response is in.
type invalidation struct {
	pl   *Pipeline
	site *site.Site
	host string
	base *url.URL
}

func (inv invalidation) apply(h httpcache.Fields) {
	inv.drop(inv.base)
	for _, f := range []string{"Location", "Content-Location"} {
		if v := h.Get(f); v != "" {
			if u, err := inv.base.Parse(v); err == nil {
				inv.drop(u)
			}
		}
	}
}

func (inv invalidation) drop(u *url.URL) {
	host := inv.host
	if u.Host != "" {
		if site.NormalizeHost(u.Host) != site.NormalizeHost(inv.host) {
			return // another authority: not ours to invalidate
		}
		host = u.Host
	}
	if inv.pl.invalidate(inv.site.CacheKey(host, u.EscapedPath(), u.RawQuery)) {
		inv.pl.log.Debug("invalidated by unsafe method", "host", host, "path", u.Path)
	}
}

// observe records the finished exchange in metrics and the access log.
func (pl *Pipeline) observe(x *exchange) {
	if x.fromPeer {
		return // counted in meshcdn_peer_served_total; client metrics stay client-only
	}
	d := time.Since(x.start)
	l := x.status.Label()
	proto := protocolOf(x.r)
	pl.metrics.byProtocol[proto].Inc()
	pl.counters.protocols[proto].Add(1)
	x.stats.requests[l].Inc()
	pl.counters.requests[l].Add(1)
	pl.counters.bytes[l].Add(x.written)
	x.stats.counts.Requests.Add(1)
	x.stats.counts.Bytes.Add(x.written)
	if l == httpcache.LabelHit || l == httpcache.LabelServedStale {
		x.stats.counts.Hits.Add(1)
		x.stats.counts.HitBytes.Add(x.written)
	}
	x.stats.duration[l].Observe(d.Seconds())
	if x.code != 0 {
		x.stats.ttfb[l].Observe(x.ttfb.Seconds())
	}
	if x.written > 0 {
		x.stats.bytes.Add(float64(x.written))
	}
	if pl.cfg.AccessLog {
		site := "-"
		if x.site != nil {
			site = x.site.Name
		}
		pl.log.Info("request", "client", clientIP(x.r), "method", x.r.Method, "host", x.r.Host,
			"uri", x.r.RequestURI, "status", x.code, "bytes", x.written, "cache", l.String(),
			"site", site, "duration", d)
	}
}

func joinVia(prev []string) string {
	if len(prev) == 0 {
		return via
	}
	joined := strings.Join(prev, ", ")
	if strings.TrimSpace(joined[strings.LastIndexByte(joined, ',')+1:]) == via {
		return joined // one entry per CDN, whatever its hops between nodes (as Fastly and Cloudflare)
	}
	return joined + ", " + via
}

func clientIP(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

type invalidationKey struct{}

// withInvalidation marks an unsafe request's context so that its origin
// response invalidates what it names.
func withInvalidation(ctx context.Context, pl *Pipeline, st *site.Site, r *http.Request) context.Context {
	base := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	return context.WithValue(ctx, invalidationKey{}, invalidation{pl: pl, site: st, host: r.Host, base: base})
}

func invalidationFrom(ctx context.Context) (invalidation, bool) {
	inv, ok := ctx.Value(invalidationKey{}).(invalidation)
	return inv, ok
}
