package h1

import (
	"io"
	"net"
	"net/http"

	"github.com/valyala/fasthttp"

	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/origin"
)

// Forward is pipeline.Forwarder's: the client's request, as fasthttp read
// it, goes to the origin, and the origin's header, as fasthttp read it,
// becomes the client's, each edited in place.
func (w *writer) Forward(p *origin.Pool, r *http.Request, drop []string, edit func(int, httpcache.Fields) error) (int, io.ReadCloser, int64, error) {
	client := r.RemoteAddr
	if host, _, err := net.SplitHostPort(client); err == nil {
		client = host
	}
	resp, err := p.ForwardFast(r.Context(), &w.ctx.Request, r.URL.RequestURI(), r.Host, client, r.TLS != nil, drop)
	if err != nil {
		return 0, nil, 0, err
	}
	h := &w.ctx.Response.Header
	resp.Header().CopyTo(h)
	dropHopByHop(h)
	status := h.StatusCode()
	if err := edit(status, fields{h}); err != nil {
		h.Reset()
		_ = resp.Close()
		return 0, nil, 0, err
	}
	w.code, w.wrote, w.forwarded = status, true, true
	return status, resp, resp.Size(), nil
}

// dropHopByHop removes the fields of the origin's connection from a
// response header: those its Connection field names, and the others of
// RFC 9110 §7.6.1; this server frames the body and keeps the client's
// connection by its own rules.
func dropHopByHop(h *fasthttp.ResponseHeader) {
	for _, f := range httpcache.ConnectionOptions(h.PeekAll("Connection")) {
		h.Del(f)
	}
	for _, f := range httpcache.HopByHop {
		h.Del(f)
	}
	h.ResetConnectionClose()
}

// fields is a fasthttp response header as httpcache.Fields.
type fields struct{ h *fasthttp.ResponseHeader }

func (f fields) Has(name string) bool   { return f.h.Peek(name) != nil }
func (f fields) Get(name string) string { return string(f.h.Peek(name)) }
func (f fields) Values(name string) []string {
	all := f.h.PeekAll(name)
	if len(all) == 0 {
		return nil
	}
	vs := make([]string, len(all))
	for i, v := range all {
		vs[i] = string(v)
	}
	return vs
}
func (f fields) Set(name, value string) { f.h.Set(name, value) }
func (f fields) Add(name, value string) { f.h.Add(name, value) }
func (f fields) Del(name string)        { f.h.Del(name) }
