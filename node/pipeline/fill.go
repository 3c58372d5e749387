package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshcdn/meshcdn/node/budget"
	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/slice"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// errIdle ends a fill whose origin went silent for longer than FillIdleTimeout.
var errIdle = errors.New("origin sent nothing for too long")

// flight is one fill in progress, shared by every request that waits for it.
// Its fields other than fill are written by the fill goroutine before the fill's
// head is published, and only read after it.
type flight struct {
	fill      *cache.Fill
	fwd       httpcache.Fwd
	fwdStatus int
	stored    bool   // the response is being stored
	shareable bool   // waiters other than the leader may be given the response
	reason    string // why it is not stored
	heuristic bool   // stored with a heuristic freshness lifetime
	// background marks a refresh nobody waits for (stale-while-revalidate): a
	// response that will not be stored is not read at all.
	background bool
	// peer names the node the response came from, if it came from one; copy
	// reports that it is the key's owner, so this node keeps a copy only.
	peer string
	copy bool
	// fetched is when the peer's response came from the origin; vouched
	// the purges the peer applied before it had the response (see
	// purge.Log.Vouch).
	fetched time.Time
	vouched []string
	// late reports a fill answered by what another fill stored just before
	// this one started (see runFill): every reader was collapsed into that.
	late bool
	// leaderHeader, when set, is the response's header with the fields the
	// stored head lacks (no-cache="f", private="f"): for the leader only.
	leaderHeader http.Header
}

// serveFill joins the fill for key, starting one if none is in flight, and
// streams it to the client as it arrives. vary names the key's known Vary
// fields; stale is the stored response to revalidate, if any.
func (pl *Pipeline) serveFill(x *exchange, rule *site.Rule, key string, vary []string, stale *stored, fwd httpcache.Fwd, depth int) {
	fl, leader := pl.startFill(x, rule, key, vary, stale, fwd, false)
	if !leader {
		pl.metrics.coalesced.Inc()
	}
	head, err := fl.fill.Head(x.r.Context())
	if err != nil {
		pl.fillFailed(x, stale, fwd, err)
		return
	}
	if head.Status >= 500 && pl.serveStaleOnError(x, stale, head.Status) {
		if leader && !fl.shareable {
			fl.fill.Abandon()
		}
		return
	}
	if !leader && !fl.shareable {
		if fl.copy && fl.reason == reasonTooLarge && depth == 0 {
			// The key's owner keeps it (on its disk); this node only
			// streams it, to one reader: this client gets a stream of its
			// own from the owner, not from the origin.
			fl = pl.newFill(x, rule, key, vary, stale, fwd, false, flightKey(key, vary, x.r.Header))
			pl.streamFill(x, fl, true, fwd, stale)
			return
		}
		// Not storable, so possibly personal: this client asks the origin itself.
		pl.bypass(x, httpcache.Status{Fwd: fwd, FwdStatus: head.Status, Detail: fl.reason}, false)
		return
	}
	if !leader && httpcache.SecondaryKey(head.Vary, x.r.Header) != head.VaryKey && depth == 0 {
		// The response varies on a field in which this request differs.
		pl.serveFill(x, rule, key, head.Vary, nil, httpcache.FwdVary, depth+1)
		return
	}
	pl.streamFill(x, fl, leader, fwd, stale)
}

// streamFill sends the fill fl's response, whose head has arrived, to the
// client as it arrives.
func (pl *Pipeline) streamFill(x *exchange, fl *flight, leader bool, fwd httpcache.Fwd, stale *stored) {
	head, err := fl.fill.Head(x.r.Context())
	if err != nil {
		pl.fillFailed(x, stale, fwd, err)
		return
	}
	if leader && !fl.shareable {
		defer fl.fill.Abandon() // a streamed fill stops when its only reader leaves
	}
	x.status = fl.status(leader)
	if leader && fl.leaderHeader != nil {
		full := *head
		full.Header = fl.leaderHeader
		head = &full
	}
	pl.respond(x, head, cache.FillBody(fl.fill, head.Size), time.Now())
	if _, ok := peer.TakeOverFrom(x.r.Context()); ok {
		// A draining node's offer is taken once the object is stored here
		// (a fill stores before it ends): the drained node may stop as soon
		// as its offers are answered.
		if err := fl.fill.Done(x.r.Context()); err != nil {
			panic(http.ErrAbortHandler) // not taken
		}
	}
}

// startFill returns the flight of the request's fill, starting one unless
// one is in flight; leader reports whether it started it. A background fill
// refreshes a stale entry nobody waits for.
func (pl *Pipeline) startFill(x *exchange, rule *site.Rule, key string, vary []string, stale *stored, fwd httpcache.Fwd, background bool) (*flight, bool) {
	fkey := flightKey(key, vary, x.r.Header)
	return pl.joinFlight(fkey, func() *flight {
		return pl.newFill(x, rule, key, vary, stale, fwd, background, fkey)
	})
}

