package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"time"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/peer"
)

// body is a representation to send: complete (stored) or still arriving (a fill).
type body interface {
	// size is the length, -1 while unknown.
	size() int64
	// copy writes [off, off+n) to w; n < 0 means to the end.
	copy(ctx context.Context, w io.Writer, client http.ResponseWriter, off, n int64) (int64, error)
	// complete waits for the whole body.
	complete(ctx context.Context) ([]byte, error)
}

type entryBody []byte

func (b entryBody) size() int64 { return int64(len(b)) }

func (b entryBody) copy(_ context.Context, w io.Writer, _ http.ResponseWriter, off, n int64) (int64, error) {
	end := int64(len(b))
	if n >= 0 {
		end = off + n
	}
	m, err := w.Write(b[off:end])
	return int64(m), err
}

func (b entryBody) complete(context.Context) ([]byte, error) { return b, nil }

type fillBody struct {
	f *cache.Fill
	n int64
}

func (b fillBody) size() int64 { return b.n }

// copy streams from the fill as it grows, flushing to the client whenever it has
// caught up with the origin, so the first bytes leave before the last arrive.
func (b fillBody) copy(ctx context.Context, w io.Writer, client http.ResponseWriter, off, n int64) (int64, error) {
	var written int64
	rc := http.NewResponseController(client)
	for n < 0 || written < n {
		// Flush when caught up with the origin, except after the last byte: the
		// response completes only once the fill has ended (and is stored), so a
		// client that asks again right after finds the stored entry.
		if b.f.Buffered() <= off && (b.n < 0 || off < b.n) {
			_ = rc.Flush()
		}
		p, err := b.f.Next(ctx, off)
		if errors.Is(err, io.EOF) {
			if n >= 0 {
				return written, io.ErrUnexpectedEOF
			}
			return written, nil
		}
		if err != nil {
			return written, err
		}
		if n >= 0 {
			p = p[:min(int64(len(p)), n-written)]
		}
		m, err := w.Write(p)
		written += int64(m)
		off += int64(m)
		b.f.Consumed(off)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func (b fillBody) complete(ctx context.Context) ([]byte, error) { return b.f.Wait(ctx) }

// fileBody is a complete body in a file of the disk tier. Copies to the client
// connection go through sendfile.
type fileBody struct {
	path string
	n    int64
}

func (b fileBody) size() int64 { return b.n }

func (b fileBody) copy(_ context.Context, w io.Writer, _ http.ResponseWriter, off, n int64) (int64, error) {
	f, err := os.Open(b.path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if n < 0 {
		n = b.n - off
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	m, err := io.Copy(w, io.LimitReader(f, n))
	if err == nil && m < n {
		err = io.ErrUnexpectedEOF
	}
	return m, err
}

func (b fileBody) complete(context.Context) ([]byte, error) {
	return nil, errors.New("a disk object always has a known size")
}

// fileFillBody is a fill whose body is being written to a file of the disk
// tier: readers follow the writer through the file with a small buffer, so a
// large object streams to any number of clients in bounded memory.
type fileFillBody struct {
	f *cache.Fill
	n int64
}

func (b fileFillBody) size() int64 { return b.n }

func (b fileFillBody) copy(ctx context.Context, w io.Writer, client http.ResponseWriter, off, n int64) (int64, error) {
	file, err := b.f.OpenBody()
	if err != nil {
		return 0, err
	}
	defer file.Close()
	rc := http.NewResponseController(client)
	buf := make([]byte, 64<<10)
	var written int64
	for n < 0 || written < n {
		avail, err := b.f.WaitAvail(ctx, off)
		if errors.Is(err, io.EOF) {
			if n >= 0 {
				return written, io.ErrUnexpectedEOF
			}
			return written, nil
		}
		if err != nil {
			return written, err
		}
		chunk := min(avail-off, int64(len(buf)))
		if n >= 0 {
			chunk = min(chunk, n-written)
		}
		m, err := file.ReadAt(buf[:chunk], off)
		if m > 0 {
			k, werr := w.Write(buf[:m])
			written += int64(k)
			off += int64(k)
			if werr != nil {
				return written, werr
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return written, err
		}
		if off >= avail && (b.n < 0 || off < b.n) {
			_ = rc.Flush() // caught up with the origin: let the client have it
		}
	}
	return written, nil
}

func (b fileFillBody) complete(context.Context) ([]byte, error) {
	return nil, errors.New("a disk fill always has a known size")
}

// Shared header values of the hit path. net/http only reads them.
var (
	hitStatus         = httpcache.Status{Hit: true}
	hitStatusValue    = []string{hitStatus.String()}
	acceptRangesValue = []string{"bytes"}
)

// respond sends a stored or arriving response to the client, answering the
// client's preconditions (304/412) and Range (206/416) from it.
func (n *Node) respond(x *exchange, meta *cache.Entry, src body, now time.Time) {
	w, r := x.w, x.r
	h := w.Header()
	for k, v := range meta.Header {
		h[k] = v // shared, never modified: changes below replace whole slices
	}
	h["Age"] = []string{httpcache.AgeValue(meta.Age(now))}
	if x.fromPeer {
		h[peer.FetchedField] = []string{meta.FetchedAt().Format(time.RFC3339Nano)}
	}
	if x.status == hitStatus {
		h["Cache-Status"] = hitStatusValue
	} else {
		h["Cache-Status"] = []string{x.status.String()}
	}
	if n.answerPreconditions(x, meta) {
		return
	}
	if err := fillErr(src); err != nil {
		// The fill broke before anything was sent: say so plainly.
		n.abort(x, err)
		return
	}
	size := src.size()
	if meta.Status == http.StatusOK {
		h["Accept-Ranges"] = acceptRangesValue
		var done bool
		if src, size, done = n.answerRange(x, meta, src, size); done {
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
	m, err := src.copy(r.Context(), w, w, 0, -1)
	x.written = m
	if err != nil {
		n.abort(x, err)
	}
}

// answerPreconditions answers the client's conditional request from meta
// (304 or 412) and reports whether it did.
func (n *Node) answerPreconditions(x *exchange, meta *cache.Entry) bool {
	switch httpcache.CheckPreconditions(x.r.Method, x.r.Header, httpcache.Validators{ETag: meta.ETag, LastModified: meta.LastModified}) {
	case http.StatusNotModified:
		if meta.Status == http.StatusOK {
			n.notModified(x, meta)
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
func (n *Node) answerRange(x *exchange, meta *cache.Entry, src body, size int64) (body, int64, bool) {
	rng := x.r.Header.Get("Range")
	if rng != "" && size < 0 { // a fill without Content-Length: ranges need the length
		b, err := src.complete(x.r.Context())
		switch {
		case errors.Is(err, cache.ErrStreamed):
			return src, size, false // not stored, so never whole here: send it all (RFC 9110 §14.2)
		case err != nil:
			n.abort(x, err)
			return src, size, true
		default:
			src, size = entryBody(b), int64(len(b))
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
		n.sendRange(x, src, ranges[0], size)
	case err == nil:
		n.sendMultipart(x, meta, src, ranges, size)
	default:
		return src, size, false // malformed or too many ranges: the whole representation
	}
	return src, size, true
}

func (n *Node) sendRange(x *exchange, src body, rg httpcache.Range, size int64) {
	h := x.w.Header()
	h["Content-Range"] = []string{rg.ContentRange(size)}
	h["Content-Length"] = []string{strconv.FormatInt(rg.Length, 10)}
	x.writeHeader(http.StatusPartialContent)
	if x.r.Method == http.MethodHead {
		return
	}
	m, err := src.copy(x.r.Context(), x.w, x.w, rg.Start, rg.Length)
	x.written = m
	if err != nil {
		n.abort(x, err)
	}
}

// sendMultipart answers several ranges with multipart/byteranges (RFC 9110 §14.6).
func (n *Node) sendMultipart(x *exchange, meta *cache.Entry, src body, ranges []httpcache.Range, size int64) {
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
			_, err = src.copy(x.r.Context(), part, x.w, rg.Start, rg.Length)
		}
		if err != nil {
			x.written = cw.n
			n.abort(x, err)
			return
		}
	}
	_ = mw.Close()
	x.written = cw.n
}

// notModified answers a client's successful conditional GET with 304, keeping
// the fields RFC 9110 §15.4.5 requires.
func (n *Node) notModified(x *exchange, meta *cache.Entry) {
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
func (n *Node) abort(x *exchange, err error) {
	if x.r.Context().Err() != nil {
		return // the client left; nothing to tell it
	}
	x.status.Detail = "aborted"
	n.log.Debug("response aborted", "host", x.r.Host, "path", x.r.URL.Path, "err", err)
	if x.code == 0 {
		code, _ := originErrorStatus(err)
		n.originError(x, code)
		return
	}
	panic(http.ErrAbortHandler)
}

// fillErr is the error of a fill that src streams, if it failed.
func fillErr(src body) error {
	switch b := src.(type) {
	case fillBody:
		return b.f.Err()
	case fileFillBody:
		return b.f.Err()
	}
	return nil
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
