// Package origin talks to a site's origin servers: a pool per site that picks
// a healthy origin by priority and weight, retries, ejects failing origins and
// limits concurrency; Fetch for cache fills and a reverse proxy for requests
// that bypass the cache.
package origin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Config tunes the connections to origins. Zero fields take their defaults.
type Config struct {
	// DialTimeout bounds a TCP connect. Default 10s.
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for response headers. Default 30s.
	HeaderTimeout time.Duration
	// MaxIdlePerHost is the keep-alive pool size per origin. Default 64.
	MaxIdlePerHost int
	// RootCAs verifies https origins. Nil: the system's roots.
	RootCAs *x509.CertPool
}

func (c Config) withDefaults() Config {
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = 30 * time.Second
	}
	if c.MaxIdlePerHost <= 0 {
		c.MaxIdlePerHost = 64
	}
	return c
}

// Transports carries all origin traffic: a keep-alive transport for plain
// http, and one per TLS server name for https, so a connection verified for
// one name is never reused for another.
type Transports struct {
	base  *http.Transport
	roots *x509.CertPool
	mu    sync.Mutex
	tls   map[string]*http.Transport
}

// maxTLSNames bounds the per-name transports (a wildcard site may see many
// names); past it, a request gets a connection of its own.
const maxTLSNames = 1024

// NewTransports returns the origin transports.
func NewTransports(cfg Config) *Transports {
	cfg = cfg.withDefaults()
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	return &Transports{
		roots: cfg.RootCAs,
		tls:   map[string]*http.Transport{},
		base: &http.Transport{
			Proxy:                 nil, // an edge talks to its origins directly
			DialContext:           d.DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   cfg.MaxIdlePerHost,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   cfg.DialTimeout,
			ResponseHeaderTimeout: cfg.HeaderTimeout,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true, // bodies pass through as the origin encoded them
			ForceAttemptHTTP2:     true,
			TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		},
	}
}

type sniKey struct{}

// WithServerName asks for an https request to present name as SNI and to
// verify the origin's certificate against it.
func WithServerName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, sniKey{}, name)
}

// RoundTrip sends req on the transport for its TLS server name.
func (ts *Transports) RoundTrip(req *http.Request) (*http.Response, error) {
	name, _ := req.Context().Value(sniKey{}).(string)
	if req.URL.Scheme != "https" || name == "" {
		return ts.base.RoundTrip(req)
	}
	return ts.forName(name).RoundTrip(req)
}

func (ts *Transports) forName(name string) *http.Transport {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t, ok := ts.tls[name]; ok {
		return t
	}
	t := ts.base.Clone()
	t.TLSClientConfig = &tls.Config{ServerName: name, RootCAs: ts.roots, MinVersion: tls.VersionTLS12}
	if len(ts.tls) >= maxTLSNames {
		t.DisableKeepAlives = true
		return t
	}
	ts.tls[name] = t
	return t
}

// CloseIdleConnections closes every idle origin connection.
func (ts *Transports) CloseIdleConnections() {
	ts.base.CloseIdleConnections()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, t := range ts.tls {
		t.CloseIdleConnections()
	}
}

// DrainClose discards up to 64 KiB of a body so its connection can be reused,
// then closes it.
func DrainClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	_ = body.Close()
}
