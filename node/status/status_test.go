package status

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// counting is a Source whose counters the test moves.
type counting struct {
	mu sync.Mutex
	c  map[string]SiteCounters
}

func (s *counting) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Counters{Sites: map[string]SiteCounters{}}
	for k, v := range s.c {
		out.Sites[k] = v
	}
	return out
}

func (s *counting) add(site string, d SiteCounters) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.c[site] = s.c[site].add(d)
}

func (s *counting) Cluster(context.Context) Cluster {
	failed := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	return Cluster{Node: "n1", Region: "a", Version: "v1",
		Members: []Member{
			{Name: "n1", Role: "edge", State: "alive", Region: "a", Share: 0.5, Ready: true, Self: true},
			{Name: "n2", Role: "edge", State: "draining", Region: "a", Share: 0.5, Ready: true},
			{Name: "n3", Role: "edge", State: "alive", Region: "b", Share: 1, Ready: true},
			{Name: "r1", Role: "router", State: "alive", Region: "b"},
			{Name: "n4", Role: "edge", State: "failed", Region: "b", FailedAt: &failed},
		},
		Origins: []Origin{{Site: "www", URL: "http://10.0.0.9", Up: true, LatencyMS: 12.5, Requests: 4}},
		Budgets: []Budget{{Site: "www", Concurrency: 4, Rate: 200, Bandwidth: 50e6, Inflight: 3, Waiting: 7,
			Lease: &Lease{Concurrency: 1, Rate: 50, Bandwidth: 25e6, Keeper: "n3", Valid: true}}},
		Protocols: []Protocol{{Name: "HTTP/1.1", Requests: 5}, {Name: "HTTP/3", TLS: true, Requests: 2}},
		Shield:    &Shield{Region: "b", Members: 1, Reachable: true},
		Purges: []Purge{{ID: "ab12", Issued: failed, From: "n1", What: "key www/<script>",
			Receipts: []Receipt{{Member: "n1", Applied: true}, {Member: "n2", Late: true, Applied: true}, {Member: "n3", Error: "no answer"}}}},
		Certificates: []Certificate{{Use: "https", Names: []string{"www.example"}, NotAfter: failed.Add(40 * 24 * time.Hour), Days: 40}},
	}
}

func TestPageFigures(t *testing.T) {
	src := &counting{c: map[string]SiteCounters{}}
	r := NewRecorder(src, time.Hour, 10) // samples only when the test says
	t0 := time.Now()
	r.record(t0)
	p := r.Page(t.Context(), t0)
	if p.HitRatio != nil || p.ByteHitRatio != nil || p.Requests != 0 {
		t.Errorf("before any request: hit ratio %v, byte hit ratio %v, %d requests; want null, null, 0", p.HitRatio, p.ByteHitRatio, p.Requests)
	}
	src.add("www", SiteCounters{Requests: 10, Hits: 8, Bytes: 1000, HitBytes: 600, OriginRequests: 2, PeerFetches: 1})
	r.record(t0.Add(2 * time.Second))
	src.add("img", SiteCounters{Requests: 10, Hits: 2, Bytes: 1000, HitBytes: 400, OriginRequests: 8, Sliced: 4, SliceFills: 12})
	r.record(t0.Add(4 * time.Second))
	p = r.Page(t.Context(), t0.Add(4*time.Second))
	if p.Requests != 20 || *p.HitRatio != 0.5 || *p.ByteHitRatio != 0.5 {
		t.Errorf("totals: %d requests, hit ratio %v, byte hit ratio %v; want 20, 0.5, 0.5", p.Requests, *p.HitRatio, *p.ByteHitRatio)
	}
	if p.Recent.WindowSeconds != 4 || p.Recent.RequestsPerSecond != 5 || p.Recent.OriginRequestsPerSecond != 2.5 || p.Recent.PeerFetchesPerSecond != 0.25 {
		t.Errorf("recent: %+v; want 4 s, 5 requests/s, 2.5 origin/s, 0.25 peer fetches/s", p.Recent)
	}
	if p.Recent.SlicedPerSecond != 1 || p.Recent.SliceFillsPerSecond != 3 {
		t.Errorf("recent: %+v; want 1 sliced response/s, 3 slice fills/s", p.Recent)
	}
	if len(p.Sites) != 2 || p.Sites[0].Name != "img" || *p.Sites[1].HitRatio != 0.8 {
		t.Errorf("sites: %+v", p.Sites)
	}
	want := []float64{5, 5}
	if got := p.Series.Total.RequestsPerSecond; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("requests per second per interval %v; want %v", got, want)
	}
	if h := p.Series.Total.HitRatio; len(h) != 2 || *h[0] != 0.8 || *h[1] != 0.2 {
		t.Errorf("hit ratio per interval: %v", h)
	}
	if h := p.Series.Sites["img"].HitRatio; h[0] != nil {
		t.Errorf("img's hit ratio in an interval without its requests: %v; want null", *h[0])
	}
	// Older samples than the recorder keeps are dropped.
	for i := range 20 {
		r.record(t0.Add(time.Duration(6+2*i) * time.Second))
	}
	if len(r.samples) != 10 {
		t.Errorf("%d samples kept; want 10", len(r.samples))
	}
}

