package node

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/origin"
	"github.com/meshcdn/meshcdn/node/site"
)

// restartable is an origin whose listener can be stopped and started again on
// the same address, as a VM that reboots.
type restartable struct {
	addr string
	h    http.Handler
	mu   sync.Mutex
	srv  *httptest.Server
	hits atomic.Int64
}

func newRestartable(t *testing.T, name string) *restartable {
	o := &restartable{}
	o.h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Origin", name)
		_, _ = w.Write([]byte(name))
	})
	o.srv = httptest.NewServer(o.h)
	o.addr = o.srv.Listener.Addr().String()
	t.Cleanup(o.stop)
	return o
}

func (o *restartable) url() string { return "http://" + o.addr }

func (o *restartable) stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.srv != nil {
		o.srv.CloseClientConnections()
		o.srv.Close()
		o.srv = nil
	}
}

func (o *restartable) start(t *testing.T) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		t.Fatalf("restart %s: %v", o.addr, err)
	}
	o.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: o.h}}
	o.srv.Start()
}

// TestOriginFailover is acceptance 1: two origins, one killed during a load of
// 500 requests: no client request fails; the health check marks the dead one
// down, and up again when it returns.
func TestOriginFailover(t *testing.T) {
	a, b := newRestartable(t, "a"), newRestartable(t, "b")
	n := startNode(t, nil, Config{Sites: []site.Config{{
		Hosts:   []string{"app.example"},
		Origins: []site.OriginConfig{{URL: a.url()}, {URL: b.url()}},
		Rules:   []site.RuleConfig{{PathPrefix: "/", Action: "bypass"}},
		HealthCheck: &site.HealthConfig{Path: "/health", Interval: units.Duration(50 * time.Millisecond),
			Timeout: units.Duration(40 * time.Millisecond), Fails: 2, Passes: 2},
	}}})
	up := func(name string) float64 {
		return gaugeValue(t, n, "meshcdn_origin_up", "origin", name)
	}
	var failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range 500 {
		if i == 150 {
			a.stop()
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r := doMaybe(t, n, "GET", fmt.Sprintf("/api/%d", i), "Host", "app.example")
			if r.Response == nil || r.StatusCode != 200 || r.err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of 500 requests failed while an origin died", f)
	}
	eventually(t, 5*time.Second, func() bool { return up(a.addr) == 0 })
	if up(b.addr) != 1 {
		t.Error("the live origin is marked down")
	}
	before := a.hits.Load()
	a.start(t)
	eventually(t, 5*time.Second, func() bool { return up(a.addr) == 1 })
	for range 20 {
		do(t, n, "GET", "/api/again", "Host", "app.example")
	}
	if a.hits.Load() <= before {
		t.Error("the restarted origin gets no traffic")
	}
}

// TestOriginPriority is acceptance 2: the backup origin is used only while the
// primary is down.
func TestOriginPriority(t *testing.T) {
	primary, backup := newRestartable(t, "primary"), newRestartable(t, "backup")
	n := startNode(t, nil, Config{Sites: []site.Config{{
		Hosts:   []string{"app.example"},
		Origins: []site.OriginConfig{{URL: backup.url(), Priority: 2}, {URL: primary.url(), Priority: 1}},
		Rules:   []site.RuleConfig{{PathPrefix: "/", Action: "bypass"}},
		Passive: site.PassiveConfig{MaxFails: 1, Backoff: units.Duration(time.Hour)},
	}}})
	for range 20 {
		if r := do(t, n, "GET", "/x", "Host", "app.example"); r.body != "primary" {
			t.Fatalf("with the primary up, %q answered", r.body)
		}
	}
	if backup.hits.Load() != 0 {
		t.Fatalf("backup got %d requests while the primary was up", backup.hits.Load())
	}
	primary.stop()
	for range 20 {
		if r := do(t, n, "GET", "/x", "Host", "app.example"); r.StatusCode != 200 || r.body != "backup" {
			t.Fatalf("with the primary down: %d %q", r.StatusCode, r.body)
		}
	}
}

// TestWeights: traffic within one priority follows the weights.
func TestWeights(t *testing.T) {
	a, b := newRestartable(t, "a"), newRestartable(t, "b")
	n := startNode(t, nil, Config{Sites: []site.Config{{
		Hosts:   []string{"app.example"},
		Origins: []site.OriginConfig{{URL: a.url(), Weight: 3}, {URL: b.url(), Weight: 1}},
		Rules:   []site.RuleConfig{{PathPrefix: "/", Action: "bypass"}},
	}}})
	for range 40 {
		do(t, n, "GET", "/x", "Host", "app.example")
	}
	if a.hits.Load() != 30 || b.hits.Load() != 10 {
		t.Errorf("weights 3:1 gave %d:%d", a.hits.Load(), b.hits.Load())
	}
}

// TestRetryPolicy: an idempotent request that meets a 5xx is retried once on
// another origin; a POST is never sent twice.
func TestRetryPolicy(t *testing.T) {
	var badHits, goodHits atomic.Int64
	bad := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		http.Error(w, "broken", http.StatusInternalServerError)
	})
	good := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		goodHits.Add(1)
		_, _ = w.Write([]byte("ok"))
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{
		Hosts:   []string{"app.example"},
		Origins: []site.OriginConfig{{URL: bad.URL}, {URL: good.URL}},
		Rules:   []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}},
		Passive: site.PassiveConfig{MaxFails: 1000},
	}}})
	for range 4 {
		if r := do(t, n, "GET", "/api/x", "Host", "app.example"); r.StatusCode != 200 {
			t.Errorf("GET answered %d", r.StatusCode)
		}
	}
	badHits.Store(0)
	goodHits.Store(0)
	var codes []int
	for range 4 {
		codes = append(codes, do(t, n, "POST", "/api/x", "Host", "app.example").StatusCode)
	}
	if badHits.Load()+goodHits.Load() != 4 {
		t.Errorf("4 POSTs reached the origins %d times: %v", badHits.Load()+goodHits.Load(), codes)
	}
}

