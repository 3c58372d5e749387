package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/httpcache"
)

// exchange is one request as the pipeline sees it and the writer it
// answers through, reused across requests: the front hands it back once
// the pipeline is done with it (at the end of a detached rest, for one).
type exchange struct {
	req http.Request
	url url.URL
	hdr http.Header
	w   writer
	// uri and host are the last request's target and Host, kept for the
	// next request to reuse when it sends the same; remote is the address
	// addr formats, for the next request from the same connection.
	uri, host, remote string
	addr              *net.TCPAddr
}

var exchanges = sync.Pool{New: func() any { return &exchange{hdr: http.Header{}} }}

func (x *exchange) release() {
	clear(x.hdr)
	hdr, w := x.hdr, x.w.h
	clear(w)
	*x = exchange{hdr: hdr, uri: x.uri, host: x.host, remote: x.remote, addr: x.addr}
	x.w.h = w
	exchanges.Put(x)
}

// reuse returns b as a string: kept, when it is what kept holds already.
func reuse(kept *string, b []byte) string {
	if string(b) != *kept {
		*kept = string(b)
	}
	return *kept
}

// serve is fasthttp's handler.
func (s *Server) serve(ctx *fasthttp.RequestCtx) {
	if why := faulty(&ctx.Request.Header); why != "" {
		// What request smuggling sends: nothing of it is served or
		// forwarded, and RFC 9112 §6.1 says to close the connection.
		edgeAnswer(&ctx.Response, http.StatusBadRequest, "meshcdn: the request's framing is faulty: "+why, "ambiguous-framing")
		ctx.SetConnectionClose()
		return
	}
	x := exchanges.Get().(*exchange)
	if x.w.h == nil {
		x.w.h = http.Header{}
	}
	if err := x.build(ctx); err != nil {
		x.release()
		edgeAnswer(&ctx.Response, http.StatusBadRequest, "meshcdn: "+err.Error(), "bad-target")
		ctx.SetConnectionClose()
		return
	}
	w := &x.w
	w.ctx, w.head = ctx, ctx.IsHead()
	s.cfg.Handler.ServeHTTP(w, &x.req)
	if w.rest == nil {
		w.render()
		if w.pull == nil {
			x.release()
			return
		}
		// The exchange lasts until fasthttp has sent the body, and closes it.
		ctx.Response.SetBodyStream(&pulledBody{ReadCloser: w.pull, x: x}, int(w.pullSize))
		return
	}
	s.detached(ctx, x)
}

// build fills x.req from the request fasthttp read.
func (x *exchange) build(ctx *fasthttp.RequestCtx) error {
	h := &ctx.Request.Header
	r := &x.req
	r.Method = methodString(h.Method())
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	if !h.IsHTTP11() {
		r.Proto, r.ProtoMinor = "HTTP/1.0", 0
	}
	r.RequestURI = reuse(&x.uri, h.RequestURI())
	if err := x.target(r.RequestURI, r.Method); err != nil {
		return err
	}
	if r.Host == "" {
		r.Host = reuse(&x.host, h.Host())
	}
	r.Header = x.hdr
	for k, v := range h.All() {
		name := httpcache.FieldName(k)
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding":
			continue // in the request's own fields
		case "Connection":
			if h.ConnectionClose() && strings.EqualFold(string(v), "close") {
				continue
			}
		}
		r.Header[name] = append(r.Header[name], string(v))
	}
	r.Close = h.ConnectionClose()
	if c, ok := ctx.Conn().(interface{ remoteAddr() string }); ok {
		r.RemoteAddr = c.remoteAddr() // formatted once per connection
	} else {
		// A TCP connection gives the same address every time.
		switch a := ctx.RemoteAddr().(type) {
		case *net.TCPAddr:
			if a != x.addr {
				x.addr, x.remote = a, a.String()
			}
			r.RemoteAddr = x.remote
		default:
			r.RemoteAddr = a.String()
		}
	}
	if ctx.IsTLS() {
		r.TLS = ctx.TLSConnectionState()
	}
	switch cl := h.ContentLength(); {
	case cl > 0:
		r.ContentLength = int64(cl)
		r.Body = &requestBody{r: ctx.RequestBodyStream(), ctx: ctx}
	case cl == -1:
		r.ContentLength, r.TransferEncoding = -1, []string{"chunked"}
		r.Body = &requestBody{r: ctx.RequestBodyStream(), ctx: ctx}
	default:
		r.ContentLength, r.Body = 0, http.NoBody
	}
	return nil
}

