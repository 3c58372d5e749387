package node

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/meshcdn/meshcdn/node/site"
)

// TestHostSpellings: every spelling of a site's host that shares its cache
// key (case, a port, a trailing dot) reaches the origin as the one
// normalised host, in Host and X-Forwarded-Host, so an origin that builds
// links from the Host cannot store a page that names the spelling of one
// client for all the others.
func TestHostSpellings(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Host+" "+r.Header.Get("X-Forwarded-Host"))
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte(`<a href="http://` + r.Host + `/next">`))
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{Hosts: []string{"www.example.test"},
		Origins: []site.OriginConfig{{URL: o.url(t).String()}}, Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}}}})
	for _, host := range []string{"www.example.test:1337", "WWW.EXAMPLE.TEST.", "www.Example.test:80"} {
		if r := do(t, n, "GET", "/page.css", "Host", host); !strings.Contains(r.body, `"http://www.example.test/next"`) {
			t.Errorf("Host %q: %q", host, r.body)
		}
		do(t, n, "GET", "/api/x", "Host", host)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 4 {
		t.Fatalf("the origin saw %d requests (%v); want one fill and three bypasses", len(seen), seen)
	}
	for _, s := range seen {
		if s != "www.example.test www.example.test" {
			t.Errorf("the origin saw Host and X-Forwarded-Host %q; want the normalised host", s)
		}
	}
}

// TestDotSegments: dot segments (also percent-encoded) and runs of slashes
// cannot dodge a bypass rule: the path is normalised before the rules, the
// key and the origin see it; merge_slashes: false keeps the slashes.
func TestDotSegments(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.EscapedPath())
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte("personal page of " + r.Header.Get("Cookie")))
	})
	keep := false
	sites := []site.Config{
		{Hosts: []string{"a.test"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
			Rules: []site.RuleConfig{{PathPrefix: "/dyn/", Action: "bypass"}, {PathPrefix: "/", Action: "cache", TTL: 3600e9}}},
		{Hosts: []string{"b.test"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}}, MergeSlashes: &keep,
			Rules: []site.RuleConfig{{PathPrefix: "/dyn/", Action: "bypass"}, {PathPrefix: "/", Action: "cache", TTL: 3600e9}}},
	}
	n := startNode(t, nil, Config{Sites: sites})
	for _, p := range []string{"/static/../dyn/x", "/static/%2e%2e/dyn/x", "/static/%2E%2e/dyn/x", "/./dyn/x", "//dyn/x", "/dyn//x"} {
		for range 2 {
			r := do(t, n, "GET", p, "Host", "a.test", "Cookie", "session="+p)
			if !strings.Contains(r.cacheStatus(), "fwd=bypass") || r.body != "personal page of session="+p {
				t.Errorf("%s: %s %q; want the bypass rule of /dyn/", p, r.cacheStatus(), r.body)
			}
		}
	}
	mu.Lock()
	for _, s := range seen {
		if s != "/dyn/x" {
			t.Errorf("the origin saw %q; want /dyn/x", s)
		}
	}
	seen = nil
	mu.Unlock()
	// Without merging, "//dyn/x" is its own path, cached by the "/" rule.
	do(t, n, "GET", "//dyn/x", "Host", "b.test")
	if r := do(t, n, "GET", "//dyn/x", "Host", "b.test"); !strings.HasPrefix(r.cacheStatus(), "meshcdn; hit") {
		t.Errorf("merge_slashes: false: %s", r.cacheStatus())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "//dyn/x" {
		t.Errorf("merge_slashes: false: the origin saw %v", seen)
	}
}