// newFill starts a fill of key for the request x and returns its flight,
// which nobody else joins unless the caller enters it in the flight table
// under fkey.
func (pl *Pipeline) newFill(x *exchange, rule *site.Rule, key string, vary []string, stale *stored, fwd httpcache.Fwd, background bool, fkey string) *flight {
	fl := &flight{fill: cache.NewFill(), fwd: fwd, background: background}
	// The fill goroutine must not hold x.
	j := &fillJob{fl: fl, site: x.site, stats: x.stats, rule: rule, key: key, fkey: fkey, req: fillRequest(x.r, x.site, stale), stale: stale,
		class: fillClass(x, stale, background)}
	pl.wg.Go(func() { pl.runFill(j) })
	return fl
}

// fillFailed answers a client whose fill failed before its head: stale when
// allowed, else an edge error.
func (pl *Pipeline) fillFailed(x *exchange, stale *stored, fwd httpcache.Fwd, err error) {
	if x.r.Context().Err() != nil {
		x.status = httpcache.Status{Fwd: fwd, Detail: "client-gone"}
		clientGone()
	}
	code, detail := originErrorStatus(err)
	if pl.serveStaleOnError(x, stale, code) {
		return
	}
	x.status = httpcache.Status{Fwd: fwd, Detail: detail}
	pl.originError(x, code)
}

// status is the Cache-Status of a response served from fl.
func (fl *flight) status(leader bool) httpcache.Status {
	s := httpcache.Status{Fwd: fl.fwd, FwdStatus: fl.fwdStatus, Stored: fl.stored, Collapsed: !leader || fl.late}
	switch {
	case !fl.stored && fl.reason != "":
		s.Detail = fl.reason
	case fl.peer != "":
		s.Detail = "peer-" + fl.peer
	case fl.stored && fl.heuristic:
		s.Detail = httpcache.DetailHeuristic
	}
	return s
}

// flightKey is the key of the fill for a request: the primary key, plus the
// request's secondary key when the stored variants vary.
func flightKey(key string, vary []string, req http.Header) string {
	if len(vary) == 0 {
		return key
	}
	return key + "\x00" + httpcache.SecondaryKey(vary, req)
}

// refreshInBackground starts the fill that refreshes a stale entry served by
// stale-while-revalidate, unless one is already in flight: one refresh per key.
func (pl *Pipeline) refreshInBackground(x *exchange, rule *site.Rule, key string, vary []string, stale *stored) {
	pl.startFill(x, rule, key, vary, stale, httpcache.FwdStale, true)
}

// serveStaleOnError serves stale in place of an origin failure (code: the
// origin's 5xx, or the edge's 502/503/504), when its stale-if-error window
// allows. It reports whether it did.
func (pl *Pipeline) serveStaleOnError(x *exchange, stale *stored, code int) bool {
	now := time.Now()
	if stale == nil || stale.e.NoStale {
		return false
	}
	window := stale.e.StaleIfError
	if window < 0 {
		window = x.site.StaleIfError
	}
	if stale.e.Staleness(now) > window {
		return false
	}
	x.status = httpcache.Status{Hit: true, Fwd: httpcache.FwdStale, FwdStatus: code, Detail: "stale-if-error"}
	pl.respond(x, stale.e, stale.src, now)
	return true
}

// originErrorStatus maps an origin failure to the edge's answer and a
// Cache-Status detail.
func originErrorStatus(err error) (int, string) {
	var ne net.Error
	switch {
	case errors.Is(err, origin.ErrOverloaded):
		return http.StatusServiceUnavailable, "origin-overloaded"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errIdle), errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout, "origin-timeout"
	default:
		return http.StatusBadGateway, "origin-error"
	}
}

// joinFlight returns the flight for fkey, creating it with start if there is
// none; leader reports whether this call created it.
func (pl *Pipeline) joinFlight(fkey string, start func() *flight) (fl *flight, leader bool) {
	pl.flightsMu.Lock()
	defer pl.flightsMu.Unlock()
	if fl, ok := pl.flights[fkey]; ok {
		return fl, false
	}
	fl = start()
	pl.flights[fkey] = fl
	return fl, true
}

// endFlight removes fl from the flight table, unless a newer flight already
// took its place.
func (pl *Pipeline) endFlight(fkey string, fl *flight) {
	pl.flightsMu.Lock()
	if pl.flights[fkey] == fl {
		delete(pl.flights, fkey)
	}
	pl.flightsMu.Unlock()
}

// finish ends fl. It leaves the flight table first, so no request can join a
// flight that has ended: one arriving later finds the stored entry (stored
// before finish), or starts a new fill, for instance after an unsafe method
// invalidated what this fill stored.
func (pl *Pipeline) finish(fkey string, fl *flight, err error) {
	pl.endFlight(fkey, fl)
	fl.fill.Finish(err)
}

