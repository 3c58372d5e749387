package pipeline

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/reqguard"
)

// Puller is a ResponseWriter of a front that sends a body by reading it
// (fasthttp's, which reads a body after its handler returns). Given one, the
// pipeline answers a pass-through without a request body on the handler's
// goroutine and hands the origin's body over instead of copying it. Pull
// must be called at most once, after WriteHeader; the front reads body, at
// most size bytes (-1: unknown, sent as it comes), and closes it once it is
// sent or the client is gone.
type Puller interface {
	Pull(body io.ReadCloser, size int64)
}

// Forwarder is a front that forwards a pass-through in its own protocol's
// form (fasthttp's, for HTTP/1.1): the request's fields go to the origin,
// and the origin's to the client, with no copy into net/http's. Forward
// sends the request, which has no body, through pool as
// origin.Pool.ForwardFast does, r being the request as the pipeline sees
// it (its target and Host normalised) and drop the fields not to send on;
// once the origin answered, edit changes the answer's fields (its error
// sends nothing of the answer: the request fails with it), and the
// front sets the client's status and fields from them. The body is the
// caller's to Pull: size bytes, -1 when unknown.
type Forwarder interface {
	Forward(pool *origin.Pool, r *http.Request, drop []string, edit func(status int, f httpcache.Fields) error) (status int, body io.ReadCloser, size int64, err error)
}

// bypass proxies the request to the origin without the cache. Unsafe methods
// (invalidate) drop what is stored for the target URI and the Location and
// Content-Location of a successful response (RFC 9111 §4.4). It reports
// whether x is another's to finish (see later), as serve does: only a
// front's own writer may hand x over, never the writer of a detached rest.
func (pl *Pipeline) bypass(x *exchange, cs httpcache.Status, invalidate bool) bool {
	if !pl.handshake(x) {
		return false
	}
	if _, ok := x.front.(Puller); !ok || hasBody(x.r) || x.r.Header.Get("Upgrade") != "" {
		// A request body or an upgraded connection streams both ways while
		// the response does: that takes a writer that streams.
		return pl.later(x, func(x *exchange) { pl.forward(x, cs, invalidate) })
	}
	return pl.forward(x, cs, invalidate)
}

// forward sends x's request to the origin and answers with the origin's
// response. It reports whether x is another's to finish: a front's Puller's,
// which sends the body after the handler returns, or its Detacher's, for a
// response that must be written as it comes.
func (pl *Pipeline) forward(x *exchange, cs httpcache.Status, invalidate bool) bool {
	x.status = cs
	x.stats.originPass.Inc()
	x.stats.counts.Origin.Add(1)
	r := x.r
	pool := pl.cfg.Pool(x.site, r.TLS != nil)
	if fw, ok := x.front.(Forwarder); ok && !invalidate && pool.Fast() && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		return pl.forwardFast(x, fw, pool, cs)
	}
	if x.clientAE != nil || x.site.Rerouting(r.Header) {
		// A compressing site's request, passed through after all: the
		// origin may encode for the client as it would have without the
		// edge. Fields that re-route a request inside the origin are
		// dropped, as from a fill's.
		c := new(http.Request)
		*c = *r
		c.Header = r.Header.Clone()
		if x.clientAE != nil {
			c.Header["Accept-Encoding"] = x.clientAE
		}
		x.site.DropRerouting(c.Header)
		r = c
	}
	if invalidate {
		r = r.WithContext(withInvalidation(r.Context(), pl, x.site, r))
	}
	r = reqguard.GuardBody(x.w, r, pl.cfg.BodyTimeout) // the origin connection waits on the client's body: bound it
	resp, err := pool.Forward(r)
	if err == nil {
		if err = pl.modifyBypass(r, resp.StatusCode, httpcache.HeaderFields(resp.Header), cs); err != nil {
			_ = resp.Body.Close()
		}
	}
	if err != nil {
		pl.bypassError(x, r, err)
		return false
	}
	h := x.w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols:
		pl.upgrade(x, resp)
		return false
	case len(resp.Trailer) > 0:
		return pl.later(x, func(x *exchange) { pl.copyResponse(x, resp) })
	}
	p, ok := x.front.(Puller)
	if !ok {
		pl.copyResponse(x, resp)
		return false
	}
	x.writeHeader(resp.StatusCode)
	if resp.Body == http.NoBody {
		_ = resp.Body.Close()
		return false
	}
	return pl.pull(x, p, resp.Body, resp.ContentLength)
}

// forwardFast is forward through the front's own Forwarder: the client's
// request as the front read it goes to the origin, and the origin's answer
// to the client, each edited in place. The front sends the body after the
// handler returns.
func (pl *Pipeline) forwardFast(x *exchange, fw Forwarder, pool *origin.Pool, cs httpcache.Status) bool {
	r := x.r
	var drop []string
	if x.site.Rerouting(r.Header) {
		drop = x.site.DroppedRerouting()
	}
	hsts := ""
	if x.hsts {
		hsts = x.site.HSTS
	}
	status, body, size, err := fw.Forward(pool, r, drop, func(status int, f httpcache.Fields) error {
		if err := pl.modifyBypass(r, status, f, cs); err != nil {
			return err
		}
		if hsts != "" {
			f.Set("Strict-Transport-Security", hsts)
		}
		return nil
	})
	if err != nil {
		pl.bypassError(x, r, err)
		return false
	}
	x.code, x.ttfb = status, time.Since(x.start)
	p, ok := x.front.(Puller)
	if !ok || size == 0 {
		_ = body.Close()
		return false
	}
	return pl.pull(x, p, body, size)
}

