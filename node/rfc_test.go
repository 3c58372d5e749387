package node

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/site"
)

// TestTargetedCacheControl (RFC 9213): Meshcdn-Cache-Control, else
// CDN-Cache-Control, governs what the edge stores and for how long, while
// browsers keep the origin's Cache-Control; the targeted field the edge
// used is not forwarded to clients (to peers it is: they decide by it too).
func TestTargetedCacheControl(t *testing.T) {
	var hits atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "no-store") // for browsers
		switch {
		case strings.HasPrefix(r.URL.Path, "/own/"):
			w.Header().Set("Meshcdn-Cache-Control", "max-age=600")
			w.Header().Set("CDN-Cache-Control", "no-store")
		case strings.HasPrefix(r.URL.Path, "/cdn/"):
			w.Header().Set("CDN-Cache-Control", "max-age=600")
		case strings.HasPrefix(r.URL.Path, "/malformed/"):
			w.Header().Set("CDN-Cache-Control", "max-age=10000, &&&&&") // no Structured Field
		case strings.HasPrefix(r.URL.Path, "/mistyped/"):
			w.Header().Set("CDN-Cache-Control", `max-age="10000"`) // a string where an integer belongs
		case strings.HasPrefix(r.URL.Path, "/fallback/"):
			w.Header().Set("Meshcdn-Cache-Control", "max-age=-5")
			w.Header().Set("CDN-Cache-Control", "max-age=600")
		}
		_, _ = w.Write([]byte("x"))
	})
	n := startNode(t, o, Config{})
	for _, c := range []struct {
		path, drop, keep string
		hit              bool
	}{
		{"/own/a.css", "Meshcdn-Cache-Control", "Cdn-Cache-Control", true},
		{"/cdn/a.css", "Cdn-Cache-Control", "", true},
		{"/plain/a.css", "", "", false},
		// An invalid targeted field is ignored (RFC 9213 §2.1): the next
		// one, else Cache-Control, decides.
		{"/malformed/a.css", "", "", false},
		{"/mistyped/a.css", "", "", false},
		{"/fallback/a.css", "Cdn-Cache-Control", "", true},
	} {
		do(t, n, "GET", c.path)
		r := do(t, n, "GET", c.path)
		if got := strings.HasPrefix(r.cacheStatus(), "meshcdn; hit"); got != c.hit {
			t.Errorf("%s: %s; want hit %v", c.path, r.cacheStatus(), c.hit)
		}
		if r.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: the client got Cache-Control %q", c.path, r.Header.Get("Cache-Control"))
		}
		if c.drop != "" && r.Header.Get(c.drop) != "" {
			t.Errorf("%s: %s was forwarded to the client", c.path, c.drop)
		}
		if c.keep != "" && r.Header.Get(c.keep) == "" {
			t.Errorf("%s: %s, which the edge did not use, was dropped", c.path, c.keep)
		}
	}
	if hits.Load() != 9 {
		t.Errorf("the origin served %d requests; want 9 (three stored, three twice)", hits.Load())
	}
}