// target sets x.req's URL (and, for an absolute-form target, its Host)
// from the request target.
func (x *exchange) target(uri, method string) error {
	r := &x.req
	if !strings.HasPrefix(uri, "/") {
		if uri == "*" && method == http.MethodOptions {
			x.url = url.URL{Path: "*"}
			r.URL = &x.url
			return nil
		}
		u, err := url.ParseRequestURI(uri)
		if err != nil || u.Host == "" {
			return fmt.Errorf("bad request target %q", truncate(uri, 100))
		}
		r.URL, r.Host = u, u.Host
		return nil
	}
	path, query, _ := strings.Cut(uri, "?")
	x.url = url.URL{Path: path, RawQuery: query}
	if strings.IndexByte(path, '%') >= 0 {
		p, err := url.PathUnescape(path)
		if err != nil {
			return fmt.Errorf("bad request path %q", truncate(path, 100))
		}
		x.url.Path, x.url.RawPath = p, path
	}
	r.URL = &x.url
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// methodString returns the method's name without allocating for the
// common ones.
func methodString(m []byte) string {
	switch string(m) {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodHead:
		return http.MethodHead
	case http.MethodPost:
		return http.MethodPost
	case http.MethodPut:
		return http.MethodPut
	case http.MethodDelete:
		return http.MethodDelete
	case http.MethodOptions:
		return http.MethodOptions
	case http.MethodPatch:
		return http.MethodPatch
	}
	return string(m)
}

// writer is the http.ResponseWriter of one request. Until the pipeline
// detaches, everything it writes is kept in fasthttp's response (the
// answer from memory); a detached rest writes through stream.
type writer struct {
	ctx   *fasthttp.RequestCtx
	h     http.Header
	code  int
	head  bool // a HEAD request: the body is not sent
	rest  func(http.ResponseWriter)
	wrote bool
	// shared is a stored body given to WriteShared, sent as it is unless
	// more is written after it.
	shared []byte
	// pull is a body given to Pull, which fasthttp reads once the handler
	// returned: pullSize bytes, or chunks as they come for -1.
	pull     io.ReadCloser
	pullSize int64
	// forwarded: Forward set fasthttp's response header itself.
	forwarded bool
	// stored is the entry given to WriteStored, whose rendered fields and
	// storedFields make the response's header.
	stored       *cache.Entry
	storedFields cache.ResponseFields
}

func (w *writer) Header() http.Header { return w.h }

func (w *writer) WriteHeader(code int) {
	if w.wrote || code < 100 {
		return
	}
	if code < 200 {
		return // interim answers (100 Continue) are fasthttp's to send
	}
	w.code, w.wrote = code, true
}

func (w *writer) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.head {
		return len(p), nil
	}
	if err := w.settle(); err != nil {
		return 0, err
	}
	return w.ctx.Write(p)
}

// settle copies a body kept to be sent as it is (WriteShared, WriteRegion)
// into fasthttp's response, before more is written after it.
func (w *writer) settle() error {
	if w.shared != nil {
		_, _ = w.ctx.Write(w.shared)
		w.shared = nil
	}
	if rb, ok := w.pull.(*regionBody); ok {
		w.pull, w.pullSize = nil, 0
		w.ctx.Response.ImmediateHeaderFlush = false
		if _, err := rb.r.WriteTo(w.ctx); err != nil {
			return err
		}
	}
	return nil
}

// WriteShared is cache.SharedWriter's: a stored body is sent from where it
// is stored, without a copy, when it is all the body.
func (w *writer) WriteShared(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.head {
		return len(p), nil
	}
	if w.shared == nil && w.pull == nil && len(w.ctx.Response.Body()) == 0 {
		w.shared = p
		return len(p), nil
	}
	return w.Write(p)
}

// WriteRegion is cache.RegionWriter's: a stored body kept off the heap
// is sent once the handler has returned, when it is all the body, from
// its memory file (see regionBody).
func (w *writer) WriteRegion(r *cache.Region) (int64, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.head {
		return r.Len(), nil
	}
	if w.shared == nil && w.pull == nil && len(w.ctx.Response.Body()) == 0 {
		n := r.Len()
		conn := w.ctx.Conn()
		w.pull, w.pullSize = &regionBody{r: r, conn: conn}, n
		if _, ok := conn.(*net.TCPConn); ok {
			// The header leaves first, alone, so that the body goes
			// from its file to the socket (sendRegion).
			w.ctx.Response.ImmediateHeaderFlush = true
		}
		return n, nil
	}
	return r.WriteTo(w)
}

// regionBody is a body off the heap as fasthttp sends it: to a TCP
// connection with sendfile, to any other (TLS) through fasthttp's writer.
type regionBody struct {
	r    *cache.Region
	conn net.Conn
}

