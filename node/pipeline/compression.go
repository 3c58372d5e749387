package pipeline

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/compress"
	"github.com/meshcdn/meshcdn/node/httpcache"
)

// codings are the content codings the edge makes; a key's compressed
// variants are stored under cache.CodingKey(key, coding).
var codings = []string{compress.Brotli, compress.Zstd, compress.Gzip}

// negotiateCoding prepares a cacheable request of a site that compresses:
// the coding the client gets is chosen from its Accept-Encoding, and the
// field is removed, so the cache and the origin deal in the identity
// representation alone (one entry, one origin request, for every client).
// A Range request, or one that says no-transform, gets the identity.
func (pl *Pipeline) negotiateCoding(x *exchange) {
	cp := x.site.Compression
	r := x.r
	if cp == nil {
		return
	}
	if !x.fromPeer && r.Header.Get("Range") == "" && !compress.NoTransform(r.Header) {
		x.coding = cp.Negotiate(r.Header.Values("Accept-Encoding"))
	}
	if ae, ok := r.Header["Accept-Encoding"]; ok {
		x.clientAE = ae
		c := new(http.Request)
		*c = *r
		c.Header = r.Header.Clone()
		delete(c.Header, "Accept-Encoding")
		x.r = c
	}
}

// serveCompressedHit answers from the stored compressed variant of key in
// the request's coding, when this node holds a fresh one.
func (pl *Pipeline) serveCompressedHit(x *exchange, key string, now time.Time) bool {
	f := pl.lookup(cache.CodingKey(key, x.coding), x.r.Header, now, memoryOnly)
	if f.e == nil || !f.e.Fresh(now) || pl.suspect(f.e, nil, now) {
		return false
	}
	pl.compressed(x, f.e.Uncompressed, f.e.Size)
	x.coding = "" // it is encoded already
	x.status = hitStatusOf(f.e)
	pl.respond(x, f.e, f.src, now)
	return true
}

// compressed counts a compressed response and the bytes it saved.
func (pl *Pipeline) compressed(x *exchange, identity, encoded int64) {
	pl.metrics.compressed.WithLabelValues(x.site.Name, x.coding).Inc()
	if identity > encoded {
		pl.metrics.compressionSaved.WithLabelValues(x.site.Name).Add(float64(identity - encoded))
	}
}

// respondCompressed sends meta's representation encoded in x.coding while
// it is read from src (a stored body, or a fill still arriving), and
// stores the encoded variant once it is complete when meta is stored and
// fresh and the encoding fits in the memory tier's object bound. Memory per
// response is the encoder's (see compress.NewWriter) plus, while storing,
// the encoded bytes up to that bound.
func (pl *Pipeline) respondCompressed(x *exchange, meta *cache.Entry, src cache.Body, now time.Time) {
	coding := x.coding
	enc := *meta
	enc.ETag = compress.WeakETag(meta.ETag)
	enc.Header = make(http.Header, len(meta.Header)+2)
	for k, v := range meta.Header {
		enc.Header[k] = v
	}
	delete(enc.Header, "Content-Length")
	enc.Header["Content-Encoding"] = []string{coding}
	addVary(enc.Header)
	if enc.ETag != "" {
		enc.Header["Etag"] = []string{enc.ETag}
	}
	h := x.w.Header()
	for k, v := range enc.Header {
		h[k] = v
	}
	h["Age"] = []string{httpcache.AgeValue(meta.Age(now))}
	httpcache.DropTargeted(h)
	h["Cache-Status"] = []string{x.status.String()}
	if pl.answerPreconditions(x, &enc) {
		return
	}
	if err := src.Err(); err != nil {
		pl.abort(x, err)
		return
	}
	x.writeHeader(http.StatusOK)
	if x.r.Method == http.MethodHead {
		return
	}
	store := (x.status.Hit || x.status.Stored) && meta.Fresh(now)
	limit := min(pl.cfg.MaxObjectSize, x.site.Compression.MaxSize())
	var kept *boundedBuffer
	out := io.Writer(x.w)
	if store {
		kept = &boundedBuffer{limit: limit}
		out = io.MultiWriter(x.w, kept)
	}
	cw := &countingWriter{w: out}
	zw, err := compress.NewWriter(coding, cw)
	if err != nil {
		pl.abort(x, err)
		return
	}
	gen := pl.purges.Gen()
	read, err := src.Copy(x.r.Context(), zw, &flushingWriter{ResponseWriter: x.w, enc: zw}, 0, -1)
	if err == nil {
		err = zw.Close()
	}
	x.written = cw.n
	if err != nil {
		pl.abort(x, err)
		return
	}
	pl.compressed(x, read, cw.n)
	if !store || kept.over || pl.purges.Gen() != gen {
		return // too large to keep, or a purge ran meanwhile
	}
	enc.Body, enc.Size, enc.Uncompressed = kept.b, int64(len(kept.b)), read
	enc.Header = enc.Header.Clone()
	enc.Header["Content-Length"] = []string{strconv.Itoa(len(kept.b))}
	enc.Vary = httpcache.VaryFields(enc.Header)
	enc.VaryKey = httpcache.SecondaryKey(enc.Vary, x.r.Header)
	ck := cache.CodingKey(x.key, coding)
	if _, _, theirs := pl.owner(x.key); !theirs {
		pl.store.Put(ck, &enc)
	} else if pl.copies != nil {
		pl.copies.Put(ck, &enc) // another node owns the representation: a copy
	}
}

// boundedBuffer keeps what is written to it up to limit bytes; past it, it
// keeps nothing and says so. It never fails a write.
type boundedBuffer struct {
	b     []byte
	limit int64
	over  bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if !b.over {
		if int64(len(b.b)+len(p)) > b.limit {
			b.over, b.b = true, nil
		} else {
			b.b = append(b.b, p...)
		}
	}
	return len(p), nil
}

// flushingWriter is the client's writer as a streaming body flushes it:
// the encoder first gives out what it holds, so a client reading a body
// still arriving gets the bytes sent so far.
type flushingWriter struct {
	http.ResponseWriter
	enc compress.Writer
}

func (f *flushingWriter) FlushError() error {
	if err := f.enc.Flush(); err != nil {
		return err
	}
	return http.NewResponseController(f.ResponseWriter).Flush()
}

func (f *flushingWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// varyAE is the Vary value of a compressible response that had none,
// shared by every such response: net/http only reads it.
var varyAE = []string{"Accept-Encoding"}

// addVary adds Accept-Encoding to h's Vary unless it is there (or Vary is
// "*"). The common case, no Vary at all, allocates nothing.
func addVary(h http.Header) {
	prev := h["Vary"]
	switch {
	case len(prev) == 0:
		h["Vary"] = varyAE
	case !varies(h, "Accept-Encoding"):
		h["Vary"] = append(append([]string(nil), prev...), "Accept-Encoding")
	}
}

// varies reports whether h's Vary names the field name, or is "*".
func varies(h http.Header, name string) bool {
	for _, line := range h["Vary"] {
		for f := range strings.SplitSeq(line, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, name) {
				return true
			}
		}
	}
	return false
}

// invalidateCodings drops the compressed variants of key from memory.
func (pl *Pipeline) invalidateCodings(key string) bool {
	ok := false
	for _, c := range codings {
		if pl.store.Invalidate(cache.CodingKey(key, c)) {
			ok = true
		}
		if pl.copies != nil && pl.copies.Invalidate(cache.CodingKey(key, c)) {
			ok = true
		}
	}
	return ok
}
