package node

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
)

// TestPurgeCluster is acceptance 2 of the admin issue: purge by URL, prefix and
// tag through one node of 3: the next request for each purged object at every
// node goes to the origin; unrelated objects stay cached; every node reports a
// receipt.
func TestPurgeCluster(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		version := hits[r.URL.Path]
		mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age=600")
		if strings.HasPrefix(r.URL.Path, "/tagged/") {
			w.Header().Set("Surrogate-Key", "product-7 catalog")
		}
		fmt.Fprintf(w, "version %d", version)
	})
	nodes := startCluster(t, o, 3, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	paths := []string{"/one.css", "/static/a.js", "/static/b.js", "/tagged/x.png", "/keep.css", "/static2/c.js"}
	for _, p := range paths {
		for _, n := range nodes {
			do(t, n, "GET", p)
			wantStatus(t, do(t, n, "GET", p), "meshcdn; hit")
		}
	}
	ac, _ := adminClient(t, nodes[1].AdminAddr())
	resp, err := ac.Purge(t.Context(), &adminv1.PurgeRequest{
		Urls:     []string{"http://127.0.0.1/one.css"},
		Prefixes: []string{"http://127.0.0.1/static/"},
		Tags:     []string{"product-7"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetNodes()) != 3 || resp.GetPurgeId() == "" {
		t.Fatalf("receipts %v", resp)
	}
	for _, r := range resp.GetNodes() {
		if !r.GetApplied() || r.GetError() != "" {
			t.Errorf("receipt %v", r)
		}
	}
	mu.Lock()
	before := map[string]int{}
	for k, v := range hits {
		before[k] = v
	}
	mu.Unlock()
	// No node serves the old version of a purged object; the unrelated ones
	// are still cached everywhere.
	for _, n := range nodes {
		for _, p := range []string{"/one.css", "/static/a.js", "/static/b.js", "/tagged/x.png"} {
			if r := do(t, n, "GET", p); r.body != "version 2" {
				t.Errorf("%s at %s after the purge: %q (%s)", p, n.Name(), r.body, r.cacheStatus())
			}
		}
		for _, p := range []string{"/keep.css", "/static2/c.js"} {
			wantStatus(t, do(t, n, "GET", p), "meshcdn; hit")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range []string{"/one.css", "/static/a.js", "/static/b.js", "/tagged/x.png"} {
		if hits[p] != before[p]+1 {
			t.Errorf("%s: origin asked %d times after the purge, want once for the cluster", p, hits[p]-before[p])
		}
	}
}

// TestSoftPurge is acceptance 5 of the admin issue: a soft purge makes the
// next request revalidate (If-None-Match reaches the origin) instead of
// downloading again.
func TestSoftPurge(t *testing.T) {
	var inm []string
	var mu sync.Mutex
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inm = append(inm, r.Header.Get("If-None-Match"))
		mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = w.Write([]byte("body"))
	})
	n := startNode(t, o, Config{AdminAddr: "127.0.0.1:0", CacheDir: t.TempDir()})
	do(t, n, "GET", "/soft.css")
	// The fill stores the object after its last byte reaches the client;
	// a purge before that finds nothing (and the fill then stores nothing).
	eventually(t, 5*time.Second, func() bool { return do(t, n, "GET", "/soft.css").cacheStatus() == "meshcdn; hit" })
	ac, _ := adminClient(t, n.AdminAddr())
	if _, err := ac.Purge(t.Context(), &adminv1.PurgeRequest{Urls: []string{"http://127.0.0.1/soft.css"}, Soft: true}); err != nil {
		t.Fatal(err)
	}
	r := do(t, n, "GET", "/soft.css")
	wantStatus(t, r, "meshcdn; fwd=stale; fwd-status=304")
	if r.body != "body" {
		t.Errorf("body %q", r.body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(inm) != 2 || inm[1] != `"v1"` {
		t.Errorf("origin saw If-None-Match %q", inm)
	}
}

func TestPurgeArguments(t *testing.T) {
	o := newOrigin(t, static("x", "max-age=60"))
	n := startNode(t, o, Config{AdminAddr: "127.0.0.1:0"})
	ac, _ := adminClient(t, n.AdminAddr())
	for _, tt := range []struct {
		req  *adminv1.PurgeRequest
		want string
	}{
		{&adminv1.PurgeRequest{}, "urls, prefixes or tags"},
		{&adminv1.PurgeRequest{Urls: []string{"/relative"}}, "urls[0]:"},
		{&adminv1.PurgeRequest{Prefixes: []string{"x"}}, "prefixes[0]:"},
		{&adminv1.PurgeRequest{Tags: []string{"a b"}}, "tags[0]:"},
		{&adminv1.PurgeRequest{Urls: make([]string, 1001)}, "at most 1000"},
		{&adminv1.PurgeRequest{Urls: []string{"http://127.0.0.1/" + strings.Repeat("a", 2048)}}, "urls[0]: 2065 bytes, at most 2048"},
	} {
		_, err := ac.Purge(t.Context(), tt.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("Purge(%v) = %v, want InvalidArgument naming %q", tt.req, err, tt.want)
		}
	}
	if _, err := ac.GetPurge(t.Context(), &adminv1.GetPurgeRequest{PurgeId: "xyz"}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(err).Message(), "purge_id:") {
		t.Errorf("GetPurge of a malformed id: %v", err)
	}
	if _, err := ac.GetPurge(t.Context(), &adminv1.GetPurgeRequest{PurgeId: "0123456789abcdef"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetPurge of an unknown id: %v", err)
	}
}

// TestHTTPPurgeMethod: PURGE on the client listener purges one URL on every
// node, from allowed networks only.
func TestHTTPPurgeMethod(t *testing.T) {
	var mu sync.Mutex
	version := 0
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		version++
		v := version
		mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age=600")
		fmt.Fprintf(w, "version %d", v)
	})
	nodes := startCluster(t, o, 3, nil)
	for _, n := range nodes {
		do(t, n, "GET", "/p.css")
	}
	r := do(t, nodes[2], "PURGE", "/p.css")
	if r.StatusCode != 200 || strings.Count(r.body, "\tapplied\t") != 3 {
		t.Fatalf("PURGE: %d %q", r.StatusCode, r.body)
	}
	for _, n := range nodes {
		if r := do(t, n, "GET", "/p.css"); r.body != "version 2" {
			t.Errorf("%s after PURGE: %q", n.Name(), r.body)
		}
	}
	closed := startNode(t, o, Config{PurgeAllow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	do(t, closed, "GET", "/p.css")
	if r := do(t, closed, "PURGE", "/p.css"); r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "not allowed from 127.0.0.1") {
		t.Errorf("PURGE from a network not allowed: %d %q", r.StatusCode, r.body)
	}
	wantStatus(t, do(t, closed, "GET", "/p.css"), "meshcdn; hit")
}

// TestPurgeDuringRevalidation: a purge that lands while a stale entry's
// revalidation is at the origin wins over the 304 that answers it: the
// entry is not put back, and the next client gets the origin's new version.
func TestPurgeDuringRevalidation(t *testing.T) {
	asked, answer := make(chan struct{}, 1), make(chan struct{})
	var version atomic.Int64
	version.Store(1)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		v := version.Load()
		w.Header().Set("ETag", fmt.Sprintf(`"v%d"`, v))
		w.Header().Set("Cache-Control", "max-age=600")
		if r.Header.Get("If-None-Match") != "" {
			asked <- struct{}{}
			<-answer
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if v == 1 {
			w.Header().Set("Age", "700") // stored stale: the next request revalidates
		}
		fmt.Fprintf(w, "version %d", v)
	})
	n := startNode(t, o, Config{})
	if r := do(t, n, "GET", "/r.css"); r.body != "version 1" {
		t.Fatalf("first: %q", r.body)
	}
	done := make(chan response, 1)
	go func() { done <- doMaybe(t, n, "GET", "/r.css") }()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the stale entry was not revalidated")
	}
	if r := do(t, n, "PURGE", "/r.css"); r.StatusCode != http.StatusOK {
		t.Fatalf("PURGE: %d %s", r.StatusCode, r.body)
	}
	version.Store(2) // what the purge announced: the origin changed
	close(answer)
	<-done
	if r := do(t, n, "GET", "/r.css"); r.body != "version 2" {
		t.Errorf("after the purge: %q (Cache-Status %q); want the origin's new version", r.body, r.cacheStatus())
	}
}