func (b *regionBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *regionBody) Close() error               { return nil }

// SupportsBodyWriteTo and WriteTo are fasthttp's BodyWriterTo: fasthttp
// flushed the header (ImmediateHeaderFlush) and hands over its writer.
func (b *regionBody) SupportsBodyWriteTo() bool { return true }

func (b *regionBody) WriteTo(w io.Writer) (int64, error) { return sendRegion(b.r, b.conn, w) }

// sendRegion sends r to conn with sendfile when conn is a TCP
// connection, else through w.
func sendRegion(r *cache.Region, conn net.Conn, w io.Writer) (int64, error) {
	if tc, ok := conn.(*net.TCPConn); ok {
		rc, err := tc.SyscallConn()
		if err != nil {
			return 0, err
		}
		n, err := r.SendTo(rc)
		sentFromFiles.Add(n)
		return n, err
	}
	return r.WriteTo(w)
}

// sentFromFiles counts the bytes sent with sendfile (for tests).
var sentFromFiles atomic.Int64

// Pull is pipeline.Puller's: fasthttp reads body once the handler has
// returned, and closes it.
func (w *writer) Pull(body io.ReadCloser, size int64) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.head {
		_ = body.Close()
		return
	}
	w.pull, w.pullSize = body, size
}

// pulledBody is a pulled body as fasthttp reads it: closing it, once the
// body is sent or the client is gone, releases the exchange.
type pulledBody struct {
	io.ReadCloser
	x *exchange
}

// SupportsBodyWriteTo and WriteTo pass fasthttp's BodyWriterTo through
// to the body, when it has one.
func (b *pulledBody) SupportsBodyWriteTo() bool {
	bw, ok := b.ReadCloser.(fasthttp.BodyWriterTo)
	return ok && bw.SupportsBodyWriteTo()
}

func (b *pulledBody) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := b.ReadCloser.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{b.ReadCloser})
}

func (b *pulledBody) Close() error {
	if b.x == nil {
		return nil
	}
	err := b.ReadCloser.Close()
	b.x.release()
	b.x = nil
	return err
}

// Detach is pipeline.Detacher's: rest runs once the handler has returned.
func (w *writer) Detach(rest func(http.ResponseWriter)) { w.rest = rest }

// render copies the status and header fields into fasthttp's response.
func (w *writer) render() {
	if !w.wrote {
		w.code, w.wrote = http.StatusOK, true
	}
	switch {
	case w.forwarded:
		return
	case w.stored != nil:
		w.renderStored()
	default:
		w.ctx.Response.SetStatusCode(w.code)
		copyFields(&w.ctx.Response.Header, w.h, w.head)
	}
	if w.shared != nil {
		w.ctx.Response.SetBodyRaw(w.shared)
	}
}

// copyFields adds h's fields to rh. A HEAD answer keeps the
// Content-Length of the body it stands for.
func copyFields(rh *fasthttp.ResponseHeader, h http.Header, head bool) {
	for k, vs := range h {
		switch k {
		case "Content-Length":
			if head && len(vs) == 1 {
				rh.Set(k, vs[0])
			}
			continue // fasthttp frames the body itself
		case "Connection":
			for _, v := range vs {
				if strings.EqualFold(v, "close") {
					rh.SetConnectionClose()
				} else {
					rh.Add(k, v)
				}
			}
			continue
		case "Transfer-Encoding":
			continue
		}
		for _, v := range vs {
			rh.Add(k, v)
		}
	}
}

// Hijack is not offered until the rest is detached (see stream).
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, http.ErrNotSupported
}

// requestBody is a request body as fasthttp streams it, its errors told
// as net/http's are: a read past the connection's deadline wraps
// os.ErrDeadlineExceeded. Closing it before its end stops a read in
// progress and any later one (fasthttp then closes the connection, whose
// next bytes are the rest of this body): whoever reads it after the
// response is done, say an origin request's sender, cannot read into the
// next request.
type requestBody struct {
	r   io.Reader
	ctx *fasthttp.RequestCtx
	mu  sync.Mutex
	eof bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
	case err == nil || errors.Is(err, os.ErrDeadlineExceeded):
	case errors.Is(err, fasthttp.ErrTimeout) || errors.As(err, &ne) && ne.Timeout():
		err = fmt.Errorf("%w (%w)", os.ErrDeadlineExceeded, err)
	}
	return n, err
}

func (b *requestBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.eof {
		_ = b.ctx.SetReadDeadline(longAgo)
	}
	return nil
}

// longAgo is a deadline in the past: set on a connection, it ends the
// reads in progress at once.
var longAgo = time.Unix(1, 0)
