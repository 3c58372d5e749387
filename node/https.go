package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/node/edgetls"
	"github.com/meshcdn/meshcdn/node/h1"
	"github.com/meshcdn/meshcdn/node/h3"
	"github.com/meshcdn/meshcdn/node/site"
)

// certCheck is how often the HTTPS listener's certificate files are looked
// at for changes (SIGHUP reloads at once); fastCertCheck with the fast
// gossip profile.
const (
	certCheck     = 10 * time.Second
	fastCertCheck = 100 * time.Millisecond
)

// handshakeTimeout bounds a client's TLS handshake.
const handshakeTimeout = 10 * time.Second

// httpsFront is the HTTPS listener: the certificates, the TLS settings, and
// the servers of its HTTP/1.1 and HTTP/2 connections.
type httpsFront struct {
	certs  *edgetls.Store
	cfg    *tls.Config
	secret []byte // the session ticket keys' secret
	split  *edgetls.Split
	h1     *h1.Server
	h2     *http.Server
	h3     *h3.Server // nil without HTTP/3

	handshakes *prometheus.CounterVec
	expiry     *prometheus.GaugeVec
	reloadErrs prometheus.Counter
	failing    prometheus.Gauge
}

// newHTTPS loads the certificates of the HTTPS listener, nil without one.
func (n *Node) newHTTPS(sites []*site.Site) (*httpsFront, error) {
	if n.cfg.HTTPSAddr == "" {
		return nil, nil
	}
	ids := map[*site.Site]string{}
	var sources []edgetls.Source
	if n.cfg.TLSCertFile != "" {
		sources = append(sources, edgetls.Source{Label: "tls_cert_file",
			Pairs: []edgetls.Pair{{CertFile: n.cfg.TLSCertFile, KeyFile: n.cfg.TLSKeyFile}}})
	}
	for i, s := range sites {
		ids[s] = strconv.Itoa(i)
		src := edgetls.Source{Site: ids[s], Label: fmt.Sprintf("sites[%d] (%s).certificates", i, s.Name)}
		for _, c := range s.Certificates {
			src.Pairs = append(src.Pairs, edgetls.Pair{CertFile: c.CertFile, KeyFile: c.KeyFile})
		}
		sources = append(sources, src)
	}
	siteOf := func(host string) string {
		if s, ok := n.sites.Lookup(host); ok {
			return ids[s]
		}
		return ""
	}
	certs, err := edgetls.New(sources, siteOf)
	if err != nil {
		return nil, err
	}
	h := &httpsFront{certs: certs}
	h.cfg = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// TLS 1.2: forward-secret AEAD suites only (TLS 1.3's are fixed).
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos:       []string{"h2", "http/1.1"},
		GetCertificate:   certs.GetCertificate,
		VerifyConnection: h.counted,
	}
	// Every member derives the same session ticket keys from the gossip key,
	// so a client sent to another node resumes its session there.
	if m := n.cfg.Mesh; m != nil && len(m.GossipKeys) > 0 {
		h.secret = m.GossipKeys[0]
	} else {
		h.secret = make([]byte, 32)
		_, _ = rand.Read(h.secret)
	}
	if n.cfg.HTTP3 {
		h.h3 = h3.New(h3.Config{Handler: n, TLS: h.cfg, ZeroRTT: n.cfg.HTTP3ZeroRTT, AdvertisedPort: n.cfg.HTTP3AdvertisedPort,
			IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes, Logger: n.log})
	}
	h.register(n.metrics.reg)
	h.setExpiry()
	return h, nil
}

// register adds the HTTPS listener's metrics to reg.
func (h *httpsFront) register(reg *prometheus.Registry) {
	h.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcdn_tls_handshakes_total", Help: "Completed client TLS handshakes, by TLS version and whether the session was resumed.",
	}, []string{"version", "resumed"})
	h.expiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshcdn_tls_certificate_expiry_seconds", Help: "When each certificate of the HTTPS listener expires (Unix time), by the names it covers.",
	}, []string{"site", "names"})
	h.reloadErrs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshcdn_tls_reload_errors_total", Help: "Certificate reloads that found a file that does not load (the certificate in use stays).",
	})
	h.failing = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meshcdn_tls_reload_failing", Help: "1 while the last reload of the HTTPS certificates left a broken file unread.",
	})
	reg.MustRegister(h.handshakes, h.expiry, h.reloadErrs, h.failing)
}

// counted is tls.Config.VerifyConnection: it counts the handshake.
func (h *httpsFront) counted(cs tls.ConnectionState) error {
	h.handshakes.WithLabelValues(tls.VersionName(cs.Version), strconv.FormatBool(cs.DidResume)).Inc()
	return nil
}

