package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/slice"
)

// readAhead is how many slices past the one being sent are fetched
// meanwhile.
const readAhead = 2

// errVersions ends a response whose slices turned out to be of two
// versions of the object: what was sent is not completed with the other's
// bytes.
var errVersions = errors.New("the object's slices are of two versions")

// serveSliced answers a miss of a site with a slice_size: the object's
// first slice says whether the origin slices it (206 with the object's
// length) and gives the status and fields of the response, whose body is
// the slices it covers, each from the store, a peer or the origin (see
// slicedBody). An origin that ignores ranges answers the first slice's
// request with the whole object, which is served and stored whole.
func (pl *Pipeline) serveSliced(x *exchange, rule *site.Rule, key string, fwd httpcache.Fwd) {
	size := x.site.SliceSize
	first := slice.Spec{Size: size, Index: 0}
	s, err := pl.sliceSource(x, rule, key, first)
	if err != nil {
		pl.fillFailed(x, nil, fwd, err)
		return
	}
	switch {
	case s.pass:
		pl.bypass(x, httpcache.Status{Fwd: httpcache.FwdBypass, Detail: "hit-for-pass"}, false)
		return
	case s.head.Status == http.StatusRequestedRangeNotSatisfiable:
		// An empty object has no first byte to ask for: fetched whole.
		pl.serveFill(x, rule, key, nil, nil, fwd, 0)
		return
	case s.fl != nil && !s.fl.shareable:
		// Not stored, so possibly personal: the client's own request
		// goes to the origin.
		if s.leader {
			s.fl.fill.Abandon()
		}
		pl.bypass(x, httpcache.Status{Fwd: fwd, FwdStatus: s.head.Status, Detail: s.fl.reason}, false)
		return
	}
	x.status = s.status(fwd)
	if s.head.Status != http.StatusPartialContent {
		// The whole object (an origin that ignores ranges), or an answer
		// such as 404: as the origin sent it.
		pl.respond(x, s.head, s.body, time.Now())
		return
	}
	_, _, total, err := slice.ParseContentRange(s.head.Header.Get("Content-Range"))
	if err != nil {
		pl.fillFailed(x, nil, fwd, err) // checked by the fill: not reached
		return
	}
	meta := *s.head
	meta.Status, meta.Size = http.StatusOK, total
	meta.Header = s.head.Header.Clone()
	delete(meta.Header, "Content-Range")
	meta.Header["Content-Length"] = []string{strconv.FormatInt(total, 10)}
	body := &slicedBody{pl: pl, x: x, rule: rule, key: key, size: size, total: total,
		version: versionOf(s.head, total), first: s.body}
	x.noCompress = true // sent as the origin's bytes, slice by slice
	x.stats.sliced.Inc()
	x.stats.counts.Sliced.Add(1)
	pl.respond(x, &meta, body, time.Now())
}

// serveSliceToPeer answers a peer's request for one slice of the object
// at key with the origin's answer as it came: the whole object, when this
// node holds it whole (an origin that ignores ranges), else the slice's
// 206, stored or through the slice's fill. A cache-only request (a new
// owner asking a previous one) is answered from a fresh stored slice or
// not at all. It reports whether it handed the rest to the front's
// Detacher.
func (pl *Pipeline) serveSliceToPeer(x *exchange, rule *site.Rule, key string, spec slice.Spec, now time.Time) bool {
	// Not cut to the Range the peer's request carries for the origin.
	delete(x.r.Header, "Range")
	delete(x.r.Header, "If-Range")
	fresh := func(f held) bool { return f.e != nil && f.e.Fresh(now) && !pl.suspect(f.e, f.de, now) }
	f := pl.lookup(key, x.r.Header, now, serving)
	if !fresh(f) {
		f = pl.lookup(spec.Key(key), x.r.Header, now, serving)
	}
	switch {
	case fresh(f):
		x.status = hitStatusOf(f.e)
		if cache.InMemory(f.src) {
			pl.respond(x, f.e, f.src, now)
			return false
		}
		return pl.later(x, func(x *exchange) { pl.respond(x, f.e, f.src, now) })
	case onlyIfCached(x.r):
		pl.notCached(x, httpcache.FwdURIMiss)
		return false
	}
	return pl.later(x, func(x *exchange) { pl.servePeerSlice(x, rule, key, spec) })
}

