package origin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// server is a real origin on loopback that counts its requests.
type server struct {
	*httptest.Server
	hits atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) target(priority int) *Target {
	u, _ := url.Parse(s.URL)
	return &Target{URL: u, Weight: 1, Priority: priority}
}

func say(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, body+" "+r.Host) }
}

func newPool(t *testing.T, cfg PoolConfig) *Pool {
	t.Helper()
	tr := NewTransports(Config{DialTimeout: time.Second})
	t.Cleanup(tr.CloseIdleConnections)
	p, err := NewPool(cfg, tr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fetch(t *testing.T, p *Pool, host string) (int, string, error) {
	t.Helper()
	resp, err := p.Fetch(t.Context(), host, "/a.css?v=1", http.Header{})
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// closedTarget is an origin address that refuses connections.
func closedTarget(t *testing.T, priority int) *Target {
	s := httptest.NewServer(http.NotFoundHandler())
	u, _ := url.Parse(s.URL)
	s.Close()
	return &Target{URL: u, Weight: 1, Priority: priority}
}

func TestNewPoolNeedsATarget(t *testing.T) {
	if _, err := NewPool(PoolConfig{}, http.DefaultTransport, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a pool without origins was accepted")
	}
}

// A fill retries once on another origin after a connection error or a 5xx,
// and an origin failing MaxFails times in a row is ejected for the backoff.
func TestRetryAndEjection(t *testing.T) {
	for _, c := range []struct {
		name   string
		failed func(t *testing.T) (*Target, *atomic.Int64)
	}{
		{"connection refused", func(t *testing.T) (*Target, *atomic.Int64) { return closedTarget(t, 1), new(atomic.Int64) }},
		{"502", func(t *testing.T) (*Target, *atomic.Int64) {
			s := newServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
			return s.target(1), &s.hits
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			good := newServer(t, say("good"))
			bad, badHits := c.failed(t)
			p := newPool(t, PoolConfig{Targets: []*Target{bad, good.target(1)}, MaxFails: 2, Backoff: time.Hour})
			for i := range 6 {
				code, body, err := fetch(t, p, "www.example.test")
				if err != nil || code != 200 || !strings.HasPrefix(body, "good") {
					t.Fatalf("fetch %d: %d %q %v; want the good origin's answer", i, code, body, err)
				}
			}
			if bad.Up(time.Now()) {
				t.Fatal("the failing origin is still up")
			}
			before := badHits.Load()
			for range 4 {
				_, _, _ = fetch(t, p, "www.example.test")
			}
			if badHits.Load() != before {
				t.Errorf("an ejected origin still got %d requests", badHits.Load()-before)
			}
		})
	}
}

// Origins of the best priority take all traffic while one is up; the next
// priority only when none is; with every origin down the pool fails open on
// the best one rather than refusing.
func TestPriority(t *testing.T) {
	primary := newServer(t, say("primary"))
	backup := newServer(t, say("backup"))
	p := newPool(t, PoolConfig{Targets: []*Target{primary.target(1), backup.target(2)}})
	for range 5 {
		if _, body, _ := fetch(t, p, "h"); !strings.HasPrefix(body, "primary") {
			t.Fatalf("with the primary up: %q", body)
		}
	}
	if backup.hits.Load() != 0 {
		t.Fatalf("the backup got %d requests while the primary was up", backup.hits.Load())
	}
	p.cfg.Targets[0].probeDown.Store(true)
	if _, body, _ := fetch(t, p, "h"); !strings.HasPrefix(body, "backup") {
		t.Fatalf("with the primary down: %q", body)
	}
	p.cfg.Targets[1].probeDown.Store(true)
	if _, body, _ := fetch(t, p, "h"); !strings.HasPrefix(body, "primary") {
		t.Fatalf("with every origin down: %q; want the best priority's", body)
	}
}

// A request with a body is never sent twice, even to a failing origin.
func TestBodyRequestsAreNotRetried(t *testing.T) {
	bad := newServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	other := newServer(t, say("other"))
	p := newPool(t, PoolConfig{Targets: []*Target{bad.target(1), other.target(1)}})
	for range 2 {
		req := httptest.NewRequest(http.MethodPost, "http://h/form", strings.NewReader("a=1"))
		if resp, err := p.Forward(req); err == nil {
			DrainClose(resp.Body)
		}
	}
	if got := bad.hits.Load() + other.hits.Load(); got != 2 {
		t.Fatalf("2 POSTs reached the origins %d times", got)
	}
}

// The Host an origin sees: the client's, the origin URL's own, or a fixed
// name.
func TestHostModes(t *testing.T) {
	s := newServer(t, say("origin"))
	for _, c := range []struct{ mode, want string }{
		{"", "www.example.test"},
		{"client", "www.example.test"},
		{"origin", s.Listener.Addr().String()},
		{"static.example.test", "static.example.test"},
	} {
		p := newPool(t, PoolConfig{Targets: []*Target{s.target(1)}, Host: c.mode})
		if _, body, err := fetch(t, p, "www.example.test"); err != nil || body != "origin "+c.want {
			t.Errorf("host mode %q: %q %v; want Host %s", c.mode, body, err, c.want)
		}
	}
}

// Past MaxConcurrent, a request waits QueueTimeout for a slot and then
// fails with ErrOverloaded; closing a body frees its slot.
func TestConcurrencyLimit(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		if r.URL.Path == "/slow" {
			<-release
		}
	})
	defer close(release)
	p := newPool(t, PoolConfig{Targets: []*Target{s.target(1)}, MaxConcurrent: 1, QueueTimeout: 50 * time.Millisecond})
	held, err := p.Fetch(t.Context(), "h", "/slow", http.Header{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = p.Fetch(t.Context(), "h", "/fast", http.Header{})
	if !errors.Is(err, ErrOverloaded) || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("second request at the limit: %v after %v; want ErrOverloaded after the queue timeout", err, time.Since(start))
	}
	release <- struct{}{}
	DrainClose(held.Body)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := p.Fetch(ctx, "h", "/fast", http.Header{})
	if err != nil {
		t.Fatalf("after the slot was freed: %v", err)
	}
	DrainClose(resp.Body)
}

// Active health checks take a target out after Fails failed probes and
// back after Passes good ones, forgetting the passive failures.
func TestHealthCheck(t *testing.T) {
	var healthy atomic.Bool
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	p := newPool(t, PoolConfig{Targets: []*Target{s.target(1)},
		Health: &HealthCheck{Path: "/health", Interval: 10 * time.Millisecond, Timeout: time.Second, Fails: 2, Passes: 2}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); p.RunHealth(ctx) }()
	defer func() { cancel(); <-done }()
	target := p.cfg.Targets[0]
	waitFor(t, func() bool { return !target.Up(time.Now()) })
	target.fails.Store(5) // as if real traffic had failed meanwhile
	healthy.Store(true)
	waitFor(t, func() bool { return target.Up(time.Now()) })
	if target.fails.Load() != 0 {
		t.Error("a recovered target kept its passive failures")
	}
}

// A target that real traffic ejected is taken back once its health check
// has passed Passes times since the ejection, without waiting out the
// back-off (the origin came back before the probe ever saw it fail).
func TestHealthCheckEndsEjection(t *testing.T) {
	var probes atomic.Int64
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { probes.Add(1) })
	p := newPool(t, PoolConfig{Targets: []*Target{s.target(1)}, Backoff: time.Hour,
		Health: &HealthCheck{Path: "/health", Interval: 10 * time.Millisecond, Timeout: time.Second, Fails: 2, Passes: 2}})
	target := p.cfg.Targets[0]
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); p.RunHealth(ctx) }()
	defer func() { cancel(); <-done }()
	for round := range 2 { // before the first probe, then while the probe keeps passing
		waitFor(t, func() bool { return probes.Load() >= int64(round*5) })
		for range p.cfg.MaxFails {
			p.failed(target, errors.New("connection refused"))
		}
		ejected := probes.Load()
		if target.Up(time.Now()) {
			t.Fatal("not ejected")
		}
		waitFor(t, func() bool { return target.Up(time.Now()) })
		if n := probes.Load() - ejected; n < 1 { // the second pass may be of a probe sent before
			t.Errorf("round %d: back after %d probes since the ejection", round, n)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A request its caller cancels (a client that left) does not count against
// the origin: clients that hang up cannot eject it.
func TestCancelledRequestsDoNotEject(t *testing.T) {
	arrived := make(chan struct{}, 1)
	slow := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	target := slow.target(1)
	p := newPool(t, PoolConfig{Targets: []*Target{target}, MaxFails: 2, Backoff: time.Hour})
	for range 4 {
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-arrived
			cancel()
		}()
		start := time.Now()
		if _, err := p.Fetch(ctx, "www.example.test", "/a.css", http.Header{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("a cancelled fetch: %v", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			// The header timeout is 30 s: the cancellation was lost.
			t.Errorf("a cancelled fetch ended after %v", d)
		}
		cancel()
	}
	if !target.Up(time.Now()) || target.fails.Load() != 0 {
		t.Errorf("cancelled requests counted against the origin: up %v, %d failures", target.Up(time.Now()), target.fails.Load())
	}
}
