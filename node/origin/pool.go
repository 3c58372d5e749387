package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcdn/meshcdn/node/budget"
)

// ErrOverloaded is returned when a site's origin-request limit is reached and
// no slot freed within the queue timeout.
var ErrOverloaded = errors.New("origin: too many concurrent origin requests")

// Target is one origin server of a pool and its health.
type Target struct {
	URL      *url.URL
	Weight   int
	Priority int

	fails     atomic.Int32 // consecutive failures of real traffic
	downUntil atomic.Int64 // passive ejection ends (unix nanos)
	probeDown atomic.Bool  // the active health check says down
	cw        int          // smooth weighted round robin state, under Pool.mu
}

// Name is the target's host:port, its label in metrics and logs.
func (t *Target) Name() string { return t.URL.Host }

// Up reports whether the target takes traffic at now.
func (t *Target) Up(now time.Time) bool {
	return !t.probeDown.Load() && now.UnixNano() >= t.downUntil.Load()
}

// PoolConfig describes one site's origins.
type PoolConfig struct {
	// Targets are the origins; at least one.
	Targets []*Target
	// Host is the Host sent: "client" (default) keeps the client's, "origin"
	// uses the target URL's host, anything else is sent as is.
	Host string
	// MaxFails consecutive connection errors or 5xx answers eject a target for
	// Backoff. Defaults 3 and 10s.
	MaxFails int
	Backoff  time.Duration
	// MaxConcurrent limits requests in flight to all targets; 0 means no limit.
	// A request over it waits up to QueueTimeout, then fails with ErrOverloaded.
	MaxConcurrent int
	QueueTimeout  time.Duration
	// Budget, when set, is the site's origin budget, which this pool shares
	// with the site's other pool (HTTP and HTTPS origins): every request
	// waits for a slot of it in its class's turn (budget.ClassOf), and
	// bodies are read within its bandwidth. A request that finds no slot in
	// its queue timeout fails with ErrOverloaded.
	Budget *budget.Budget
	// Health, when set, probes every target actively (see RunHealth).
	Health *HealthCheck
	// Observe, if set, is told of every request sent to a target.
	Observe func(t *Target, d time.Duration, status int, err error)
}

// Pool sends a site's origin traffic: it picks a target by priority and weight
// among those that are up, retries a failed idempotent request once on another
// target, ejects failing targets, and enforces the concurrency limit.
type Pool struct {
	cfg PoolConfig
	rt  http.RoundTripper
	log *slog.Logger
	sem chan struct{}
	mu  sync.Mutex
}

// NewPool returns a pool that sends through rt.
func NewPool(cfg PoolConfig, rt http.RoundTripper, log *slog.Logger) (*Pool, error) {
	if len(cfg.Targets) == 0 {
		return nil, errors.New("origin: no origin URLs")
	}
	if cfg.MaxFails <= 0 {
		cfg.MaxFails = 3
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 10 * time.Second
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = time.Second
	}
	p := &Pool{cfg: cfg, rt: rt, log: log}
	if cfg.MaxConcurrent > 0 {
		p.sem = make(chan struct{}, cfg.MaxConcurrent)
	}
	return p, nil
}

