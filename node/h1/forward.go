package h1

import (
	"io"
	"net/http"

	"github.com/valyala/fasthttp"

	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/origin"
)

// Forward is pipeline.Forwarder's: the client's request, as fasthttp read
// it, goes to the origin, and the origin's header, as fasthttp read it,
// becomes the client's, each edited in place. Fields the handler set on
// Header() before (Alt-Svc over HTTPS) replace the origin's of the name.
func (w *writer) Forward(p *origin.Pool, r *http.Request, drop []string, edit func(int, httpcache.Fields) error) (int, io.ReadCloser, int64, error) {
	resp, err := p.ForwardFast(&w.ctx.Request, r, drop)
	if err != nil {
		return 0, nil, 0, err
	}
	h := &w.ctx.Response.Header
	resp.Header().CopyTo(h)
	f := httpcache.ByteFields[*fasthttp.ResponseHeader]{H: h}
	// This server frames the body and keeps the client's connection by
	// its own rules: nothing of the origin's connection goes on.
	httpcache.DropHopByHop(f)
	h.ResetConnectionClose()
	for k, vs := range w.h {
		f.Del(k)
		for _, v := range vs {
			f.Add(k, v)
		}
	}
	status := h.StatusCode()
	if err := edit(status, f); err != nil {
		h.Reset()
		_ = resp.Close()
		return 0, nil, 0, err
	}
	w.code, w.wrote, w.forwarded = status, true, true
	return status, resp, resp.Size(), nil
}
