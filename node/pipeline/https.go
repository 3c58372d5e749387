package pipeline

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/meshcdn/meshcdn/node/acmecert"
	"github.com/meshcdn/meshcdn/node/httpcache"
	"github.com/meshcdn/meshcdn/node/site"
)

// httpsPolicy answers a cleartext request of a site that sends its clients
// to HTTPS, and an HTTPS request for another site than the one whose
// certificate the connection was opened with (421 Misdirected Request, RFC
// 9110 §15.5.20: no reaching one site through another's name), and reports
// whether it did.
func (pl *Pipeline) httpsPolicy(x *exchange) bool {
	r, st := x.r, x.site
	if r.TLS != nil {
		if sni := r.TLS.ServerName; sni != "" && sni != r.Host { // Host is normalised: usually equal
			if other, _ := pl.sites.Lookup(sni); other != st {
				x.status = httpcache.Status{Detail: "misdirected"}
				pl.edgeError(x, http.StatusMisdirectedRequest, "meshcdn: this connection was opened for "+strconv.Quote(sni)+", another site: open one for this host")
				return true
			}
		}
		return false
	}
	if x.fromPeer || pl.cfg.HTTPSAddr == nil {
		return false
	}
	switch st.HTTPS {
	case site.HTTPSRedirect:
		host := r.Host
		if _, port, err := net.SplitHostPort(pl.cfg.HTTPSAddr()); err == nil && port != "443" {
			host = net.JoinHostPort(host, port)
		}
		target := "https://" + host + r.URL.RequestURI()
		x.status = httpcache.Status{Detail: "https-redirect"}
		pl.edgeReply(x, http.StatusPermanentRedirect, "meshcdn: this site is served over HTTPS: "+target, http.Header{"Location": {target}})
		return true
	case site.HTTPSOnly:
		x.status = httpcache.Status{Detail: "https-only"}
		pl.edgeError(x, http.StatusForbidden, "meshcdn: this site is served over HTTPS only")
		return true
	}
	return false
}

// hstsWriter adds a site's Strict-Transport-Security to every answer on
// HTTPS, over whatever the origin sent.
type hstsWriter struct {
	http.ResponseWriter
	value string
	wrote bool
}

func (w *hstsWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		w.Header().Set("Strict-Transport-Security", w.value)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *hstsWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *hstsWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serveChallenge answers the CA's HTTP-01 request for an ACME site's token,
// and reports whether the request was one.
func (pl *Pipeline) serveChallenge(x *exchange) bool {
	r := x.r
	token, ok := strings.CutPrefix(r.URL.Path, acmecert.ChallengePrefix)
	if !ok || pl.cfg.Challenge == nil || !x.site.ACME || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	x.status = httpcache.Status{Detail: "acme-challenge"}
	ka, found := "", false
	if acmecert.ValidToken(token) {
		ka, found = pl.cfg.Challenge(r.Context(), x.site, token)
	}
	if !found {
		pl.edgeError(x, http.StatusNotFound, "meshcdn: no ACME order here has this token")
		return true
	}
	pl.edgeReply(x, http.StatusOK, ka, http.Header{"Cache-Control": {"no-store"}})
	return true
}
