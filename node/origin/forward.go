package origin

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/meshcdn/meshcdn/node/httpcache"
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
