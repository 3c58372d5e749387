// Package origin talks to a site's origin servers: Fetch for cache fills and a
// reverse proxy for requests that bypass the cache.
package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
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

// Pool is the origins of one site. Requests go round-robin over them; a fill
// whose connection fails is retried once on the next origin.
type Pool struct {
	targets []*url.URL
	rt      http.RoundTripper
	next    atomic.Uint32
	proxy   *httputil.ReverseProxy
}

// Hooks customise the bypass proxy, as httputil.ReverseProxy's fields of the
// same names do.
type Hooks struct {
	// ModifyResponse runs on every origin response before it is copied out.
	ModifyResponse func(*http.Response) error
	// ErrorHandler writes the response when no origin answered.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
}

// NewPool returns a pool over targets that sends through rt.
func NewPool(targets []*url.URL, rt http.RoundTripper, log *slog.Logger, hooks Hooks) (*Pool, error) {
	if len(targets) == 0 {
		return nil, errors.New("origin: no origin URLs")
	}
	p := &Pool{targets: targets, rt: rt}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.pick())
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host // the origin serves the CDN domain
		},
		Transport:      rt,
		FlushInterval:  -1, // dynamic responses (event streams, progress) flow as they come
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ModifyResponse: hooks.ModifyResponse,
		ErrorHandler:   hooks.ErrorHandler,
	}
	return p, nil
}

func (p *Pool) pick() *url.URL {
	return p.targets[int(p.next.Add(1)-1)%len(p.targets)]
}

// ServeHTTP proxies a request that bypasses the cache, streaming both ways.
func (p *Pool) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.proxy.ServeHTTP(w, r)
}

// Fetch sends a GET for a cache fill: path and query of in, end-to-end request
// fields from hdr (the caller prepares them), the client's Host. The response is
// the caller's to close. A connection failure is retried once on the next origin.
func (p *Pool) Fetch(ctx context.Context, host, pathQuery string, hdr http.Header) (*http.Response, error) {
	var errs []error
	tries := min(2, len(p.targets))
	for range tries {
		u := p.pick()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, joinURL(u, pathQuery), nil)
		if err != nil {
			return nil, fmt.Errorf("origin: %w", err)
		}
		req.Header = hdr
		req.Host = host
		resp, err := p.rt.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("origin %s: %w", u.Host, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// joinURL appends the request's escaped path and query to an origin base URL.
func joinURL(base *url.URL, pathQuery string) string {
	var b strings.Builder
	b.WriteString(base.Scheme)
	b.WriteString("://")
	b.WriteString(base.Host)
	b.WriteString(base.EscapedPath())
	b.WriteString(pathQuery)
	return b.String()
}

// DrainClose discards up to 64 KiB of a body so its connection can be reused,
// then closes it.
func DrainClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	_ = body.Close()
}
