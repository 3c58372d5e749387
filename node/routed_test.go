package node

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/meshcdn/meshcdn/node/site"
)

// TestRoutedPath: a user the router sends to an edge by address
// (http://EDGE/_host/HOST/PATH) gets HOST's PATH from the one entry every
// edge keys it under (also when it kept HOST in its Host header), and the origin sees the site's host and the clean
// path; a request by the site's own name is never rewritten, and a routed
// path naming no host name is refused before any cache or origin work.
func TestRoutedPath(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Host+" "+r.URL.RequestURI())
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte("body of " + r.Host + r.URL.RequestURI()))
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{Hosts: []string{"www.example.test"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}}}}})

	r := do(t, n, "GET", "/_host/WWW.example.test/v/a%20b.mp4?x=1") // Host: the edge's address
	if r.StatusCode != http.StatusOK || r.body != "body of www.example.test/v/a%20b.mp4?x=1" {
		t.Fatalf("routed: %d %q", r.StatusCode, r.body)
	}
	wantStatus(t, r, "meshcdn; fwd=uri-miss")
	if r := do(t, n, "GET", "/v/a%20b.mp4?x=1", "Host", "www.example.test"); !strings.HasPrefix(r.cacheStatus(), "meshcdn; hit") {
		t.Errorf("the same object by the site's name: %q; want the routed request's entry", r.cacheStatus())
	}
	// A client that kept the site's Host across the redirect is served the
	// same; by its own name, a site's /_host/ path naming another host is a
	// path like any other.
	if r := do(t, n, "GET", "/_host/www.example.test/v/a%20b.mp4?x=1", "Host", "www.example.test"); !strings.HasPrefix(r.cacheStatus(), "meshcdn; hit") {
		t.Errorf("routed, with the site's Host: %q", r.cacheStatus())
	}
	if r := do(t, n, "GET", "/_host/other.test/x.css", "Host", "www.example.test"); r.body != "body of www.example.test/_host/other.test/x.css" {
		t.Errorf("by name: %q", r.body)
	}
	for _, p := range []string{"/_host/", "/_host/a%2Fb/x.css", "/_host/-x.test/x.css", "/_host/a_b.test/x"} {
		if r := do(t, n, "GET", p); r.StatusCode != http.StatusBadRequest || !strings.Contains(r.body, "not a host name") {
			t.Errorf("%s: %d %q; want 400", p, r.StatusCode, r.body)
		}
	}
	if r := do(t, n, "GET", "/_host/unknown.test/x.css"); r.StatusCode != http.StatusNotFound {
		t.Errorf("a host no site serves: %d", r.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"www.example.test /v/a%20b.mp4?x=1", "www.example.test /_host/other.test/x.css"}; strings.Join(seen, "|") != strings.Join(want, "|") {
		t.Errorf("the origin saw %q; want %q", seen, want)
	}
}