// servePeerSlice answers a peer's request for a slice this node does not
// hold fresh, through the slice's fill (a revalidation of a stale one). A
// take-over is answered once the slice is stored here.
func (pl *Pipeline) servePeerSlice(x *exchange, rule *site.Rule, key string, spec slice.Spec) {
	s, err := pl.sliceSource(x, rule, key, spec)
	if err != nil {
		pl.fillFailed(x, nil, httpcache.FwdURIMiss, err)
		return
	}
	if s.pass {
		pl.bypass(x, httpcache.Status{Fwd: httpcache.FwdBypass, Detail: "hit-for-pass"}, false)
		return
	}
	if s.fl != nil && s.leader && !s.fl.shareable {
		defer s.fl.fill.Abandon() // a streamed fill stops when its only reader leaves
	}
	x.status = s.status(httpcache.FwdURIMiss)
	pl.respond(x, s.head, s.body, time.Now())
	if _, ok := peer.TakeOverFrom(x.r.Context()); ok && s.fl != nil {
		// As serveFill: the draining node's offer is taken once stored.
		if err := s.fl.fill.Done(x.r.Context()); err != nil {
			panic(http.ErrAbortHandler) // not taken
		}
	}
}

// sliceOf is one slice as a response streams it: stored, or arriving
// through its fill.
type sliceOf struct {
	head   *cache.Entry
	body   cache.Body
	fl     *flight // nil for a stored slice
	leader bool
	pass   bool // the slice's key is marked hit-for-pass: nothing else is set
}

// status is the Cache-Status of a response whose first slice is s.
func (s *sliceOf) status(fwd httpcache.Fwd) httpcache.Status {
	if s.fl == nil {
		return hitStatusOf(s.head)
	}
	st := s.fl.status(s.leader)
	st.Fwd = fwd
	return st
}

// sliceSource returns slice spec of the object at key: stored and fresh,
// or through a fill of the slice (started unless one is in flight), once
// its head has arrived.
func (pl *Pipeline) sliceSource(x *exchange, rule *site.Rule, key string, spec slice.Spec) (*sliceOf, error) {
	skey := spec.Key(key)
	now := time.Now()
	f := pl.lookup(skey, x.r.Header, now, serving)
	switch {
	case f.pass:
		return &sliceOf{pass: true}, nil
	case f.e != nil && f.e.Fresh(now) && !pl.suspect(f.e, f.de, now):
		return &sliceOf{head: f.e, body: f.src}, nil
	}
	var stale *stored
	if f.e != nil {
		stale = f.stored()
	}
	fl, leader := pl.startSliceFill(x, rule, key, spec, stale, false)
	head, err := fl.fill.Head(x.r.Context())
	if err != nil {
		return nil, err
	}
	return &sliceOf{head: head, body: cache.FillBody(fl.fill, head.Size), fl: fl, leader: leader}, nil
}

// prefetchSlice starts the fill of a slice a response will send next,
// unless the slice is stored fresh or already in flight; a stored one is
// revalidated.
func (pl *Pipeline) prefetchSlice(x *exchange, rule *site.Rule, key string, spec slice.Spec) {
	now := time.Now()
	f := pl.lookup(spec.Key(key), x.r.Header, now, serving)
	if f.pass || (f.e != nil && f.e.Fresh(now) && !pl.suspect(f.e, f.de, now)) {
		return
	}
	var stale *stored
	if f.e != nil {
		stale = f.stored()
	}
	pl.startSliceFill(x, rule, key, spec, stale, true)
}

