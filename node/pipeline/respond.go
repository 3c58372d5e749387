package pipeline

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"time"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/peer"
)

// Shared header values of the hit path. net/http only reads them.
var (
	hitStatus               = httpcache.Status{Hit: true}
	hitStatusValue          = []string{hitStatus.String()}
	heuristicHitStatus      = httpcache.Status{Hit: true, Detail: httpcache.DetailHeuristic}
	heuristicHitStatusValue = []string{heuristicHitStatus.String()}
	acceptRangesValue       = []string{"bytes"}
)

// hitStatusOf is the Cache-Status of a fresh hit on e: a freshness the
// edge guessed (RFC 9111 §4.2.2) says so.
func hitStatusOf(e *cache.Entry) httpcache.Status {
	if e.TTLSource == string(httpcache.SourceHeuristic) {
		return heuristicHitStatus
	}
	return hitStatus
}

// respond sends a stored or arriving response to the client, answering the
// client's preconditions (304/412) and Range (206/416) from it.
func (pl *Pipeline) respond(x *exchange, meta *cache.Entry, src cache.Body, now time.Time) {
	w, r := x.w, x.r
	cp := x.site.Compression
	compressible := cp != nil && !x.fromPeer && !x.noCompress && cp.Compressible(meta.Status, meta.Header, src.Size())
	if compressible && x.coding != "" {
		pl.respondCompressed(x, meta, src, now)
		return
	}
	if sw, ok := w.(StoredWriter); ok && pl.whole(x, meta, src) {
		pl.respondStored(x, sw, meta, src, now, compressible)
		return
	}
	h := w.Header()
	for k, v := range meta.Header {
		h[k] = v // shared, never modified: changes below replace whole slices
	}
	if compressible {
		addVary(h) // other clients get it encoded
	}
	h["Age"] = []string{httpcache.AgeValue(meta.Age(now))}
	if x.fromPeer {
		h[peer.FetchedField] = []string{meta.FetchedAt().Format(time.RFC3339Nano)}
		if v := pl.purges.Vouch(x.key, meta); len(v) > 0 {
			h[peer.VouchedField] = v
		} else {
			delete(h, peer.VouchedField) // only this node's word counts
		}
	} else {
		httpcache.DropTargeted(h) // the edge's directives, not the client's; peers decide by them too
	}
	h["Cache-Status"] = statusField(x.status)
	if pl.answerPreconditions(x, meta) {
		return
	}
	if err := src.Err(); err != nil {
		// The fill broke before anything was sent: say so plainly.
		pl.abort(x, err)
		return
	}
	size := src.Size()
	if meta.Status == http.StatusOK {
		h["Accept-Ranges"] = acceptRangesValue
		var done bool
		if src, size, done = pl.answerRange(x, meta, src, size); done {
			return
		}
	}
	if _, ok := h["Content-Length"]; !ok && size >= 0 && bodyAllowed(meta.Status) {
		h["Content-Length"] = []string{strconv.FormatInt(size, 10)}
	}
	x.writeHeader(meta.Status)
	if r.Method == http.MethodHead || !bodyAllowed(meta.Status) {
		return
	}
	m, err := src.Copy(r.Context(), w, w, 0, -1)
	x.written = m
	if err != nil {
		pl.abort(x, err)
	}
}

// StoredWriter is a ResponseWriter of a front that keeps a stored
// response's header fields in its own wire form, rendered once per entry
// (cache.Entry.Rendered), instead of taking them from Header() for every
// response. The pipeline uses it for the plain case, a whole stored
// response to a client: WriteStored stands for WriteHeader(meta.Status)
// with meta's fields, less the targeted field the edge obeyed
// (httpcache.DropTargeted), and f, the response's own; the body follows
// through Write as usual.
type StoredWriter interface {
	WriteStored(meta *cache.Entry, f cache.ResponseFields)
}

// whole reports whether x is answered with the whole of a stored response
// and nothing of the client's request changes its fields: no precondition
// to answer, no range, no peer's fields, no HSTS over the origin's.
func (pl *Pipeline) whole(x *exchange, meta *cache.Entry, src cache.Body) bool {
	if x.fromPeer || x.hsts || src.Err() != nil {
		return false
	}
	if meta.Status == http.StatusOK && x.r.Header["Range"] != nil {
		return false
	}
	return httpcache.CheckPreconditions(x.r.Method, x.r.Header, httpcache.Validators{ETag: meta.ETag, LastModified: meta.LastModified}) == 0
}

// respondStored is respond's plain case through a StoredWriter.
func (pl *Pipeline) respondStored(x *exchange, sw StoredWriter, meta *cache.Entry, src cache.Body, now time.Time, compressible bool) {
	size := src.Size()
	if !bodyAllowed(meta.Status) {
		size = -1
	}
	x.code = meta.Status
	x.ttfb = time.Since(x.start)
	sw.WriteStored(meta, cache.ResponseFields{
		Age:                httpcache.AgeValue(meta.Age(now)),
		CacheStatus:        statusField(x.status)[0],
		AcceptRanges:       meta.Status == http.StatusOK,
		VaryAcceptEncoding: compressible && !varies(meta.Header, "Accept-Encoding"),
		Size:               size,
	})
	if x.r.Method == http.MethodHead || !bodyAllowed(meta.Status) {
		return
	}
	m, err := src.Copy(x.r.Context(), x.w, x.w, 0, -1)
	x.written = m
	if err != nil {
		pl.abort(x, err)
	}
}

// statusField is s as a field's values, shared for the common hits.
func statusField(s httpcache.Status) []string {
	switch s {
	case hitStatus:
		return hitStatusValue
	case heuristicHitStatus:
		return heuristicHitStatusValue
	}
	return []string{s.String()}
}

