package h1

import (
	"net/http"
	"slices"

	"github.com/meshcdn/meshcdn/node/cache"
	"github.com/meshcdn/meshcdn/node/httpcache"
)

// storedHeader is a stored response's header fields as this front sends
// them, rendered once per entry (cache.Entry.Rendered): in name order,
// without the fields each response sets itself and those fasthttp manages
// (Date and the framing).
type storedHeader struct {
	buf  []byte  // each field's name, then its value
	ends []int32 // where each name and each value ends in buf
}

// renderStored is cache.Entry.Rendered's render for this front.
func renderStored(e *cache.Entry) any {
	targeted := httpcache.UsedTargeted(httpcache.HeaderFields(e.Header))
	names := make([]string, 0, len(e.Header))
	size := 0
	for k, vs := range e.Header {
		switch k {
		case "Age", "Cache-Status", "Date", "Content-Length", "Transfer-Encoding", "Connection", targeted:
			continue
		case "Accept-Ranges":
			if e.Status == http.StatusOK {
				continue // every 200 says bytes
			}
		}
		names = append(names, k)
		for _, v := range vs {
			size += len(k) + len(v)
		}
	}
	slices.Sort(names)
	sh := &storedHeader{buf: make([]byte, 0, size)}
	for _, k := range names {
		for _, v := range e.Header[k] {
			sh.buf = append(sh.buf, k...)
			sh.ends = append(sh.ends, int32(len(sh.buf)))
			sh.buf = append(sh.buf, v...)
			sh.ends = append(sh.ends, int32(len(sh.buf)))
		}
	}
	return sh
}

// WriteStored is pipeline.StoredWriter's: render sends meta's rendered
// fields and f.
func (w *writer) WriteStored(meta *cache.Entry, f cache.ResponseFields) {
	if w.wrote {
		return
	}
	w.code, w.wrote = meta.Status, true
	w.stored, w.storedFields = meta, f
}

// renderStored sets fasthttp's response header from the stored response
// given to WriteStored, and any field set in Header() besides.
func (w *writer) renderStored() {
	resp := &w.ctx.Response
	resp.SetStatusCode(w.code)
	rh := &resp.Header
	sh := w.stored.Rendered(renderStored).(*storedHeader)
	f := &w.storedFields
	rh.DisableNormalizing() // every name here is canonical already
	start := int32(0)
	for i := 0; i < len(sh.ends); i += 2 {
		k, v := sh.ends[i], sh.ends[i+1]
		rh.AddBytesKV(sh.buf[start:k], sh.buf[k:v])
		start = v
	}
	rh.Add("Age", f.Age)
	rh.Add("Cache-Status", f.CacheStatus)
	if f.AcceptRanges {
		rh.Add("Accept-Ranges", "bytes")
	}
	if f.VaryAcceptEncoding {
		rh.Add("Vary", "Accept-Encoding")
	}
	rh.EnableNormalizing()
	if w.head && f.Size >= 0 {
		rh.SetContentLength(int(f.Size))
	}
	copyFields(rh, w.h, w.head)
}