// startSliceFill returns the flight of a slice's fill, starting one unless
// one is in flight. It asks for the slice with a Range request, in the
// identity coding (one set of bytes for every client). A prefetch's fill
// reads nothing of a response it will not store.
func (pl *Pipeline) startSliceFill(x *exchange, rule *site.Rule, key string, spec slice.Spec, stale *stored, prefetch bool) (*flight, bool) {
	skey := spec.Key(key)
	return pl.joinFlight(skey, func() *flight {
		fl := &flight{fill: cache.NewFill(), fwd: httpcache.FwdURIMiss, background: prefetch}
		req := fillRequest(x.r, x.site, stale)
		req.header.Set("Range", spec.Range())
		req.header.Del("Accept-Encoding")
		req.slice = &spec
		j := &fillJob{fl: fl, site: x.site, stats: x.stats, rule: rule, key: skey, fkey: skey, whole: key, slice: &spec, req: req, stale: stale,
			class: fillClass(x, stale, false)} // a read-ahead is a client's too
		x.stats.sliceFill.Inc()
		x.stats.counts.SliceFills.Add(1)
		pl.wg.Go(func() { pl.runFill(j) })
		return fl
	})
}

// checkSlice checks the answer to a slice's fill: a 206 must be the
// slice asked for; a 200 is the whole object from an origin that ignores
// ranges, which the fill then stores under the object's own key (and,
// when the object is longer than a slice, the site's objects are fetched
// whole for a while). Other answers (404, say) are the slice key's, as
// they came.
func (pl *Pipeline) checkSlice(j *fillJob, resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if _, err := j.slice.Check(resp.Header.Get("Content-Range")); err != nil {
			return err
		}
	case http.StatusOK:
		j.key = j.whole
		// A shorter object says nothing: a script's page, say, may
		// ignore ranges where the site's files do not.
		if resp.ContentLength > j.slice.Size && pl.rangeless.Mark(j.site.Name, time.Now()) {
			pl.log.Info("the site's origin answers Range requests with whole objects: its objects are fetched whole for a while",
				"site", j.site.Name, "key", j.whole, "for", pl.rangeless.TTL())
		}
	}
	return nil
}

// Memories of what not to slice: a site whose origin ignores ranges and
// an object whose slices differed twice within mismatchWindow (an
// origin's servers with ETags of their own, say) are fetched whole for
// unslicedFor; each memory holds at most memoSize names.
const (
	unslicedFor    = 10 * time.Minute
	mismatchWindow = time.Minute
	memoSize       = 4096
)

// sliceable reports whether a miss of the object at key, of a site with
// a slice_size, is fetched as slices.
func (pl *Pipeline) sliceable(st *site.Site, key string, now time.Time) bool {
	return !pl.rangeless.Has(st.Name, now) && !pl.unsliced.Has(key, now)
}

// versionOf is the version of the object a slice's stored head belongs to.
func versionOf(e *cache.Entry, total int64) slice.Version {
	return slice.Version{ETag: e.ETag, LastModified: e.LastModified, Total: total}
}

// slicedBody is the body of an object stored as slices, as respond sends
// it: Copy sends the slices a stretch covers in order, each from wherever
// sliceSource finds it, with the next readAhead slices fetched meanwhile.
// Every slice must be a 206 of the first slice's version; one that is not
// ends the response, and the object's slices here are dropped.
type slicedBody struct {
	pl          *Pipeline
	x           *exchange
	rule        *site.Rule
	key         string
	size, total int64
	version     slice.Version
	first       cache.Body // slice 0's, which the response's head came from
}

func (b *slicedBody) Size() int64 { return b.total }
func (b *slicedBody) Err() error  { return nil }