// answerPreconditions answers the client's conditional request from meta
// (304 or 412) and reports whether it did.
func (pl *Pipeline) answerPreconditions(x *exchange, meta *cache.Entry) bool {
	switch httpcache.CheckPreconditions(x.r.Method, x.r.Header, httpcache.Validators{ETag: meta.ETag, LastModified: meta.LastModified}) {
	case http.StatusNotModified:
		if meta.Status == http.StatusOK {
			pl.notModified(x, meta)
			return true
		}
	case http.StatusPreconditionFailed:
		clearRepresentation(x.w.Header())
		x.writeHeader(http.StatusPreconditionFailed)
		return true
	}
	return false
}

// answerRange answers the client's Range on a 200 (206, multipart 206 or
// 416) and reports done. Otherwise the whole representation is to be sent:
// src and size come back, completed when a range needed the length of a
// body still arriving.
func (pl *Pipeline) answerRange(x *exchange, meta *cache.Entry, src cache.Body, size int64) (cache.Body, int64, bool) {
	rng := x.r.Header.Get("Range")
	if rng != "" && size < 0 { // a fill without Content-Length: ranges need the length
		b, err := src.Complete(x.r.Context())
		switch {
		case errors.Is(err, cache.ErrStreamed):
			return src, size, false // not stored, so never whole here: send it all (RFC 9110 §14.2)
		case err != nil:
			pl.abort(x, err)
			return src, size, true
		default:
			src, size = cache.Bytes(b), int64(len(b))
		}
	}
	if rng == "" || !httpcache.IfRangeMatches(x.r.Header, httpcache.Validators{ETag: meta.ETag, LastModified: meta.LastModified}) {
		return src, size, false
	}
	ranges, err := httpcache.ParseRange(rng, size)
	switch {
	case errors.Is(err, httpcache.ErrUnsatisfiable):
		h := x.w.Header()
		clearRepresentation(h)
		h["Content-Range"] = []string{"bytes */" + strconv.FormatInt(size, 10)}
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		x.writeHeader(http.StatusRequestedRangeNotSatisfiable)
	case err == nil && len(ranges) == 1:
		pl.sendRange(x, src, ranges[0], size)
	case err == nil:
		pl.sendMultipart(x, meta, src, ranges, size)
	default:
		return src, size, false // malformed or too many ranges: the whole representation
	}
	return src, size, true
}

func (pl *Pipeline) sendRange(x *exchange, src cache.Body, rg httpcache.Range, size int64) {
	h := x.w.Header()
	h["Content-Range"] = []string{rg.ContentRange(size)}
	h["Content-Length"] = []string{strconv.FormatInt(rg.Length, 10)}
	x.writeHeader(http.StatusPartialContent)
	if x.r.Method == http.MethodHead {
		return
	}
	m, err := src.Copy(x.r.Context(), x.w, x.w, rg.Start, rg.Length)
	x.written = m
	if err != nil {
		pl.abort(x, err)
	}
}

// sendMultipart answers several ranges with multipart/byteranges (RFC 9110 §14.6).
func (pl *Pipeline) sendMultipart(x *exchange, meta *cache.Entry, src cache.Body, ranges []httpcache.Range, size int64) {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	boundary := "meshcdn-" + hex.EncodeToString(rnd[:])
	ctype := meta.Header.Get("Content-Type")
	h := x.w.Header()
	h["Content-Type"] = []string{"multipart/byteranges; boundary=" + boundary}
	delete(h, "Content-Length")
	x.writeHeader(http.StatusPartialContent)
	if x.r.Method == http.MethodHead {
		return
	}
	cw := &countingWriter{w: x.w}
	mw := multipart.NewWriter(cw)
	_ = mw.SetBoundary(boundary)
	for _, rg := range ranges {
		ph := textproto.MIMEHeader{"Content-Range": {rg.ContentRange(size)}}
		if ctype != "" {
			ph["Content-Type"] = []string{ctype}
		}
		part, err := mw.CreatePart(ph)
		if err == nil {
			_, err = src.Copy(x.r.Context(), part, x.w, rg.Start, rg.Length)
		}
		if err != nil {
			x.written = cw.n
			pl.abort(x, err)
			return
		}
	}
	_ = mw.Close()
	x.written = cw.n
}

// notModified answers a client's successful conditional GET with 304, keeping
// the fields RFC 9110 §15.4.5 requires.
func (pl *Pipeline) notModified(x *exchange, meta *cache.Entry) {
	h := x.w.Header()
	for k := range h {
		switch k {
		case "Age", "Via", "Cache-Status":
		default:
			delete(h, k)
		}
	}
	for _, f := range httpcache.NotModifiedFields {
		if v, ok := meta.Header[f]; ok {
			h[f] = v
		}
	}
	x.writeHeader(http.StatusNotModified)
}

// abort ends a response whose body cannot be completed. Once the header is out
// the connection (or HTTP/2 stream) is reset, so the client never takes a cut
// body for a complete one.
func (pl *Pipeline) abort(x *exchange, err error) {
	if x.r.Context().Err() != nil {
		return // the client left; nothing to tell it
	}
	x.status.Detail = "aborted"
	x.status.Stored = false // a broken body is never stored
	pl.log.Debug("response aborted", "host", x.r.Host, "path", x.r.URL.Path, "err", err)
	if x.code == 0 {
		code, _ := originErrorStatus(err)
		pl.originError(x, code)
		return
	}
	panic(http.ErrAbortHandler)
}

func clearRepresentation(h http.Header) {
	for _, f := range []string{"Content-Length", "Content-Type", "Content-Encoding", "Content-Range", "Accept-Ranges"} {
		delete(h, f)
	}
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && status >= 200
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	m, err := c.w.Write(p)
	c.n += int64(m)
	return m, err
}