// originRequest is what a fill sends: everything it needs from the client's
// request, captured before the client may leave.
type originRequest struct {
	host      string
	pathQuery string
	header    http.Header
	personal  httpcache.Request // what the storing decision needs of the request
	fromPeer  bool              // never forwarded to another peer
	takeOver  string            // a draining peer offering its stored response: asked first
	peerFrom  string            // the member that asked, for a peer's request
	https     bool              // the client used HTTPS (origin_protocol: follow asks over it too)
	slice     *slice.Spec       // the slice it asks for, with a Range field; nil: the whole object
}

// fillRequest builds the fill's request from the first client's: end-to-end
// fields without the client's own conditionals and cache directives (the cache
// answers those), Accept-Encoding normalised so the stored variant matches its
// key, and the stale entry's validators. The forwarding fields are this
// node's to build, for a peer's request too: nothing a peer sends in them (a
// forged X-Forwarded-Host, say) shapes what this node stores. Of a peer's
// X-Forwarded-For only a single address, the client's as the first node saw
// it, is kept. Fields that would make the origin serve another resource
// under this key (site.ReroutingFields) are dropped unless the site
// forwards them.
func fillRequest(r *http.Request, st *site.Site, stale *stored) originRequest {
	_, fromPeer := peer.FromPeer(r.Context())
	h := r.Header.Clone()
	httpcache.RemoveHopByHop(h)
	st.DropRerouting(h)
	for _, f := range []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since",
		"If-Unmodified-Since", "Cache-Control", "Pragma", "Forwarded", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Forwarded-Proto"} {
		if fromPeer && (f == "If-None-Match" || f == "If-Modified-Since") {
			continue // the validators of the first node's stale copy: the origin may answer 304
		}
		h.Del(f)
	}
	if ae := httpcache.NormalizeAcceptEncoding(h.Values("Accept-Encoding")); ae != "" {
		h.Set("Accept-Encoding", ae)
	} else {
		h.Del("Accept-Encoding")
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = nil // do not let net/http add its own
	}
	h.Set("Via", joinVia(r.Header.Values("Via")))
	req := originRequest{host: r.Host, pathQuery: r.URL.RequestURI(), header: h,
		personal: httpcache.Request{Authorized: r.Header.Get("Authorization") != "", Cookie: r.Header.Get("Cookie") != "",
			Ext: strings.ToLower(strings.TrimPrefix(path.Ext(r.URL.Path), "."))}}
	client := clientIP(r)
	if fromPeer {
		client = ""
		if ip, err := netip.ParseAddr(strings.TrimSpace(r.Header.Get("X-Forwarded-For"))); err == nil {
			client = ip.String()
		}
		req.fromPeer = true
		req.peerFrom, _ = peer.FromPeer(r.Context())
		req.takeOver, _ = peer.TakeOverFrom(r.Context())
	}
	if client != "" {
		h.Set("X-Forwarded-For", client)
	}
	h.Set("X-Forwarded-Host", r.Host)
	scheme := clientScheme(r, fromPeer)
	h.Set("X-Forwarded-Proto", scheme)
	req.https = scheme == "https"
	setValidators(h, stale)
	return req
}

// setValidators makes a fill conditional on the stale entry's validators.
func setValidators(h http.Header, stale *stored) {
	if stale == nil {
		return
	}
	if stale.e.ETag != "" {
		h.Set("If-None-Match", stale.e.ETag)
	}
	if !stale.e.LastModified.IsZero() {
		h.Set("If-Modified-Since", stale.e.LastModified.UTC().Format(http.TimeFormat))
	}
}

// fetch gets the response for a fill: from the key's owner when another node
// owns it (unless the request itself came from a peer: the owner never
// forwards), else, or when the owner fails, from the origin.
func (pl *Pipeline) fetch(ctx context.Context, fl *flight, st *site.Site, key string, req originRequest) (*http.Response, error) {
	if !req.fromPeer {
		if name, addr, ok := pl.owner(key); ok {
			if resp, err := pl.fetchPeer(ctx, st, name, addr, key, req, false); err == nil {
				fl.fromPeer(name, resp)
				fl.copy = true
				return resp, nil
			}
			pl.statsOf(st).counts.Origin.Add(1)
			return pl.cfg.Pool(st, req.https).Fetch(ctx, req.host, req.pathQuery, req.header)
		}
	}
	// This node owns the key. A draining peer that offers it (take-over) and,
	// right after ring changes, its previous owners may still hold it: ask
	// their caches before the origin.
	if pl.mesh != nil && req.header.Get("If-None-Match") == "" {
		start := time.Now()
		for _, p := range pl.mesh.HandOffSources(key, req.takeOver) {
			if time.Since(start) > handOffBudget {
				break // the previous owners are slow to answer: the origin
			}
			resp, err := pl.fetchPeer(ctx, st, p.Name, p.Addr, key, req, true)
			if err != nil {
				continue
			}
			if resp.StatusCode != http.StatusGatewayTimeout {
				pl.metrics.handoffs.Inc()
				fl.fromPeer(p.Name, resp)
				return resp, nil
			}
			origin.DrainClose(resp.Body)
		}
	}
	if resp := pl.fetchShield(ctx, fl, st, key, req); resp != nil {
		return resp, nil
	}
	pl.statsOf(st).counts.Origin.Add(1)
	return pl.cfg.Pool(st, req.https).Fetch(ctx, req.host, req.pathQuery, req.header)
}