func TestRecorderSamples(t *testing.T) {
	src := &counting{c: map[string]SiteCounters{}}
	r := NewRecorder(src, 5*time.Millisecond, 4)
	r.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.samples)
		r.mu.Unlock()
		if n == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d samples after 10 s; want 4", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.Close()
	r.Close()
	var nilRecorder *Recorder
	nilRecorder.Close()
}

func serve(t *testing.T, o Options) *httptest.Server {
	src := &counting{c: map[string]SiteCounters{"www": {Requests: 4, Hits: 3, Bytes: 100, HitBytes: 75}}}
	r := NewRecorder(src, time.Hour, 0)
	r.Start()
	t.Cleanup(r.Close)
	s := httptest.NewServer(r.Handler(o))
	t.Cleanup(s.Close)
	return s
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestPageHTML(t *testing.T) {
	s := serve(t, Options{Open: true})
	resp, body := get(t, s.URL+"/status")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'sha256-") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers: CSP %q, Cache-Control %q", csp, resp.Header.Get("Cache-Control"))
	}
	// Self-contained: no element loads anything, the one link is the JSON.
	if m := regexp.MustCompile(`(?i)<(link|img|iframe|object|embed)\b|\bsrc=|url\(`).FindString(body); m != "" {
		t.Errorf("the page loads something: %q", m)
	}
	if hrefs := regexp.MustCompile(`href="([^"]*)"`).FindAllStringSubmatch(body, -1); len(hrefs) != 1 || hrefs[0][1] != "status.json" {
		t.Errorf("links: %v; want status.json alone", hrefs)
	}
	for _, want := range []string{
		`data-name="n1" data-state="alive"`, `this node`, `data-name="n2" data-state="draining"`, `data-name="n4" data-state="failed"`,
		`region a`, `region b`, `>router<`, `id="hit-ratio">75.0%<`, `http://10.0.0.9`, `12.5 ms`, `Shield region <b>b</b>`,
		`id="budgets"`, `4 at once · 200/s · 47.7 MiB/s</td>`, `<td>3</td><td>7</td>`,
		`<td class="lease">1 at once · 50.0/s · 23.8 MiB/s from n3</td>`,
		`requests since the start by protocol: HTTP/1.1 5 · HTTP/3 over TLS 2</p>`,
		`key www/&lt;script&gt;`, `n2 (late)`, `n3 (not yet)`, `www.example`, `<svg class="spark"`, `<script>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	// The part the script refreshes is the main element alone.
	_, part := get(t, s.URL+"/status?part=main")
	if strings.Contains(part, "<html") || strings.Contains(part, "<script") || !strings.Contains(part, `id="members"`) {
		t.Errorf("?part=main: %.200s", part)
	}
}

func TestPageJSON(t *testing.T) {
	s := serve(t, Options{Open: true})
	resp, body := get(t, s.URL+"/status.json")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var p struct {
		Node     string            `json:"node"`
		Members  []json.RawMessage `json:"members"`
		HitRatio *float64          `json:"hit_ratio"`
		Sites    []struct {
			Name string `json:"name"`
		} `json:"sites"`
		Series struct {
			IntervalSeconds float64 `json:"interval_seconds"`
		} `json:"series"`
	}
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	if p.Node != "n1" || len(p.Members) != 5 || p.HitRatio == nil || *p.HitRatio != 0.75 || len(p.Sites) != 1 || p.Series.IntervalSeconds != 3600 {
		t.Errorf("status.json: %s", body)
	}
}

func TestPageAccess(t *testing.T) {
	closed := serve(t, Options{Settings: "--status-token-file"})
	resp, body := get(t, closed.URL+"/status")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "--status-token-file") {
		t.Errorf("beyond loopback without a token: %d %q; want 403 naming the setting", resp.StatusCode, body)
	}
	s := serve(t, Options{Tokens: []string{"read-token", "admin-token"}})
	for _, c := range []struct {
		hdr  []string
		want int
	}{
		{nil, http.StatusUnauthorized},
		{[]string{"Authorization", "Bearer wrong"}, http.StatusUnauthorized},
		{[]string{"Authorization", "Bearer read-token"}, http.StatusOK},
		{[]string{"Authorization", "Bearer admin-token"}, http.StatusOK},
		{[]string{"Authorization", "Basic " + basic("anyone", "read-token")}, http.StatusOK},
		{[]string{"Authorization", "Basic " + basic("anyone", "nope")}, http.StatusUnauthorized},
	} {
		for _, path := range []string{"/status", "/status.json"} {
			resp, _ := get(t, s.URL+path, c.hdr...)
			if resp.StatusCode != c.want {
				t.Errorf("%s with %v: %d; want %d", path, c.hdr, resp.StatusCode, c.want)
			}
			if c.want == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("%s: 401 without a Basic challenge for the browser", path)
			}
		}
	}
	// Only GET is served.
	req, _ := http.NewRequest("POST", s.URL+"/status", nil)
	req.Header.Set("Authorization", "Bearer read-token")
	pr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pr.Body.Close()
	if pr.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: %d; want 405", pr.StatusCode)
	}
}

func basic(user, pw string) string {
	req, _ := http.NewRequest("GET", "http://x/", nil)
	req.SetBasicAuth(user, pw)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}