// pull hands an origin body of size bytes (-1: unknown) to the front's
// Puller, and x with it: the request's books close when the front closes
// the body. It reports true: x is the front's to finish.
func (pl *Pipeline) pull(x *exchange, p Puller, body io.ReadCloser, size int64) bool {
	p.Pull(&pulled{body: body, pl: pl, x: *x}, size)
	return true
}

// pulled is an origin body the front reads itself, with the request it
// answers: closing it closes the books of that request.
type pulled struct {
	body io.ReadCloser
	pl   *Pipeline
	x    exchange
	once sync.Once
}

func (b *pulled) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.x.written += int64(n)
	return n, err
}

func (b *pulled) Close() error {
	b.once.Do(func() {
		_ = b.body.Close()
		b.pl.end(&b.x)
	})
	return nil
}

// copyResponse writes the origin's response to x as it comes: flushed after
// every read when its length is unknown or it is an event stream, else
// through the front's buffer. A body the origin cuts short resets the
// client's connection (or stream), so it is never taken for whole.
func (pl *Pipeline) copyResponse(x *exchange, resp *http.Response) {
	defer resp.Body.Close()
	h := x.w.Header()
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	x.writeHeader(resp.StatusCode)
	flush := resp.ContentLength < 0 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	n, err := origin.CopyBody(x.w, resp.Body, flush)
	x.written = n
	if err != nil {
		pl.log.Debug("pass-through cut", "host", x.r.Host, "path", x.r.URL.Path, "err", err)
		panic(http.ErrAbortHandler)
	}
	if len(resp.Trailer) > 0 {
		_ = http.NewResponseController(x.w).Flush()
		for k, v := range resp.Trailer {
			h[k] = v
		}
	}
}

// upgrade joins the client's connection to the origin's once the origin
// switched protocols (a WebSocket), until either side closes: the 101 goes
// to the client, then bytes flow both ways as they come.
func (pl *Pipeline) upgrade(x *exchange, resp *http.Response) {
	backend, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		_ = resp.Body.Close()
		pl.bypassError(x, x.r, errors.New("the origin's upgraded connection is not writable"))
		return
	}
	defer backend.Close()
	conn, brw, err := http.NewResponseController(x.w).Hijack()
	if err != nil {
		clear(x.w.Header())
		pl.bypassError(x, x.r, err)
		return
	}
	defer conn.Close()
	x.code, x.ttfb = resp.StatusCode, 0
	resp.Header, resp.Body = x.w.Header(), nil
	if err := resp.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	var wg sync.WaitGroup
	done := make(chan struct{}, 2)
	wg.Go(func() {
		n, _ := io.Copy(conn, backend)
		x.written = n
		done <- struct{}{}
	})
	wg.Go(func() {
		_, _ = io.Copy(backend, brw) // what the client sent after its request, then the connection
		done <- struct{}{}
	})
	<-done // either side's end ends both
	// The copies end before the client's connection is closed: a front
	// may take it back on Close (fasthttp recycles its hijacked
	// connections), and nothing may read it after that.
	_ = conn.SetDeadline(time.Unix(1, 0))
	_ = backend.Close()
	wg.Wait()
}

// modifyBypass runs on every bypassed origin response: status and its
// fields f, which get this cache's Cache-Status entry cs after the
// origin's own (RFC 9211 orders them from the origin's side).
func (pl *Pipeline) modifyBypass(r *http.Request, status int, f httpcache.Fields, cs httpcache.Status) error {
	if err := reqguard.BodyError(r.Context()); err != nil {
		return err // the origin answered a body it did not get whole: the client's error, not this
	}
	httpcache.DropTargetedFields(f)
	if prev := f.Values("Via"); len(prev) == 0 {
		f.Set("Via", via)
	} else {
		f.Set("Via", joinVia(prev))
	}
	if !f.Has("Age") {
		f.Set("Age", "0")
	}
	f.Add("Cache-Status", cs.String())
	if inv, ok := invalidationFrom(r.Context()); ok && status < 400 {
		inv.apply(f)
	}
	return nil
}

// bypassError answers a bypassed request whose origin could not be
// reached, or whose body failed on the client's side.
func (pl *Pipeline) bypassError(x *exchange, r *http.Request, err error) {
	if berr := reqguard.BodyError(r.Context()); berr != nil {
		err = berr // also when the server cancelled the request on the body's read deadline
	}
	if errors.Is(err, reqguard.ErrBodyTimeout) || errors.Is(err, reqguard.ErrBadBody) || errors.Is(err, reqguard.ErrShortBody) {
		// The client's side failed: its body was too slow, malformed or cut
		// short (it left). Not the origin's failure: Debug, no origin error.
		code, msg := http.StatusBadRequest, "meshcdn: malformed request body"
		switch {
		case errors.Is(err, reqguard.ErrBodyTimeout):
			code, msg = http.StatusRequestTimeout, "meshcdn: the request body came too slowly"
		case errors.Is(err, reqguard.ErrShortBody):
			msg = "meshcdn: the request body ended before its length"
		}
		pl.log.Debug("bad request body", "host", r.Host, "path", r.URL.Path, "client", clientIP(r), "err", err)
		var extra http.Header
		if r.ProtoMajor == 1 {
			extra = http.Header{"Connection": {"close"}}
		}
		pl.edgeReply(x, code, msg, extra)
		return
	}
	if errors.Is(err, r.Context().Err()) && r.Context().Err() != nil {
		clientGone()
	}
	x.stats.originError.Inc()
	pl.log.Warn("origin request failed", "host", r.Host, "path", r.URL.Path, "err", err)
	code, _ := originErrorStatus(err)
	pl.originError(x, code)
}

// hasBody reports whether r has a body to send on.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody
}