// fetchShield asks the key's owner in the site's shield region, when this
// node, the key's owner in another region, should: not for a request that
// came from another region (a shield fetch is never passed on). nil means
// the origin, after a failure that fetchShield counts.
func (pl *Pipeline) fetchShield(ctx context.Context, fl *flight, st *site.Site, key string, req originRequest) *http.Response {
	shield := pl.ShieldFor(st)
	if shield == "" || shield == pl.mesh.Region() {
		return nil
	}
	if req.fromPeer {
		if r, ok := pl.mesh.RegionOf(req.peerFrom); !ok || r != pl.mesh.Region() {
			return nil
		}
	}
	name, addr, ok := pl.mesh.OwnerIn(shield, key)
	if !ok {
		pl.metrics.shieldFetches.WithLabelValues("no-member").Inc()
		return nil
	}
	resp, err := pl.fetchPeer(ctx, st, name, addr, key, req, false)
	if err != nil {
		pl.metrics.shieldFetches.WithLabelValues("failed").Inc()
		return nil
	}
	pl.metrics.shieldFetches.WithLabelValues("ok").Inc()
	fl.fromPeer(name, resp)
	return resp
}

// ShieldFor is the shield region of st ("" for none).
func (pl *Pipeline) ShieldFor(st *site.Site) string {
	if pl.mesh == nil {
		return ""
	}
	s := st.ShieldRegion
	if s == "" {
		s = pl.cfg.ShieldRegion
	}
	if s == "none" {
		return ""
	}
	return s
}

// handOffBudget bounds the time a miss spends asking previous owners (each
// within peer.CacheOnlyTimeout) before it goes to the origin.
const handOffBudget = time.Second

// fromPeer records that fl's response came from the peer name, and takes
// what the peer service added to it out of its header: when the peer
// fetched it from the origin (zero when it did not say), and the purges it
// vouches for.
func (fl *flight) fromPeer(name string, resp *http.Response) {
	h := resp.Header
	fl.peer = name
	fl.fetched, _ = time.Parse(time.RFC3339Nano, h.Get(peer.FetchedField))
	fl.vouched = h.Values(peer.VouchedField)
	h.Del(peer.FetchedField)
	h.Del(peer.VouchedField)
}

// fetchedAt is when a fill's response came from the origin: when it arrived
// here, unless a peer said otherwise.
func (fl *flight) fetchedAt(respTime time.Time) time.Time {
	if fl.peer != "" && !fl.fetched.IsZero() {
		return fl.fetched
	}
	return respTime
}

// fetchPeer asks the peer at addr for key; cacheOnly asks its cache alone.
func (pl *Pipeline) fetchPeer(ctx context.Context, st *site.Site, name, addr, key string, req originRequest, cacheOnly bool) (*http.Response, error) {
	pr := &peerv1.FetchRequest{Key: key, Host: req.host, PathQuery: req.pathQuery, From: pl.cfg.Name,
		Epoch: pl.mesh.Epoch(), CacheOnly: cacheOnly, Class: peerv1.FetchClass(budget.ClassOf(ctx) + 1)}
	for k, vs := range req.header {
		pr.Headers = append(pr.Headers, &peerv1.HeaderField{Name: k, Values: vs})
	}
	if req.slice != nil {
		pr.Slice = &peerv1.Slice{Size: req.slice.Size, Index: req.slice.Index}
	}
	pl.statsOf(st).counts.Peer.Add(1)
	resp, err := pl.mesh.Peers().Fetch(ctx, addr, pr)
	if err != nil {
		pl.metrics.peerFetches.WithLabelValues("failed").Inc()
		pl.log.Debug("peer fetch failed; asking the origin", "peer", name, "key", key, "err", err)
		return nil, err
	}
	resp.Header.Del("Cache-Status") // the peer's; this node sets its own
	fetched, _ := time.Parse(time.RFC3339Nano, resp.Header.Get(peer.FetchedField))
	if pl.purges.Predates(key, &cache.Entry{Header: resp.Header, Fetched: fetched, ResponseTime: time.Now()}, resp.Header.Values(peer.VouchedField)) {
		// The peer has not applied a purge this node has: what it sent
		// predates the purge, so it is neither served nor stored here.
		origin.DrainClose(resp.Body)
		pl.metrics.peerFetches.WithLabelValues("purged").Inc()
		pl.log.Debug("peer sent a purged object; asking the origin", "peer", name, "key", key)
		return nil, errPeerPurged
	}
	pl.metrics.peerFetches.WithLabelValues("ok").Inc()
	return resp, nil
}

