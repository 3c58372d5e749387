package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/valyala/fasthttp"
)

// Forward sends r, a request that bypasses the cache, to one of the pool's
// servers as a reverse proxy does (RFC 9110 §7.6): without the client's
// hop-by-hop fields, with the client's address appended to
// X-Forwarded-For, and X-Forwarded-Host and X-Forwarded-Proto set (a
// client's own are dropped, as is Forwarded). A request to upgrade the
// connection (a WebSocket) keeps its Upgrade and asks for it again.
//
// The response's hop-by-hop fields are removed, except on a 101 (Switching
// Protocols), which must name the protocol asked for: its body is then the
// origin connection both ways (an io.ReadWriteCloser). The body is the
// caller's to close.
func (p *Pool) Forward(r *http.Request) (*http.Response, error) {
	hdr := forwardHeader(r)
	resp, err := p.roundTrip(r, hdr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		want, got := upgradeType(hdr), upgradeType(resp.Header)
		if want == "" || !strings.EqualFold(want, got) {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("origin switched to protocol %q when %q was asked", got, want)
		}
		return resp, nil
	}
	httpcache.RemoveHopByHop(resp.Header)
	return resp, nil
}

// forwardHeader is the header of r as the origin gets it.
func forwardHeader(r *http.Request) http.Header {
	h := r.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	up := upgradeType(r.Header)
	trailers := false
	for _, v := range r.Header["Te"] {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "trailers") {
				trailers = true
			}
		}
	}
	httpcache.RemoveHopByHop(h)
	if up != "" {
		h["Connection"], h["Upgrade"] = []string{"Upgrade"}, []string{up}
	}
	if trailers {
		h["Te"] = []string{"trailers"} // the client reads trailers: the origin may send them
	}
	delete(h, "Forwarded")
	client := r.RemoteAddr
	if host, _, err := net.SplitHostPort(client); err == nil {
		client = host
	}
	prior, ok := r.Header["X-Forwarded-For"]
	switch {
	case ok && prior == nil:
		delete(h, "X-Forwarded-For") // the caller asked for none
	case len(prior) > 0:
		h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + client}
	default:
		h["X-Forwarded-For"] = []string{client}
	}
	h["X-Forwarded-Host"] = []string{r.Host}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	h["X-Forwarded-Proto"] = []string{proto}
	return h
}

// upgradeType is the protocol h asks to upgrade to (RFC 9110 §7.8), or "".
func upgradeType(h http.Header) string {
	upgrade := false
	for _, v := range h["Connection"] {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				upgrade = true
			}
		}
	}
	if !upgrade {
		return ""
	}
	return h.Get("Upgrade")
}

// CopyBody writes body to w as it is read, through the shared copy
// buffers, flushing w after every read when flush is set (a body of
// unknown length, an event stream), so it reaches the client as it comes.
func CopyBody(w http.ResponseWriter, body io.Reader, flush bool) (int64, error) {
	buf := copyBuffers.Get()
	defer copyBuffers.Put(buf)
	rc := http.NewResponseController(w)
	var written int64
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			written += int64(m)
			if werr == nil && flush {
				werr = rc.Flush()
			}
			if werr != nil {
				return written, werr
			}
		}
		if errors.Is(rerr, io.EOF) {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
	}
}

// Fast reports whether the pool can forward in fasthttp's form (see
// ForwardFast): it sends through Transports.
func (p *Pool) Fast() bool {
	_, ok := p.rt.(*Transports)
	return ok
}

// FastResponse is an origin's answer to ForwardFast: its header as fasthttp
// read it, valid until Close, and its body, read from the connection as it
// arrives. Closing it frees the connection and the request's slot.
type FastResponse struct {
	x       *exchangeState
	body    *streamBody // nil without a body (HEAD, 204, 304)
	release func()
	closed  bool
}

// Header is the response's header: the caller may edit it.
func (r *FastResponse) Header() *fasthttp.ResponseHeader { return &r.x.resp.Header }

