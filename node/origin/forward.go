package origin

import (
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
		want, got := upgradeType(httpcache.HeaderFields(hdr)), upgradeType(httpcache.HeaderFields(resp.Header))
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
	forwardFields(httpcache.HeaderFields(h), r.Host, clientAddr(r.RemoteAddr), r.TLS != nil, nil)
	if prior, ok := r.Header["X-Forwarded-For"]; ok && prior == nil {
		delete(h, "X-Forwarded-For") // the caller asked for none (net/http's convention)
	}
	return h
}

// clientAddr is the address of a RemoteAddr, without its port.
func clientAddr(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// forwardFields edits f, a request's header in either form, into what the
// origin gets: without the client's hop-by-hop fields (an upgrade asked
// for, and trailers the client reads, are asked for again), without
// Forwarded and the fields of drop, with client appended to
// X-Forwarded-For and X-Forwarded-Host and X-Forwarded-Proto set to host
// and the scheme.
func forwardFields(f httpcache.Fields, host, client string, https bool, drop []string) {
	up := upgradeType(f)
	trailers := httpcache.HasToken(f.Values("Te"), "trailers")
	httpcache.DropHopByHop(f)
	if up != "" {
		f.Set("Connection", "Upgrade")
		f.Set("Upgrade", up)
	}
	if trailers {
		f.Set("Te", "trailers") // the client reads trailers: the origin may send them
	}
	for _, name := range drop {
		f.Del(name)
	}
	f.Del("Forwarded")
	if prior := f.Values("X-Forwarded-For"); len(prior) > 0 {
		f.Set("X-Forwarded-For", strings.Join(prior, ", ")+", "+client)
	} else {
		f.Set("X-Forwarded-For", client)
	}
	f.Set("X-Forwarded-Host", host)
	if https {
		f.Set("X-Forwarded-Proto", "https")
	} else {
		f.Set("X-Forwarded-Proto", "http")
	}
}

// upgradeType is the protocol f asks to upgrade to (RFC 9110 §7.8), or "".
func upgradeType(f httpcache.Fields) string {
	if !httpcache.HasToken(f.Values("Connection"), "upgrade") {
		return ""
	}
	return f.Get("Upgrade")
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
// ForwardFast): it sends through Transports, and its site has no bandwidth
// budget.
func (p *Pool) Fast() bool {
	if p.cfg.Budget != nil && p.cfg.Budget.Limits().Bandwidth > 0 {
		return false // bodies are read through the budget's bandwidth
	}
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
// Forward edits its copy. r is the same request as the edge sees it: its
// target, Host, client address and TLS are what is sent and told; drop
// names fields not to send on (a site's re-routing fields). The pool must
// be Fast.
func (p *Pool) ForwardFast(freq *fasthttp.Request, r *http.Request, drop []string) (*FastResponse, error) {
	ts, ok := p.rt.(*Transports)
	if !ok {
		return nil, errors.New("origin: the pool does not send through Transports")
	}
	ctx, uri, host := r.Context(), r.URL.RequestURI(), r.Host
	forwardFields(httpcache.ByteFields[*fasthttp.RequestHeader]{H: &freq.Header}, host, clientAddr(r.RemoteAddr), r.TLS != nil, drop)
	freq.Header.ResetConnectionClose() // the client's connection's, not the origin's
	freq.Header.SetProtocol("HTTP/1.1")
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
	x.fast = FastResponse{x: x, release: release}
	if x.resp.BodyStream() != nil {
		x.fastBody = streamBody{x: x}
		x.fast.body = &x.fastBody
	}
	return &x.fast, nil
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