// errPeerPurged: a peer answered with an object that a purge this node has
// applied removed.
var errPeerPurged = errors.New("peer sent an object older than a purge applied here")

// fillJob is one fill: what it fetches, for which site and rule, and the
// stored response it revalidates, if any.
type fillJob struct {
	fl         *flight
	site       *site.Site
	stats      *siteMetrics
	rule       *site.Rule
	key, fkey  string
	req        originRequest
	stale      *stored
	head       *cache.Entry       // the response's head, once decided
	dec        httpcache.Decision // whether and how it is stored
	disk       *cache.Writer      // set for an object too large for memory, stored on disk
	gen        uint64             // the purge generation when the fill started
	reqTime    time.Time
	respTime   time.Time
	idle       *time.Timer // FillIdleTimeout between two reads of the body
	bodyLength int64       // the origin's Content-Length, -1 when unknown
	// slice is the slice of the object at whole that the fill fetches,
	// stored under key (slice.Spec.Key); nil for a whole object.
	slice *slice.Spec
	whole string
	// class is the fill's turn in the site's origin budget.
	class budget.Class
}

// reasonTooLarge is the decision's reason for a body over
// max_object_size that the disk tier does not take.
const reasonTooLarge = "too-large"

// fillClass is the turn in the site's origin budget of a fill for x:
// after the fills clients wait for (a slice's read-ahead among them) come
// revalidations, then what nobody waits for (a background refresh, an
// operator's prefetch).
func fillClass(x *exchange, stale *stored, background bool) budget.Class {
	c := budget.Client
	switch {
	case background || x.r.Context().Value(operatorRequest{}) != nil:
		c = budget.Background
	case stale != nil:
		c = budget.Revalidation
	}
	if pc, ok := peer.ClassOf(x.r.Context()); ok {
		// A peer's fill keeps the class it has there, or a later one.
		c = max(c, budget.Class(pc-1))
	}
	return c
}

// runFill fetches one response into the job's flight and, when it is
// complete and storable, into the store, in steps: a late answer from the
// store, fetch, a revalidation or a decision on what to store, publish the
// head, copy the body, commit. It runs detached from any client: only the
// node's shutdown, FillTimeout and FillIdleTimeout end it early.
func (pl *Pipeline) runFill(j *fillJob) {
	defer pl.endFlight(j.fkey, j.fl) // on every path, even a panic
	ctx, cancel := context.WithTimeoutCause(budget.WithClass(pl.ctx, j.class), pl.cfg.FillTimeout, errors.New("fill took longer than fill_timeout"))
	defer cancel()
	ictx, icancel := context.WithCancelCause(ctx)
	defer icancel(nil)
	j.idle = time.AfterFunc(pl.cfg.FillIdleTimeout, func() { icancel(errIdle) })
	defer j.idle.Stop()

	if pl.answerLate(j) {
		// Also for a refresh: the request that started it found the stale
		// entry just before another refresh stored a fresh one.
		return
	}
	resp, err := pl.fetchFill(ictx, j)
	if err != nil {
		pl.finish(j.fkey, j.fl, err)
		return
	}
	defer origin.DrainClose(resp.Body)
	if j.slice != nil {
		if err := pl.checkSlice(j, resp); err != nil {
			j.stats.originError.Inc()
			pl.log.Warn("fill failed", "key", j.key, "err", err)
			pl.finish(j.fkey, j.fl, err)
			return
		}
	}
	if j.stale != nil && resp.StatusCode == http.StatusNotModified {
		through := pl.refreshed(j, resp.Header)
		pl.finish(j.fkey, j.fl, nil)
		if through != nil {
			pl.writeThrough(j.key, through)
		}
		return
	}
	pl.decide(j, resp)
	pl.publish(j)
	total, err := pl.copyBody(ictx, j, resp.Body)
	if err != nil {
		if j.disk != nil {
			j.fl.fill.AbortFile()
		}
		pl.finish(j.fkey, j.fl, err)
		return
	}
	pl.commit(j, total)
}

// answerLate answers the fill from the store when another fill for the key
// stored its response and left the flight table just before this one
// started, instead of asking again. It reports whether it did. A fill that
// revalidates is answered only by another entry than the one it
// revalidates, and never by one that may have missed a purge.
func (pl *Pipeline) answerLate(j *fillJob) bool {
	now := time.Now()
	f := pl.lookup(j.key, j.req.header, now, memoryOnly)
	if f.e == nil || !f.e.Fresh(now) || pl.suspect(f.e, f.de, now) || (j.stale != nil && f.e == j.stale.e) {
		return false
	}
	fl := j.fl
	fl.stored, fl.shareable, fl.fwdStatus, fl.late = true, true, f.e.Status, true
	fl.fill.SetHeadEntry(f.e)
	pl.finish(j.fkey, fl, nil)
	return true
}