// Size is the body's length, -1 when unknown (it streams until its end).
func (r *FastResponse) Size() int64 {
	if r.body == nil {
		return 0
	}
	if n := r.x.resp.Header.ContentLength(); n >= 0 {
		return int64(n)
	}
	return -1
}

// Read reads the body.
func (r *FastResponse) Read(p []byte) (int, error) {
	if r.body == nil {
		return 0, io.EOF
	}
	return r.body.Read(p)
}

// Close ends the exchange: a body read to its end leaves the connection to
// its pool, one cut short closes it.
func (r *FastResponse) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.body != nil {
		_ = r.body.Close()
	} else {
		r.x.release(true)
	}
	r.release()
	return nil
}

// ForwardFast is Forward for a request without a body in fasthttp's form
// (the HTTP/1.1 front's own), whose fields go to the origin without a copy
// into net/http's: freq is edited in place into what the origin gets, as
// Forward edits its copy. uri (in origin form) and host are the request's
// target and Host as the edge sees them, client the client's address;
// https tells that it came over TLS; drop names fields not to send on (a
// site's re-routing fields). The pool must be Fast.
func (p *Pool) ForwardFast(ctx context.Context, freq *fasthttp.Request, uri, host, client string, https bool, drop []string) (*FastResponse, error) {
	ts, ok := p.rt.(*Transports)
	if !ok {
		return nil, errors.New("origin: the pool does not send through Transports")
	}
	forwardFields(&freq.Header, host, client, https, drop)
	var x *exchangeState
	release, err := p.try(ctx, true, func(t *Target) (int, error) {
		freq.Header.SetRequestURI(t.URL.EscapedPath() + uri)
		th := p.hostFor(t, host)
		freq.Header.SetHost(th)
		name := ""
		if t.URL.Scheme == "https" {
			name = serverName(th)
		}
		hc, owned, err := ts.hostOf(t.URL, name)
		if err != nil {
			return 0, err
		}
		if x, err = ts.send(ctx, hc, owned, freq, nil, 0); err != nil {
			return 0, err
		}
		return x.resp.StatusCode(), nil
	}, func() { DrainClose(x.stream()) })
	if err != nil {
		return nil, err
	}
	r := &FastResponse{x: x, release: release}
	if x.resp.BodyStream() != nil {
		r.body = &streamBody{x: x}
	}
	return r, nil
}

// stream is the response's body as a ReadCloser whose Close ends the
// exchange.
func (x *exchangeState) stream() io.ReadCloser {
	if x.resp.BodyStream() == nil {
		x.release(true)
		return http.NoBody
	}
	return &streamBody{x: x}
}

// forwardFields edits a request header in fasthttp's form as
// forwardHeader does a copy in net/http's.
func forwardFields(h *fasthttp.RequestHeader, host, client string, https bool, drop []string) {
	trailers := false
	for _, v := range h.PeekAll("Te") {
		for t := range strings.SplitSeq(string(v), ",") {
			if strings.EqualFold(strings.TrimSpace(t), "trailers") {
				trailers = true
			}
		}
	}
	for _, f := range httpcache.ConnectionOptions(h.PeekAll("Connection")) {
		h.Del(f)
	}
	for _, f := range httpcache.HopByHop {
		h.Del(f)
	}
	h.ResetConnectionClose()
	h.SetProtocol("HTTP/1.1")
	if trailers {
		h.Set("Te", "trailers")
	}
	for _, f := range drop {
		h.Del(f)
	}
	h.Del("Forwarded")
	if prior := h.PeekAll("X-Forwarded-For"); len(prior) > 0 {
		var b strings.Builder
		for _, v := range prior {
			b.Write(v)
			b.WriteString(", ")
		}
		b.WriteString(client)
		h.Set("X-Forwarded-For", b.String())
	} else {
		h.Set("X-Forwarded-For", client)
	}
	h.Set("X-Forwarded-Host", host)
	if https {
		h.Set("X-Forwarded-Proto", "https")
	} else {
		h.Set("X-Forwarded-Proto", "http")
	}
}