func (b *slicedBody) Copy(ctx context.Context, w io.Writer, client http.ResponseWriter, off, n int64) (int64, error) {
	if n < 0 {
		n = b.total - off
	}
	if n <= 0 {
		return 0, nil
	}
	first, last := slice.Covering(off, n, b.size)
	var sent int64
	for i := first; i <= last; i++ {
		for k := i + 1; k <= min(i+readAhead, last); k++ {
			b.pl.prefetchSlice(b.x, b.rule, b.key, slice.Spec{Size: b.size, Index: k})
		}
		start := max(off, i*b.size) - i*b.size
		end := min(off+n, (i+1)*b.size) - i*b.size
		for retry := 0; ; retry++ {
			src, err := b.slice(i)
			if err != nil {
				return sent, err
			}
			m, err := src.Copy(ctx, w, client, start, end-start)
			sent, start = sent+m, start+m
			if err == nil {
				break
			}
			if !errors.Is(err, cache.ErrFillAborted) || ctx.Err() != nil || retry == sliceRetries {
				return sent, err
			}
			// The slice's fill broke off (its peer's connection was cut,
			// say): the slice is fetched again and the response goes on
			// from where it is, checked against the version as ever.
			if i == 0 {
				b.first = nil
			}
		}
	}
	return sent, nil
}

// sliceRetries is how many times a slice whose fill broke off is fetched
// again before the response is cut short.
const sliceRetries = 2

// slice returns the body of slice i, checked against the object's version.
func (b *slicedBody) slice(i int64) (cache.Body, error) {
	if i == 0 && b.first != nil {
		return b.first, nil
	}
	s, err := b.pl.sliceSource(b.x, b.rule, b.key, slice.Spec{Size: b.size, Index: i})
	if err != nil {
		return nil, err
	}
	if s.pass || s.head.Status != http.StatusPartialContent {
		b.drop()
		return nil, fmt.Errorf("slice %d of %s: %w (the origin no longer sends it as a slice)", i, b.key, errVersions)
	}
	_, _, total, err := slice.ParseContentRange(s.head.Header.Get("Content-Range"))
	if err != nil || !versionOf(s.head, total).Same(b.version) {
		b.drop()
		return nil, fmt.Errorf("slice %d of %s: %w", i, b.key, errVersions)
	}
	return s.body, nil
}

// drop removes the object's slices, wherever they are: this node's
// tiers at once, then every member's through a purge of the object's URL
// (which covers its slices), so that no node keeps serving a slice of the
// version the origin replaced and the next request starts again from the
// first slice. A second mismatch within mismatchWindow is no new version
// but an origin whose servers disagree: the object is fetched whole for
// a while, without another purge.
func (b *slicedBody) drop() {
	b.x.stats.mismatch.Inc()
	b.pl.invalidate(b.key)
	for i := range slice.Count(b.total, b.size) {
		b.pl.invalidate(slice.Spec{Size: b.size, Index: i}.Key(b.key))
	}
	now := time.Now()
	if !b.pl.mismatched.Mark(b.key, now) {
		if b.pl.unsliced.Mark(b.key, now) {
			b.pl.log.Warn("an object's slices differ in version again: the origin's servers disagree on it (their ETags, say); it is fetched whole for a while",
				"key", b.key, "for", b.pl.unsliced.TTL())
		}
		return
	}
	b.pl.log.Warn("an object's slices differ in version: purged, the response is cut short", "key", b.key)
	if b.pl.cfg.Purge == nil {
		return
	}
	target := "http://" + b.x.r.Host + b.x.r.URL.RequestURI()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.x.r.Context()), 10*time.Second)
	defer cancel()
	if _, _, err := b.pl.cfg.Purge(ctx, []string{target}); err != nil {
		b.pl.log.Warn("purging an object whose slices differ in version failed", "key", b.key, "err", err)
	}
}

func (b *slicedBody) Complete(ctx context.Context) ([]byte, error) {
	return nil, errors.New("an object stored as slices is not read whole into memory")
}

// SlicedSize returns the length of the object at key stored here as
// slices of size, from its first slice, when this node holds that.
func (pl *Pipeline) SlicedSize(key string, size int64) (int64, bool) {
	f := pl.lookup(slice.Spec{Size: size, Index: 0}.Key(key), nil, time.Now(), memoryOnly)
	if f.e == nil || f.e.Status != http.StatusPartialContent {
		return 0, false
	}
	_, _, total, err := slice.ParseContentRange(f.e.Header.Get("Content-Range"))
	return total, err == nil
}