// fetchFill sends the fill's request (see fetch) and readies the response's
// fields for the store and the clients.
func (pl *Pipeline) fetchFill(ctx context.Context, j *fillJob) (*http.Response, error) {
	j.stats.originFill.Inc()
	j.gen = pl.purges.Gen() // a purge while this fill runs may concern it
	j.reqTime = time.Now()
	resp, err := pl.fetch(ctx, j.fl, j.site, j.key, j.req)
	if err != nil {
		if !errors.Is(err, origin.ErrOverloaded) {
			j.stats.originError.Inc()
		}
		pl.log.Warn("fill failed", "key", j.key, "err", err)
		return nil, err
	}
	j.respTime = time.Now()
	httpcache.RemoveHopByHop(resp.Header)
	resp.Header["Via"] = []string{joinVia(resp.Header["Via"])}
	j.fl.fwdStatus = resp.StatusCode
	return resp, nil
}

// decide sets the job's storage decision (RFC 9111 and the rule's policy,
// the memory and disk tiers' bounds) and builds the response's head.
func (pl *Pipeline) decide(j *fillJob, resp *http.Response) {
	httpcache.DropInvalidTargeted(resp.Header)      // ignored, so neither stored nor passed on
	cc := httpcache.ResponseDirectives(resp.Header) // a targeted field (RFC 9213) over Cache-Control
	status := resp.StatusCode
	if j.slice != nil && status == http.StatusPartialContent {
		status = http.StatusOK // a slice of a 200, stored as its part (RFC 9111 §3.3)
	}
	j.dec = httpcache.Decide(status, resp.Header, cc, j.req.personal, j.rule.Policy)
	j.bodyLength = resp.ContentLength
	if j.fl.peer != "" && j.dec.Store && pl.purges.Covers(j.key, &cache.Entry{Header: resp.Header, Fetched: j.fl.fetchedAt(j.respTime)}, j.fl.vouched) {
		// The peer fetched it so soon after a purge applied here that the
		// clocks cannot tell which came first, and it does not vouch for
		// having applied the purge before: served, not stored.
		j.dec = httpcache.Decision{Reason: "recent-purge"}
	}
	if j.dec.Store && resp.ContentLength > pl.cfg.MaxObjectSize {
		var err error
		if pl.disk != nil && !j.fl.copy && resp.ContentLength <= pl.cfg.DiskBytes/2 { // copies never go to disk
			if j.disk, err = pl.disk.Create(j.key, resp.ContentLength); err != nil {
				// Streamed through whole, unstored; a full tier said so once.
				pl.diskWarn("disk tier cannot take a large object: streamed through unstored", j.key, err)
			}
		}
		switch {
		case j.disk != nil:
		case errors.Is(err, cache.ErrDiskFull):
			// Not hit-for-pass: the next request looks at the disk again.
			j.dec = httpcache.Decision{Reason: "disk-full"}
		default:
			// Marked hit-for-pass, so that the next request goes straight
			// to the origin; but not a copy of what the key's owner sent:
			// the owner may hold it on its disk, and the next request asks
			// it again rather than the origin.
			j.dec = httpcache.Decision{Reason: reasonTooLarge, Pass: !j.fl.copy}
			pl.log.Debug("not stored: larger than max_object_size", "key", j.key, "size", resp.ContentLength)
		}
	}
	var full http.Header
	if j.dec.Store && (len(cc.NoCacheFields) > 0 || len(cc.PrivateFields) > 0) {
		// Fields named by no-cache="f" or private="f" are not stored, but the
		// response this request asked for carries them (RFC 9111 §5.2.2).
		full = resp.Header.Clone()
		full.Del("Content-Length")
		httpcache.StripFields(resp.Header, cc)
	}
	vary := httpcache.VaryFields(resp.Header)
	resp.Header.Del("Content-Length") // set from the body on every response
	head := &cache.Entry{
		Status:       resp.StatusCode,
		Header:       resp.Header,
		Size:         resp.ContentLength,
		Vary:         vary,
		VaryKey:      httpcache.SecondaryKey(vary, j.req.header),
		ResponseTime: j.respTime,
		Fetched:      j.fl.fetchedAt(j.respTime),
		InitialAge:   httpcache.InitialAge(resp.Header, j.reqTime, j.respTime),
		TTL:          j.dec.TTL,
		TTLSource:    string(j.dec.Source),
	}
	head.NoStale, head.StaleWhileRevalidate, head.StaleIfError = httpcache.StaleRules(cc)
	v := httpcache.ValidatorsOf(resp.Header)
	head.ETag, head.LastModified = v.ETag, v.LastModified
	j.head = head
	j.fl.leaderHeader = full
}