// Fetch sends a GET for a cache fill: the path and query, end-to-end request
// fields from hdr (the caller prepares them) and the client's Host. The
// response is the caller's to close.
func (p *Pool) Fetch(ctx context.Context, host, pathQuery string, hdr http.Header) (*http.Response, error) {
	u, err := url.ParseRequestURI(pathQuery)
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	req := (&http.Request{Method: http.MethodGet, URL: u, Header: hdr, Host: host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
	return p.RoundTrip(req)
}

// RoundTrip sends req (whose URL holds only path and query) to a target. A
// connection error or 5xx answer is retried once on another target when the
// request is idempotent and has no body; others are never sent twice.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	return p.roundTrip(req, nil)
}

// roundTrip is RoundTrip, sending hdr instead of req's header when it is
// set (a forwarded request's: see Forward).
func (p *Pool) roundTrip(req *http.Request, hdr http.Header) (*http.Response, error) {
	var resp *http.Response
	retryable := idempotent(req.Method) && (req.Body == nil || req.Body == http.NoBody)
	release, err := p.try(req.Context(), retryable, func(t *Target) (int, error) {
		// A shallow copy: the transport reads the header and never changes
		// it, and req is already the caller's own (the bypass proxy's copy of
		// the client's request, or a fill's), so it is not cloned again.
		out := new(http.Request)
		*out = *req
		if hdr != nil {
			out.Header, out.Close = hdr, false // the client's connection's Close, not the origin's
		}
		out.URL = &url.URL{Scheme: t.URL.Scheme, Host: t.URL.Host, Path: t.URL.Path + req.URL.Path,
			RawQuery: req.URL.RawQuery}
		if req.URL.RawPath != "" {
			out.URL.RawPath = t.URL.EscapedPath() + req.URL.RawPath
		}
		out.Host = p.hostFor(t, out.Host)
		if t.URL.Scheme == "https" {
			out = out.WithContext(WithServerName(out.Context(), serverName(out.Host)))
		}
		var err error
		if resp, err = p.rt.RoundTrip(out); err != nil {
			return 0, err
		}
		return resp.StatusCode, nil
	}, func() { DrainClose(resp.Body) })
	if err != nil {
		return nil, err
	}
	if _, upgraded := resp.Body.(io.ReadWriteCloser); p.cfg.Budget != nil && !upgraded {
		resp.Body = p.cfg.Budget.Body(req.Context(), resp.Body)
	}
	resp.Body = withRelease(resp.Body, release)
	return resp, nil
}

// hostFor is the Host sent to t for a client that asked for host.
func (p *Pool) hostFor(t *Target, host string) string {
	switch p.cfg.Host {
	case "", "client":
		return host
	case "origin":
		return t.URL.Host
	default:
		return p.cfg.Host
	}
}

// serverName is the TLS server name of a Host: without its port.
func serverName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// try sends one request to the pool's targets: send makes one attempt on
// t and reports the response's status. A connection error or 5xx answer is
// retried once on another target when retryable (drop first discards the
// 5xx answer); a target's failures eject it, as its successes count for
// it. The slot of the concurrency limit the request holds is freed by
// release, once its response is done with.
func (p *Pool) try(ctx context.Context, retryable bool, send func(t *Target) (int, error), drop func()) (release func(), err error) {
	release, err = p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	t := p.pick(nil)
	for attempt := 0; t != nil; attempt++ {
		start := time.Now()
		status, err := send(t)
		d := time.Since(start)
		var next *Target
		switch {
		case err != nil && (ctx.Err() != nil || errors.Is(err, ErrRequestBody)):
			// The caller gave up (a client that left a pass-through, say),
			// or the client's body failed: nothing is known of the origin,
			// so nothing counts against it.
			release()
			return nil, fmt.Errorf("origin %s: %w", t.Name(), err)
		case err != nil:
			p.failed(t, err)
			p.observe(t, d, 0, err)
			errs = append(errs, fmt.Errorf("origin %s: %w", t.Name(), err))
			if retryable && attempt == 0 && ctx.Err() == nil {
				next = p.pick(t)
			}
		case status >= 500:
			p.failed(t, fmt.Errorf("status %d", status))
			p.observe(t, d, status, nil)
			if retryable && attempt == 0 {
				next = p.pick(t)
			}
			if next == nil {
				return release, nil
			}
			drop()
		default:
			p.succeeded(t)
			p.observe(t, d, status, nil)
			return release, nil
		}
		t = next
	}
	release()
	return nil, errors.Join(errs...)
}

// pick chooses a target that is up, from the best priority that has one, by
// smooth weighted round robin; exclude is skipped. When every target is down it
// fails open on the best one, so a wrong health check never blackholes a site.
func (p *Pool) pick(exclude *Target) *Target {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := p.cfg.Targets
	for i := 0; i < len(ts); {
		j := i
		for j < len(ts) && ts[j].Priority == ts[i].Priority {
			j++
		}
		var best *Target
		total := 0
		for _, t := range ts[i:j] {
			if t == exclude || !t.Up(now) {
				continue
			}
			t.cw += t.Weight
			total += t.Weight
			if best == nil || t.cw > best.cw {
				best = t
			}
		}
		if best != nil {
			best.cw -= total
			return best
		}
		i = j
	}
	for _, t := range ts {
		if t != exclude {
			return t
		}
	}
	return nil
}

func (p *Pool) failed(t *Target, err error) {
	if n := t.fails.Add(1); int(n) >= p.cfg.MaxFails {
		until := time.Now().Add(p.cfg.Backoff)
		if prev := t.downUntil.Swap(until.UnixNano()); prev < time.Now().UnixNano() {
			p.log.Warn("origin ejected", "origin", t.Name(), "failures", n, "backoff", p.cfg.Backoff, "err", err)
		}
	}
}

func (p *Pool) succeeded(t *Target) {
	if t.fails.Swap(0) >= int32(p.cfg.MaxFails) {
		t.downUntil.Store(0)
		p.log.Info("origin back", "origin", t.Name())
	}
}

func (p *Pool) observe(t *Target, d time.Duration, status int, err error) {
	if p.cfg.Observe != nil {
		p.cfg.Observe(t, d, status, err)
	}
}

// acquire takes a slot of the budget, if any, then of the concurrency
// limit, waiting up to QueueTimeout for each.
func (p *Pool) acquire(ctx context.Context) (func(), error) {
	if p.cfg.Budget == nil {
		return p.acquireLimit(ctx)
	}
	releaseBudget, err := p.cfg.Budget.Acquire(ctx, budget.ClassOf(ctx))
	if errors.Is(err, budget.ErrQueueTimeout) {
		return nil, fmt.Errorf("%w: %w", ErrOverloaded, err)
	}
	if err != nil {
		return nil, err
	}
	release, err := p.acquireLimit(ctx)
	if err != nil {
		releaseBudget()
		return nil, err
	}
	return func() { release(); releaseBudget() }, nil
}

// acquireLimit takes a slot of the concurrency limit, waiting up to
// QueueTimeout.
func (p *Pool) acquireLimit(ctx context.Context) (func(), error) {
	if p.sem == nil {
		return func() {}, nil
	}
	release := sync.OnceFunc(func() { <-p.sem })
	select {
	case p.sem <- struct{}{}:
		return release, nil
	default:
	}
	timer := time.NewTimer(p.cfg.QueueTimeout)
	defer timer.Stop()
	select {
	case p.sem <- struct{}{}:
		return release, nil
	case <-timer.C:
		return nil, ErrOverloaded
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// releaseBody frees the concurrency slot when the response body is closed.
type releaseBody struct {
	io.ReadCloser
	release func()
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

// releaseConn is releaseBody for the body of a 101 (Switching Protocols)
// response: the upgraded connection itself, which the pass-through writes
// to as well (a WebSocket). It holds its slot while the connection lasts.
type releaseConn struct {
	releaseBody
	w io.Writer
}

func (b *releaseConn) Write(p []byte) (int, error) { return b.w.Write(p) }

// withRelease wraps body so that closing it frees the slot, keeping it
// writable when it is an upgraded connection.
func withRelease(body io.ReadCloser, release func()) io.ReadCloser {
	if rwc, ok := body.(io.ReadWriteCloser); ok {
		return &releaseConn{releaseBody{ReadCloser: rwc, release: release}, rwc}
	}
	return &releaseBody{ReadCloser: body, release: release}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// copyBuffers are the 32 KiB buffers bodies are copied through, reused
// across requests: without them each pass-through allocated 32 KiB, three
// quarters of the bytes it allocated, and the collector's work with them.
var copyBuffers = &bufferPool{}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
