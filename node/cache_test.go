package node

import (
	"net/http"
	"strings"
	"testing"

	"github.com/meshcdn/meshcdn/node/site"
)

func TestMissThenHit(t *testing.T) {
	o := newOrigin(t, static("body { color: red }", "public, max-age=300"))
	n := startNode(t, o, Config{})
	first := do(t, n, "GET", "/css/site.css")
	wantStatus(t, first, "meshcdn; fwd=uri-miss; fwd-status=200; stored")
	second := do(t, n, "GET", "/css/site.css")
	wantStatus(t, second, "meshcdn; hit")
	wantHits(t, o, 1)
	for _, r := range []response{first, second} {
		if r.StatusCode != 200 || r.body != "body { color: red }" {
			t.Errorf("got %d %q", r.StatusCode, r.body)
		}
		if r.Header.Get("Via") != "1.1 meshcdn" || r.Header.Get("Age") == "" {
			t.Errorf("Via %q Age %q", r.Header.Get("Via"), r.Header.Get("Age"))
		}
		if r.ContentLength != int64(len("body { color: red }")) {
			t.Errorf("Content-Length %d", r.ContentLength)
		}
	}
	if r := do(t, n, "GET", "/css/site.css?v=2"); !strings.Contains(r.cacheStatus(), "uri-miss") {
		t.Errorf("another query is another object: %q", r.cacheStatus())
	}
}

func TestUnknownHostIsNotProxied(t *testing.T) {
	o := newOrigin(t, static("x", "max-age=60"))
	n := startNode(t, nil, Config{Sites: []site.Config{{Hosts: []string{"cdn.example.com"}, Origins: []site.OriginConfig{{URL: o.URL}}}}})
	r := do(t, n, "GET", "/a.css", "Host", "evil.example.net")
	if r.StatusCode != http.StatusNotFound || !strings.Contains(r.body, `no site is configured for host "evil.example.net"`) {
		t.Errorf("unknown host: %d %q", r.StatusCode, r.body)
	}
	wantHits(t, o, 0)
	if r := do(t, n, "GET", "/a.css", "Host", "CDN.example.com:8080"); r.StatusCode != 200 || r.body != "x" {
		t.Errorf("configured host: %d %q", r.StatusCode, r.body)
	}
	wantHits(t, o, 1)
}

// TestUpstreamFieldsOfFills checks what the origin sees on a fill: the client's
// Host, forwarding fields, no client conditionals, normalised Accept-Encoding.
func TestUpstreamFieldsOfFills(t *testing.T) {
	var got http.Header
	var host string
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		got, host = r.Header.Clone(), r.Host
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("x"))
	})
	n := startNode(t, o, Config{})
	do(t, n, "GET", "/a.js", "Host", "www.example.com", "If-None-Match", `"zz"`, "Range", "bytes=0-0",
		"Accept-Encoding", "gzip, deflate, br", "Connection", "X-Hop", "X-Hop", "1", "Cache-Control", "no-cache")
	if host != "www.example.com" {
		t.Errorf("origin Host %q", host)
	}
	for _, f := range []string{"If-None-Match", "Range", "X-Hop", "Cache-Control"} {
		if got.Get(f) != "" {
			t.Errorf("origin saw %s: %q", f, got.Get(f))
		}
	}
	if got.Get("Accept-Encoding") != "br, gzip, deflate" || got.Get("Via") != "1.1 meshcdn" ||
		got.Get("X-Forwarded-For") != "127.0.0.1" || got.Get("X-Forwarded-Host") != "www.example.com" {
		t.Errorf("origin saw %v", got)
	}
}
