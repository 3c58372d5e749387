// Package origin talks to a site's origin servers: a pool per site that picks
// a healthy origin by priority and weight, retries, ejects failing origins and
// limits concurrency; Fetch for cache fills and a reverse proxy for requests
// that bypass the cache.
package origin

import (
	"io"
	"net"
	"net/http"
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

// NewTransport returns the keep-alive transport shared by all origin traffic.
func NewTransport(cfg Config) *http.Transport {
	cfg = cfg.withDefaults()
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
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
	}
}

// DrainClose discards up to 64 KiB of a body so its connection can be reused,
// then closes it.
func DrainClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	_ = body.Close()
}