// setExpiry publishes the certificates' expiry times.
func (h *httpsFront) setExpiry() {
	h.expiry.Reset()
	for _, c := range h.certs.Certs() {
		site := c.Site
		if site == "" {
			site = "default"
		}
		h.expiry.WithLabelValues(site, fmt.Sprint(c.Names)).Set(float64(c.Expiry.Unix()))
	}
}

// bindHTTPS binds the HTTPS listener; serveHTTPS serves it.
func (n *Node) bindHTTPS(ctx context.Context) error {
	h := n.https
	if h == nil {
		return nil
	}
	ln, err := listen(ctx, n.cfg.HTTPSAddr, "https")
	if err != nil {
		return err
	}
	h.split = edgetls.NewSplit(n.conns.Listen(ln), h.cfg, func(c net.Conn) net.Conn { return h1.NewTLSConn(c.(*tls.Conn)) }, handshakeTimeout)
	var handler http.Handler = n
	if h.h3 != nil {
		// HTTP/3 on the UDP port of the HTTPS listener's TCP one.
		if err := h.h3.Listen(h.split.Addr().String()); err != nil {
			_ = h.split.Close()
			return err
		}
		handler = altSvc(n, h.h3.AltSvc())
	}
	h.h1 = n.newH1With(handler)
	h.h2 = n.newHTTPServer()
	h.h2.Handler = handler
	h.h2.Protocols = new(http.Protocols)
	h.h2.Protocols.SetHTTP2(true)
	return nil
}

// altSvc announces HTTP/3 on every answer h gives over HTTPS (RFC 7838).
func altSvc(h http.Handler, value string) http.Handler {
	field := []string{value} // shared by every answer: Add would copy it first (cap 1)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Alt-Svc"] = field
		h.ServeHTTP(w, r)
	})
}

// serveHTTPS starts serving the bound HTTPS listener, reloading its
// certificates and rotating its session ticket keys.
func (n *Node) serveHTTPS() {
	h := n.https
	if h == nil {
		return
	}
	n.wg.Go(h.split.Run)
	n.wg.Go(func() { n.serveH1(h.h1, h.split.H1(), "https") })
	n.wg.Go(func() { n.serve(h.h2, h.split.H2(), "https") })
	n.wg.Go(func() { edgetls.KeepTicketKeys(n.ctx, h.cfg, h.secret) })
	if h.h3 != nil {
		n.wg.Go(func() {
			if err := h.h3.Serve(); err != nil {
				n.log.Error("listener failed", "listener", "http3", "err", err)
			}
		})
		n.wg.Go(func() { edgetls.KeepTicketKeys(n.ctx, h.h3.TLSConfig(), h.secret) })
	}
	n.wg.Go(n.watchCerts)
	if n.acme != nil {
		n.wg.Go(n.runACME)
	}
}

// watchCerts reloads the HTTPS certificates when one of their files
// changes, until the node stops.
func (n *Node) watchCerts() {
	every := certCheck
	if n.cfg.Mesh != nil && n.cfg.Mesh.Fast {
		every = fastCertCheck
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if n.https.certs.Stale() {
			_ = n.reloadCerts()
		}
	}
}

// reloadCerts reads the HTTPS certificates again; a file that does not
// load leaves its certificate in use, and is logged and counted.
func (n *Node) reloadCerts() error {
	h := n.https
	err := h.certs.Reload()
	h.setExpiry()
	if err != nil {
		h.reloadErrs.Inc()
		h.failing.Set(1)
		n.log.Error("HTTPS certificates changed but do not all load; the ones in use stay", "err", err)
		return err
	}
	h.failing.Set(0)
	n.log.Info("HTTPS certificates reloaded")
	return nil
}

// stopHTTPS stops accepting HTTPS connections and lets requests in flight
// finish until ctx ends.
func (h *httpsFront) stop(ctx context.Context) []error {
	if h == nil || h.split == nil {
		return nil
	}
	_ = h.split.Close() // then the servers close H1 and H2
	var errs []error
	if h.h3 != nil {
		if err := h.h3.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("node: draining HTTP/3 clients: %w", err))
		}
	}
	if err := h.h1.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("node: draining HTTPS clients: %w", err))
	}
	if err := h.h2.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("node: draining HTTPS clients: %w", err))
		_ = h.h2.Close()
	}
	return errs
}

// HTTP3Addr is the bound HTTP/3 (UDP) address; empty before Start or
// without HTTP/3.
func (n *Node) HTTP3Addr() string {
	if n.https == nil || n.https.h3 == nil || n.https.split == nil {
		return ""
	}
	return n.https.h3.Addr().String()
}

// HTTPSAddr is the bound HTTPS address; empty before Start or without one.
func (n *Node) HTTPSAddr() string {
	if n.https == nil || n.https.split == nil {
		return ""
	}
	return n.https.split.Addr().String()
}
