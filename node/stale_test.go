package node

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/site"
)

// TestAllOriginsDown is acceptance 3: with every origin down, stored objects
// are served stale with 200; uncached ones get a clear 502; must-revalidate
// entries get the error.
func TestAllOriginsDown(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		cc := "max-age=0" // stored, stale at once
		if strings.Contains(r.URL.Path, "strict") {
			cc = "max-age=0, must-revalidate"
		}
		w.Header().Set("Cache-Control", cc)
		w.Header().Set("ETag", `"1"`)
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	n := startNode(t, o, Config{})
	do(t, n, "GET", "/a.css")
	do(t, n, "GET", "/strict.css")
	o.Close()

	r := do(t, n, "GET", "/a.css")
	if r.StatusCode != 200 || r.body != "body of /a.css" {
		t.Errorf("stale entry: %d %q", r.StatusCode, r.body)
	}
	wantStatus(t, r, "meshcdn; hit; fwd=stale; fwd-status=502; detail=stale-if-error")
	if r := do(t, n, "GET", "/strict.css"); r.StatusCode != http.StatusBadGateway {
		t.Errorf("must-revalidate entry: %d %q", r.StatusCode, r.body)
	}
	r = do(t, n, "GET", "/never-seen.css")
	if r.StatusCode != http.StatusBadGateway || r.body != "meshcdn: the origin could not be reached\n" {
		t.Errorf("uncached: %d %q", r.StatusCode, r.body)
	}
	if v := counterValue(t, n, "meshcdn_requests_total"); v != 5 {
		t.Errorf("%v requests counted", v)
	}
}

// TestStaleIfErrorOn5xx: an origin answering 5xx is replaced by the stale
// entry; with stale_if_error: 0 and no directive, the 5xx goes through.
func TestStaleIfErrorOn5xx(t *testing.T) {
	var broken atomic.Bool
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			http.Error(w, "database down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("ETag", `"1"`)
		_, _ = w.Write([]byte("good"))
	})
	zero := units.Duration(0)
	n := startNode(t, nil, Config{Sites: []site.Config{
		{Hosts: []string{"a.example"}, Origins: []site.OriginConfig{{URL: o.URL}}},
		{Hosts: []string{"b.example"}, Origins: []site.OriginConfig{{URL: o.URL}}, StaleIfError: &zero},
	}})
	do(t, n, "GET", "/p.js", "Host", "a.example")
	do(t, n, "GET", "/p.js", "Host", "b.example")
	broken.Store(true)
	r := do(t, n, "GET", "/p.js", "Host", "a.example")
	if r.StatusCode != 200 || r.body != "good" {
		t.Errorf("a: %d %q", r.StatusCode, r.body)
	}
	wantStatus(t, r, "meshcdn; hit; fwd=stale; fwd-status=503; detail=stale-if-error")
	if r := do(t, n, "GET", "/p.js", "Host", "b.example"); r.StatusCode != 503 {
		t.Errorf("b (stale_if_error: 0): %d %q", r.StatusCode, r.body)
	}
}

// TestStaleWhileRevalidate is acceptance 4: clients are answered from the stale
// entry without waiting for the origin, and 100 concurrent requests make
// exactly one background refresh.
func TestStaleWhileRevalidate(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n > 1 {
			select { // the refresh waits until every client has its answer
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		// The first version is stale at once; the refresh stays fresh, so
		// that what clients get next does not refresh again and again.
		cc := "max-age=0, stale-while-revalidate=600"
		if n > 1 {
			cc = "max-age=600"
		}
		w.Header().Set("Cache-Control", cc)
		w.Header().Set("ETag", `"v`+string(rune('0'+n))+`"`)
		_, _ = w.Write([]byte("version " + string(rune('0'+n))))
	})
	n := startNode(t, o, Config{})
	do(t, n, "GET", "/swr.js")

	var wg sync.WaitGroup
	var wrong atomic.Int64
	for range 100 {
		wg.Go(func() {
			r := doMaybe(t, n, "GET", "/swr.js")
			if r.Response == nil || r.body != "version 1" ||
				r.cacheStatus() != "meshcdn; hit; fwd=stale; detail=stale-while-revalidate" {
				wrong.Add(1)
			}
		})
	}
	wg.Wait() // would block forever if a client waited for the held refresh
	if wrong.Load() != 0 {
		t.Errorf("%d of 100 clients were not served stale at once", wrong.Load())
	}
	if c := calls.Load(); c != 2 {
		t.Errorf("origin saw %d requests, want the fill and one refresh", c)
	}
	close(release)
	eventually(t, 5*time.Second, func() bool { return do(t, n, "GET", "/swr.js").body == "version 2" })
	if c := calls.Load(); c > 4 {
		t.Errorf("origin saw %d requests", c)
	}
}

// TestNoStaleForRevalidateDirectives: must-revalidate, proxy-revalidate,
// s-maxage and no-cache entries are never served stale, even inside a site's
// stale-while-revalidate window.
func TestNoStaleForRevalidateDirectives(t *testing.T) {
	var version atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		v := version.Add(1)
		w.Header().Set("Cache-Control", r.URL.Query().Get("cc"))
		_, _ = w.Write([]byte{byte('0' + v)})
	})
	n := startNode(t, nil, Config{Sites: []site.Config{{Hosts: []string{"a.example"},
		Origins: []site.OriginConfig{{URL: o.URL}}, StaleWhileRevalidate: units.Duration(time.Hour)}}})
	for _, cc := range []string{"max-age=0, must-revalidate", "max-age=0, proxy-revalidate", "s-maxage=0", "no-cache"} {
		p := "/x.css?cc=" + strings.ReplaceAll(cc, " ", "")
		first := do(t, n, "GET", p, "Host", "a.example")
		second := do(t, n, "GET", p, "Host", "a.example")
		if second.body == first.body || strings.Contains(second.cacheStatus(), "stale-while-revalidate") {
			t.Errorf("%s: served stale: %q then %q (%s)", cc, first.body, second.body, second.cacheStatus())
		}
	}
}