// TestOriginProtection is acceptance 7: with a limit of 4, 100 concurrent misses
// for different keys never put more than 4 requests in flight at the origin.
func TestOriginProtection(t *testing.T) {
	var inFlight, peak atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		cur := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
		}
		time.Sleep(5 * time.Millisecond) // the origin's own work
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte("x"))
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{
		Hosts: []string{"app.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
		MaxOriginRequests: 4, QueueTimeout: units.Duration(30 * time.Second),
	}}})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 100 {
		wg.Go(func() {
			r := doMaybe(t, n, "GET", fmt.Sprintf("/k%d.js", i), "Host", "app.example")
			if r.Response == nil || r.StatusCode != 200 {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 4 || p < 2 {
		t.Errorf("peak origin concurrency %d, want at most 4", p)
	}
	if failed.Load() != 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
}

// TestOriginOverload: over the limit (max_origin_requests, or the
// site's origin_budget) and past the queue timeout, a miss gets 503 with
// Retry-After; a stale entry is served instead when there is one.
func TestOriginOverload(t *testing.T) {
	for name, limit := range map[string]func(*site.Config){
		"max_origin_requests": func(c *site.Config) { c.MaxOriginRequests = 1 },
		"origin_budget":       func(c *site.Config) { c.OriginBudget = &site.BudgetConfig{Concurrency: 1} },
	} {
		t.Run(name, func(t *testing.T) { testOriginOverload(t, limit) })
	}
}

func testOriginOverload(t *testing.T, limit func(*site.Config)) {
	hold := make(chan struct{})
	var calls atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) > 1 {
			select {
			case <-hold:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("ETag", `"1"`)
		_, _ = w.Write([]byte("v1"))
	})
	defer close(hold)
	sc := site.Config{Hosts: []string{"app.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
		QueueTimeout: units.Duration(50 * time.Millisecond)}
	limit(&sc)
	n := startNode(t, nil, Config{Sites: []site.Config{sc}})
	do(t, n, "GET", "/stale.css", "Host", "app.example") // stored, always stale (max-age=0)
	go doMaybe(t, n, "GET", "/busy.css", "Host", "app.example")
	eventually(t, 5*time.Second, func() bool { return calls.Load() == 2 })
	r := do(t, n, "GET", "/other.css", "Host", "app.example")
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Errorf("over the limit: %d Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	r = do(t, n, "GET", "/stale.css", "Host", "app.example")
	if r.StatusCode != 200 || r.body != "v1" {
		t.Errorf("stale over the limit: %d %q", r.StatusCode, r.body)
	}
	wantStatus(t, r, "meshcdn; hit; fwd=stale; fwd-status=503; detail=stale-if-error")
}

// gaugeValue reads a gauge with one label value from the node's registry.
func gaugeValue(t testing.TB, n *Node, name, label, value string) float64 {
	t.Helper()
	mfs, err := n.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}

// TestOriginHostAndSNI: the Host sent is the client's, the origin's or a fixed
// name, and for https origins SNI (and certificate verification) follows it.
func TestOriginHostAndSNI(t *testing.T) {
	type seen struct{ host, sni string }
	got := make(chan seen, 10)
	o := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.TLS.ServerName}
		_, _ = w.Write([]byte("ok"))
	}))
	defer o.Close()
	roots := x509.NewCertPool()
	roots.AddCert(o.Certificate())
	originHost := o.Listener.Addr().String()
	n := startNode(t, nil, Config{Origin: origin.Config{RootCAs: roots}, Sites: []site.Config{
		{Hosts: []string{"example.com"}, Origins: []site.OriginConfig{{URL: o.URL}}},
		{Hosts: []string{"cdn.example.net"}, Origins: []site.OriginConfig{{URL: o.URL}}, OriginHost: "origin"},
		{Hosts: []string{"img.example.net"}, Origins: []site.OriginConfig{{URL: o.URL}}, OriginHost: "assets.example.com"},
		{Hosts: []string{"bad.example.net"}, Origins: []site.OriginConfig{{URL: o.URL}}},
	}})
	for _, tt := range []struct{ host, wantHost, wantSNI string }{
		{"example.com", "example.com", "example.com"},
		{"cdn.example.net", originHost, ""}, // an IP is never sent as SNI
		{"img.example.net", "assets.example.com", "assets.example.com"},
	} {
		r := do(t, n, "GET", "/api/x", "Host", tt.host)
		if r.StatusCode != 200 {
			t.Fatalf("%s: %d %q", tt.host, r.StatusCode, r.body)
		}
		if s := <-got; s.host != tt.wantHost || s.sni != tt.wantSNI {
			t.Errorf("%s: origin saw Host %q SNI %q, want %q %q", tt.host, s.host, s.sni, tt.wantHost, tt.wantSNI)
		}
	}
	// The test certificate does not cover bad.example.net: verification fails.
	if r := do(t, n, "GET", "/api/x", "Host", "bad.example.net"); r.StatusCode != http.StatusBadGateway {
		t.Errorf("certificate for another name accepted: %d", r.StatusCode)
	}
}
