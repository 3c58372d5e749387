package node

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testOrigin is a real HTTP origin that counts the requests it serves.
type testOrigin struct {
	*httptest.Server
	hits atomic.Int64
}

func newOrigin(t testing.TB, h http.HandlerFunc) *testOrigin {
	t.Helper()
	o := &testOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *testOrigin) url(t testing.TB) *url.URL {
	u, err := url.Parse(o.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startNode starts a node on loopback in front of o (as the default origin)
// with cfg's other settings, and shuts it down at the end of the test.
func startNode(t testing.TB, o *testOrigin, cfg Config) *Node {
	t.Helper()
	if o != nil {
		cfg.Origins = append(cfg.Origins, o.url(t))
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.MetricsAddr == "" {
		cfg.MetricsAddr = "127.0.0.1:0"
	}
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Connections the client dialled but never used count as active for 5s
		// in http.Server.Shutdown; closing them keeps tests quick.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			var stacks strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Errorf("shutdown: %v; goroutines:\n%s", err, stacks.String())
		}
	})
	return n
}

// response is what a client got.
type response struct {
	*http.Response
	body string
	err  error // reading the body
}

func (r response) cacheStatus() string { return r.Header.Get("Cache-Status") }

// do sends one request to the node and reads the whole body.
func do(t testing.TB, n *Node, method, path string, hdr ...string) response {
	t.Helper()
	r := doMaybe(t, n, method, path, hdr...)
	if r.Response == nil {
		t.Fatalf("%s %s: %v", method, path, r.err)
	}
	return r
}

// doMaybe is do that returns a failed round trip as a response without
// Response. It never stops the test, so goroutines may call it.
func doMaybe(t testing.TB, n *Node, method, path string, hdr ...string) response {
	var body io.Reader
	if method == http.MethodPost || method == http.MethodPut {
		body = strings.NewReader("payload")
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+n.HTTPAddr()+path, body)
	if err != nil {
		return response{err: err}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return response{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{Response: resp, body: string(b), err: err}
}

// wantStatus fails unless the Cache-Status of r starts with prefix.
func wantStatus(t testing.TB, r response, prefix string) {
	t.Helper()
	if !strings.HasPrefix(r.cacheStatus(), prefix) {
		t.Errorf("Cache-Status = %q, want prefix %q", r.cacheStatus(), prefix)
	}
}

func wantHits(t testing.TB, o *testOrigin, want int64) {
	t.Helper()
	if got := o.hits.Load(); got != want {
		t.Errorf("origin served %d requests, want %d", got, want)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// static serves body as a cacheable static file with validators.
func static(body string, cc string) http.HandlerFunc {
	mod := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func(w http.ResponseWriter, r *http.Request) {
		if cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Type", "text/plain")
		http.ServeContent(w, r, "", mod, strings.NewReader(body))
	}
}

// labelledValue reads the counter name whose one label has value.
func labelledValue(t testing.TB, n *Node, name, value string) float64 {
	t.Helper()
	mfs, err := n.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == name && len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// counterValue reads a metric's total (summed over labels) from /metrics.
func counterValue(t testing.TB, n *Node, name string) float64 {
	t.Helper()
	mfs, err := n.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// tool returns the path of a tool that `make tools` builds into bin/, and
// skips the test when it is missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs("../bin/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("bin/%s is missing: `make tools` installs it (`make test` does)", name)
	}
	return p
}