// TestNotModifiedWithCookie: a 304 that sets a cookie still refreshes the
// stored response (the cookie is not stored with it), and the next
// clients get the stored response without that cookie.
func TestNotModifiedWithCookie(t *testing.T) {
	var n304 atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"e1"`)
		w.Header().Set("Cache-Control", "max-age=0")
		if r.Header.Get("If-None-Match") == `"e1"` {
			n304.Add(1)
			w.Header().Set("Set-Cookie", "visitor=42")
			w.Header().Set("Cache-Control", "max-age=600")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = w.Write([]byte("shared"))
	})
	n := startNode(t, o, Config{})
	do(t, n, "GET", "/v.css")
	r := do(t, n, "GET", "/v.css")
	wantStatus(t, r, "meshcdn; fwd=stale; fwd-status=304; stored")
	r = do(t, n, "GET", "/v.css")
	wantStatus(t, r, "meshcdn; hit")
	if r.body != "shared" || r.Header.Get("Set-Cookie") != "" || n304.Load() != 1 {
		t.Errorf("after a 304 with Set-Cookie: %q, Set-Cookie %q, %d revalidations", r.body, r.Header.Get("Set-Cookie"), n304.Load())
	}
}

// TestVaryAcceptLanguage: Accept-Language values of equal preference in
// another order or spelling share one variant.
func TestVaryAcceptLanguage(t *testing.T) {
	var hits atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Vary", "Accept-Language")
		_, _ = w.Write([]byte("x"))
	})
	n := startNode(t, o, Config{})
	for _, al := range []string{"en, fr", "fr,en", "FR, EN"} {
		do(t, n, "GET", "/l.css", "Accept-Language", al)
	}
	do(t, n, "GET", "/l.css", "Accept-Language", "fr;q=0.5, en")
	if hits.Load() != 2 {
		t.Errorf("the origin served %d requests; want 2 variants", hits.Load())
	}
}

// TestQualifiedNoCacheFields: fields named by no-cache="f" or private="f"
// reach the client whose request fetched the response, and no one the
// stored response is reused for.
func TestQualifiedNoCacheFields(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", `max-age=600, no-cache="X-Token", private="X-User"`)
		w.Header().Set("X-Token", "t1")
		w.Header().Set("X-User", "alice")
		_, _ = w.Write([]byte("page"))
	})
	n := startNode(t, o, Config{})
	first := do(t, n, "GET", "/q.css")
	if first.Header.Get("X-Token") != "t1" || first.Header.Get("X-User") != "alice" {
		t.Errorf("the first response lacks its own fields: %v", first.Header)
	}
	again := do(t, n, "GET", "/q.css")
	wantStatus(t, again, "meshcdn; hit")
	if again.Header.Get("X-Token") != "" || again.Header.Get("X-User") != "" || again.body != "page" {
		t.Errorf("a reused response kept the named fields: %v", again.Header)
	}
}

// TestHeuristicFreshness (RFC 9111 §4.2.2): a response with Last-Modified
// and no explicit freshness is stored for 10% of its age since
// Last-Modified by default, under any rule that caches (the default-origin
// rule too), and Cache-Status says the freshness was guessed; a site sets
// its own factor, or turns it off (static rules' too). Without
// Last-Modified the default-origin rule stores nothing.
func TestHeuristicFreshness(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		switch r.URL.Path {
		case "/doc", "/style.css":
			w.Header().Set("Last-Modified", now.Add(-24*time.Hour).UTC().Format(http.TimeFormat))
		case "/young":
			// 10% of 500 s is 50 s, and it is 100 s old already.
			w.Header().Set("Last-Modified", now.Add(-500*time.Second).UTC().Format(http.TimeFormat))
			w.Header().Set("Age", "100")
		}
		w.Header().Set("Content-Type", "text/css")
		_, _ = io.WriteString(w, "body of "+r.URL.Path)
	})
	siteFor := func(host string, h *site.HeuristicConfig) site.Config {
		return site.Config{Hosts: []string{host}, Origins: []site.OriginConfig{{URL: o.url(t).String()}}, Heuristic: h}
	}
	n := startNode(t, nil, Config{Sites: []site.Config{
		siteFor("default.example.test", nil),
		siteFor("factor.example.test", &site.HeuristicConfig{Factor: 0.5}),
		siteFor("off.example.test", &site.HeuristicConfig{Off: true}),
	}})
	for _, c := range []struct {
		host, path   string
		first, again string // Cache-Status
	}{
		{"default.example.test", "/doc", "meshcdn; fwd=uri-miss; fwd-status=200; stored; detail=heuristic", "meshcdn; hit; detail=heuristic"},
		{"default.example.test", "/young", "meshcdn; fwd=uri-miss; fwd-status=200; stored; detail=heuristic", "meshcdn; fwd=stale; fwd-status=200; stored; detail=heuristic"},
		{"default.example.test", "/nolm", "meshcdn; fwd=uri-miss; fwd-status=200; detail=no-freshness", "meshcdn; fwd=bypass; detail=hit-for-pass"},
		{"factor.example.test", "/young", "meshcdn; fwd=uri-miss; fwd-status=200; stored; detail=heuristic", "meshcdn; hit; detail=heuristic"},
		{"off.example.test", "/doc", "meshcdn; fwd=uri-miss; fwd-status=200; detail=no-freshness", "meshcdn; fwd=bypass; detail=hit-for-pass"},
		{"off.example.test", "/style.css", "meshcdn; fwd=uri-miss; fwd-status=200; detail=no-freshness", "meshcdn; fwd=bypass; detail=hit-for-pass"},
	} {
		for i, want := range []string{c.first, c.again} {
			r := do(t, n, "GET", c.path, "Host", c.host)
			if r.cacheStatus() != want || r.body != "body of "+c.path {
				t.Errorf("%s%s, request %d: Cache-Status %q, body %q; want %q", c.host, c.path, i+1, r.cacheStatus(), r.body, want)
			}
		}
	}
}
