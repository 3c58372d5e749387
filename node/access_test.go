package node

import (
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/access"
	"github.com/meshcdn/meshcdn/node/site"
)

// fromAddr sends one request to the node from the local address from.
func fromAddr(t *testing.T, n *Node, from, method, path string, hdr ...string) response {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, DisableCompression: true}
	defer tr.CloseIdleConnections()
	return doWith(t, tr, n, method, path, hdr...)
}

// doWith sends one request to the node through tr: header pairs, "Host"
// setting the Host, empty values left out.
func doWith(t *testing.T, tr *http.Transport, n *Node, method, path string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+n.HTTPAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		if hdr[i+1] != "" {
			req.Header.Add(hdr[i], hdr[i+1])
		}
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{Response: resp, body: string(b), err: err}
}

// recordingOrigin answers every path with its path and records what it saw.
func recordingOrigin(t *testing.T) (*testOrigin, func() []string) {
	var mu sync.Mutex
	var seen []string
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.RequestURI())
		mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = io.WriteString(w, "body of "+r.URL.Path)
	})
	return o, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func accessSite(o *testOrigin, t *testing.T, a access.Config) Config {
	return Config{Sites: []site.Config{{Hosts: []string{"www.example.test"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
		Access: a}}}
}

// TestSignedURLs: for each signing type, two valid URLs signed at
// different times are served from one entry (the origin sees the clean path
// once, without any signing part); a wrong hash, an expired signature and
// none at all get 403 with their reason in Cache-Status, and reach neither
// the cache nor the origin; the backup key is accepted.
func TestSignedURLs(t *testing.T) {
	for _, typ := range []access.URLAuthConfig{
		{Type: "A", Key: "primary-key-0001", BackupKey: "backup-key-00002"},
		{Type: "B", Key: "primary-key-0001", BackupKey: "backup-key-00002"},
		{Type: "C", Key: "primary-key-0001", BackupKey: "backup-key-00002"},
		{Type: "C", Key: "primary-key-0001", BackupKey: "backup-key-00002", Param: "KEY1", TimeParam: "KEY2"},
		{Type: "F", Key: "primary-key-0001", BackupKey: "backup-key-00002"},
	} {
		t.Run(typ.Type+typ.Param, func(t *testing.T) {
			o, seen := recordingOrigin(t)
			n := startNode(t, nil, accessSite(o, t, access.Config{URLAuth: &typ}))
			sign := func(cfg access.URLAuthConfig, path string, at time.Time) string {
				u, _ := url.Parse("http://www.example.test" + path)
				s, err := access.Sign(cfg, u, at, "r4nd", "0")
				if err != nil {
					t.Fatal(err)
				}
				return s.RequestURI()
			}
			now := time.Now()
			first := do(t, n, "GET", sign(typ, "/media/a.mp4?v=1", now.Add(-time.Minute)), "Host", "www.example.test")
			backup := typ
			backup.Key = typ.BackupKey
			second := do(t, n, "GET", sign(backup, "/media/a.mp4?v=1", now.Add(-2*time.Minute)), "Host", "www.example.test")
			for i, r := range []response{first, second} {
				if r.StatusCode != 200 || r.body != "body of /media/a.mp4" {
					t.Fatalf("valid signature %d: %d %q %s", i, r.StatusCode, r.body, r.cacheStatus())
				}
			}
			wantStatus(t, second, "meshcdn; hit")
			if got := seen(); len(got) != 1 || got[0] != "/media/a.mp4?v=1" {
				t.Errorf("the origin saw %q; want the clean URL once", got)
			}
			expired := sign(typ, "/media/a.mp4?v=1", now.Add(-31*time.Minute))
			wrong := sign(access.URLAuthConfig{Type: typ.Type, Key: "someone-elses-key", Param: typ.Param, TimeParam: typ.TimeParam}, "/media/a.mp4?v=1", now)
			refused := map[string]string{expired: access.AuthExpired, wrong: access.AuthMismatch, "/media/a.mp4?v=1": access.AuthMissing}
			if param := map[string]string{"A": "auth_key", "F": "sign"}[typ.Type] + typ.Param; param != "" {
				// A second signing parameter after a valid signature would
				// reach the key and the origin: one signature, endless entries.
				refused[sign(typ, "/media/a.mp4?v=1", now)+"&"+param+"=2"] = access.AuthDuplicate
			}
			for path, reason := range refused {
				r := do(t, n, "GET", path, "Host", "www.example.test")
				if r.StatusCode != 403 || r.cacheStatus() != "meshcdn; detail="+reason {
					t.Errorf("%s: %d, Cache-Status %q; want 403 and detail=%s", path, r.StatusCode, r.cacheStatus(), reason)
				}
			}
			if got := seen(); len(got) != 1 {
				t.Errorf("refused requests reached the origin: %q", got)
			}
			if v := seriesValue(t, n, "meshcdn_access_denied_total", map[string]string{"reason": "auth-expired", "site": "www.example.test"}); v != 1 {
				t.Errorf("meshcdn_access_denied_total{reason=auth-expired} = %v", v)
			}
			// Explain judges the signature and explains the clean URL.
			ex, err := (adminView{n}).Explain("http://www.example.test"+sign(typ, "/media/a.mp4?v=1", now), "GET", nil)
			if err != nil || ex.Access != "signed" || ex.Key != "www.example.test/media/a.mp4?v=1" || ex.Outcome != "hit" ||
				len(ex.AccessRules) != 1 || !strings.HasPrefix(ex.AccessRules[0], "url_auth: type "+typ.Type) {
				t.Errorf("explain a signed URL: %+v %v", ex, err)
			}
			if ex, err := (adminView{n}).Explain("http://www.example.test"+expired, "GET", nil); err != nil || ex.Access != "403 auth-expired" || ex.Outcome != "denied" {
				t.Errorf("explain an expired URL: %+v %v", ex, err)
			}
		})
	}
}

// TestAccessLists: an allowed Referer, a subdomain of it and none pass,
// another is refused; a denied client address and a denied User-Agent are
// refused; no refused request reaches the origin.
func TestAccessLists(t *testing.T) {
	o, seen := recordingOrigin(t)
	yes := true
	n := startNode(t, nil, accessSite(o, t, access.Config{
		Referer:   &access.RefererConfig{ListConfig: access.ListConfig{Allow: []string{"example.test"}}, AllowEmpty: &yes},
		IP:        &access.IPConfig{ListConfig: access.ListConfig{Deny: []string{"127.0.0.2"}}},
		UserAgent: &access.ListConfig{Deny: []string{"*BadBot*"}},
	}))
	for _, tt := range []struct {
		from, referer, ua string
		want              int
		detail            string
	}{
		{"127.0.0.1", "https://example.test/page", "", 200, ""},
		{"127.0.0.1", "https://www.example.test/page", "", 200, ""},
		{"127.0.0.1", "", "", 200, ""},
		{"127.0.0.1", "https://hotlinker.test/", "", 403, access.DeniedReferer},
		{"127.0.0.2", "", "", 403, access.DeniedIP},
		{"127.0.0.1", "", "Mozilla/5.0 (compatible; BadBot/1.0)", 403, access.DeniedUserAgent},
	} {
		var hdr []string
		if tt.referer != "" {
			hdr = append(hdr, "Referer", tt.referer)
		}
		if tt.ua != "" {
			hdr = append(hdr, "User-Agent", tt.ua)
		}
		r := fromAddr(t, n, tt.from, "GET", "/img/"+strconv.Itoa(len(seen()))+".png", append(hdr, "Host", "www.example.test")...)
		if r.StatusCode != tt.want || (tt.detail != "" && r.cacheStatus() != "meshcdn; detail="+tt.detail) {
			t.Errorf("from %s, Referer %q, User-Agent %q: %d %q; want %d %s", tt.from, tt.referer, tt.ua, r.StatusCode, r.cacheStatus(), tt.want, tt.detail)
		}
	}
	if got := seen(); len(got) != 3 {
		t.Errorf("the origin saw %q; want the three allowed requests only", got)
	}
}

// TestRateLimit: 60 quick requests from one client with 20 per second and
// bursts of 20 get 429s with Retry-After; a client at another address is
// served meanwhile.
func TestAccessRateLimit(t *testing.T) {
	o, _ := recordingOrigin(t)
	n := startNode(t, nil, accessSite(o, t, access.Config{RateLimit: &access.RateLimitConfig{Requests: 20, Per: units.Duration(time.Second), Burst: 20}}))
	limited := 0
	for range 60 {
		r := fromAddr(t, n, "127.0.0.2", "GET", "/a.css", "Host", "www.example.test")
		switch r.StatusCode {
		case 200:
		case 429:
			limited++
			if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || r.cacheStatus() != "meshcdn; detail=rate-limited" {
				t.Fatalf("429 with Retry-After %q, Cache-Status %q", r.Header.Get("Retry-After"), r.cacheStatus())
			}
		default:
			t.Fatalf("status %d", r.StatusCode)
		}
	}
	if limited == 0 {
		t.Error("no request of 60 was limited")
	}
	if r := fromAddr(t, n, "127.0.0.3", "GET", "/a.css", "Host", "www.example.test"); r.StatusCode != 200 {
		t.Errorf("another client: %d", r.StatusCode)
	}
	if v := labelledValue(t, n, "meshcdn_rate_limited_total", "www.example.test"); v != float64(limited) {
		t.Errorf("meshcdn_rate_limited_total = %v; want %d", v, limited)
	}
}

// seriesValue reads the counter name with exactly labels.
func seriesValue(t testing.TB, n *Node, name string, labels map[string]string) float64 {
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
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if maps.Equal(got, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// BenchmarkSignedHit is a 1 KiB hit through a site with a type A signed URL
// (the signature checked and removed on every request) beside the same hit
// through a site without access rules.
func BenchmarkSignedHit(b *testing.B) {
	body := make([]byte, 1<<10)
	o := newOrigin(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		_, _ = w.Write(body)
	})
	auth := access.URLAuthConfig{Type: "A", Key: "bench-key-000001"}
	n := startNode(b, nil, Config{Logger: slog.New(slog.DiscardHandler), Sites: []site.Config{
		{Hosts: []string{"signed.example"}, Origins: []site.OriginConfig{{URL: o.url(b).String()}}, Access: access.Config{URLAuth: &auth}},
		{Hosts: []string{"plain.example"}, Origins: []site.OriginConfig{{URL: o.url(b).String()}}}}})
	u, _ := url.Parse("http://signed.example/obj.bin")
	signed, err := access.Sign(auth, u, time.Now(), "0123456789abcdef0123456789abcdef", "0")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, url string }{{"plain", "http://plain.example/obj.bin"}, {"signed-A", signed.String()}} {
		req := httptest.NewRequest("GET", c.url, nil)
		w := &discard{h: http.Header{}}
		n.ServeHTTP(w, req) // fill
		w = &discard{h: http.Header{}}
		n.ServeHTTP(w, req)
		if w.h.Get("Cache-Status") != "meshcdn; hit" {
			b.Fatalf("%s: not a hit: %v", c.name, w.h)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				n.ServeHTTP(w, req)
			}
		})
	}
}