// publish hands the head to the clients waiting on the flight.
func (pl *Pipeline) publish(j *fillJob) {
	fl := j.fl
	fl.stored, fl.shareable, fl.reason = j.dec.Store, j.dec.Store, j.dec.Reason
	fl.heuristic = j.dec.Source == httpcache.SourceHeuristic
	hint := 0
	if j.dec.Store && j.bodyLength > 0 {
		hint = int(j.bodyLength)
	}
	if j.disk != nil {
		fl.fill.SetHeadFile(j.head, j.disk)
	} else {
		fl.fill.SetHead(j.head, hint, !j.dec.Store)
	}
	if fl.background && !j.dec.Store {
		fl.fill.Abandon() // no reader: leave the body unread
	}
}

// readBufs are copyBody's buffers: Append copies what it is given, so a
// buffer is free again once the body is read.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody copies the origin's body into the flight, resetting the idle
// timer on every read, and returns its length once it is complete. A body
// past max_object_size is served but no longer stored.
func (pl *Pipeline) copyBody(ctx context.Context, j *fillJob, body io.Reader) (int64, error) {
	var total int64
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for {
		m, rerr := body.Read(buf)
		if m > 0 {
			j.idle.Reset(pl.cfg.FillIdleTimeout)
			if err := j.fl.fill.Append(ctx, buf[:m]); err != nil {
				if !errors.Is(err, cache.ErrAbandoned) {
					j.stats.originError.Inc()
				}
				return total, err
			}
			total += int64(m)
			if j.fl.peer != "" {
				pl.metrics.peerBytes.Add(float64(m))
			}
			if j.dec.Store && total > pl.cfg.MaxObjectSize {
				j.dec = httpcache.Decision{Reason: reasonTooLarge, Pass: !j.fl.copy}
			}
		}
		if rerr == nil {
			continue
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if cause := context.Cause(ctx); cause != nil {
			rerr = fmt.Errorf("%w (%w)", rerr, cause)
		}
		j.stats.originError.Inc()
		pl.log.Warn("fill aborted: origin body cut short", "key", j.key, "received", total, "err", rerr)
		return total, rerr
	}
	if j.bodyLength >= 0 && total != j.bodyLength {
		j.stats.originError.Inc()
		return total, fmt.Errorf("body has %d bytes, Content-Length said %d", total, j.bodyLength)
	}
	return total, nil
}

// commit stores a complete response as the job decided (memory, copies or
// disk), or marks the key hit-for-pass, then ends the flight. A response
// that a purge may have overtaken is served but not stored.
func (pl *Pipeline) commit(j *fillJob, total int64) {
	fl := j.fl
	if (pl.purges.Gen() != j.gen || (fl.peer != "" && pl.purges.Covers(j.key, j.head, fl.vouched))) && (j.dec.Store || j.disk != nil) {
		// A purge ran meanwhile, or a peer sent what an applied purge
		// removed (it had not applied the purge yet): the body may predate
		// the purge; serve it, store nothing.
		if j.disk != nil {
			fl.fill.AbortFile() // open readers keep their file
		}
		pl.finish(j.fkey, fl, nil)
		return
	}
	switch {
	case j.disk != nil:
		e := *j.head
		e.Header = j.head.Header.Clone()
		e.Header["Content-Length"] = []string{strconv.FormatInt(total, 10)}
		if _, err := fl.fill.CommitFile(&e); err != nil {
			pl.diskWarn("disk tier write failed", j.key, err)
		}
		pl.store.Invalidate(j.key) // an older, smaller version must not shadow it
	case j.dec.Store:
		pl.commitMemory(j)
		return
	case j.dec.Pass:
		pl.store.MarkPass(j.key, time.Now().Add(pl.cfg.HitForPass))
		if pl.disk != nil {
			pl.disk.Invalidate(j.key)
		}
	}
	pl.finish(j.fkey, fl, nil)
}

// commitMemory stores a complete response in memory (the copies' share for
// another node's object) and ends the flight, then writes the node's own
// objects through to disk.
func (pl *Pipeline) commitMemory(j *fillJob) {
	e := *j.head
	if err := j.fl.fill.Keep(&e); err != nil {
		pl.log.Warn("a complete response could not be stored", "key", j.key, "err", err)
		pl.finish(j.fkey, j.fl, nil)
		return
	}
	// The stored header carries its Content-Length, so a hit formats none.
	e.Header = j.head.Header.Clone()
	if bodyAllowed(e.Status) {
		e.Header["Content-Length"] = []string{strconv.FormatInt(e.Size, 10)}
	}
	if j.fl.copy && pl.copies != nil {
		// Another node owns it: a copy, in the copies' share, not on disk.
		pl.copies.Put(j.key, &e)
		pl.finish(j.fkey, j.fl, nil)
		return
	}
	pl.store.Put(j.key, &e)
	pl.finish(j.fkey, j.fl, nil)
	pl.writeThrough(j.key, &e)
}

// writeThrough copies a stored entry to the disk tier, so that neither memory
// eviction nor a restart loses it.
func (pl *Pipeline) writeThrough(key string, e *cache.Entry) {
	if pl.disk == nil {
		return
	}
	if err := pl.disk.Put(key, e); err != nil {
		pl.diskWarn("disk tier write failed", key, err)
	}
}

// diskWarn logs a disk tier failure for key: at Warn, or at Debug while the
// tier is full (it logged that once itself).
func (pl *Pipeline) diskWarn(msg, key string, err error) {
	lvl := slog.LevelWarn
	if errors.Is(err, cache.ErrDiskFull) {
		lvl = slog.LevelDebug
	}
	pl.log.Log(context.Background(), lvl, msg, "key", key, "err", err)
}

// refreshed handles a revalidation that the origin answered 304 with fields
// h: the stored entry is updated with the new fields and freshness, in every
// tier, and becomes the fill's response. The caller finishes the fill, then
// writes the returned entry (if any) through to disk.
func (pl *Pipeline) refreshed(j *fillJob, h http.Header) *cache.Entry {
	fl, stale, key, reqTime, respTime := j.fl, j.stale, j.key, j.reqTime, j.respTime
	h["Via"] = stale.e.Header["Via"] // keep the stored hop list
	// A cookie set on a revalidation is for the client that sent it, not for
	// the shared response it confirms (which would then not be stored).
	delete(h, "Set-Cookie")
	merged := httpcache.UpdateStored(stale.e.Header, h)
	httpcache.DropInvalidTargeted(merged)
	cc := httpcache.ResponseDirectives(merged)
	// The stored response is what the origin confirmed: what the request
	// that revalidated it carried (a Cookie) does not make it personal.
	dec := httpcache.Decide(stale.e.Status, merged, cc, httpcache.Request{Authorized: j.req.personal.Authorized}, j.rule.Policy)
	if dec.Store && pl.purges.Gen() != j.gen {
		// A purge ran while the origin was asked: it may have removed
		// this entry, which the 304 must not put back. Served, not stored.
		dec = httpcache.Decision{Reason: "recent-purge"}
	}
	e := *stale.e
	e.Header = merged
	e.ResponseTime = respTime
	e.Fetched = fl.fetchedAt(respTime)
	e.InitialAge = httpcache.InitialAge(h, reqTime, respTime)
	e.TTL, e.TTLSource = dec.TTL, string(dec.Source)
	e.NoStale, e.StaleWhileRevalidate, e.StaleIfError = httpcache.StaleRules(cc)
	v := httpcache.ValidatorsOf(merged)
	e.ETag, e.LastModified = v.ETag, v.LastModified
	fl.stored, fl.shareable, fl.reason = dec.Store, true, dec.Reason
	fl.heuristic = dec.Source == httpcache.SourceHeuristic
	if !dec.Store {
		pl.invalidate(key)
	}
	if stale.de != nil && !e.HasBody() {
		// A large object served from its file: rewrite it with the new metadata.
		path := stale.de.Path()
		if dec.Store {
			if de, err := pl.disk.Rewrite(key, stale.de, &e); err == nil {
				path = de.Path()
			} else {
				pl.log.Warn("disk tier rewrite failed", "key", key, "err", err)
			}
		}
		fl.fill.SetHeadStoredFile(&e, path, e.Size)
		return nil
	}
	var through *cache.Entry
	switch {
	case dec.Store && stale.copy && pl.copies != nil:
		pl.copies.Put(key, &e)
	case dec.Store:
		pl.store.Put(key, &e)
		through = &e
	}
	fl.fill.SetHeadEntry(&e)
	return through
}

// originError answers a request whose origin failed, with code from
// originErrorStatus.
func (pl *Pipeline) originError(x *exchange, code int) {
	pl.edgeError(x, code, originErrorText(code))
}

// originErrorText explains an originErrorStatus code to the client.
func originErrorText(code int) string {
	switch code {
	case http.StatusServiceUnavailable:
		return "meshcdn: the origin is at its request limit; retry shortly"
	case http.StatusGatewayTimeout:
		return "meshcdn: the origin did not answer in time"
	default:
		return "meshcdn: the origin could not be reached"
	}
}

// clientScheme is the scheme the client used: for a peer's request, the one
// the node that asked saw ("http" or "https", nothing else).
func clientScheme(r *http.Request, fromPeer bool) string {
	if r.TLS != nil || (fromPeer && r.Header.Get("X-Forwarded-Proto") == "https") {
		return "https"
	}
	return "http"
}
