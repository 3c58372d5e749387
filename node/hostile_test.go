package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/node/site"
	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
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

// TestCacheDeception: a personal page behind a static-looking path
// (/account/profile/x.css, answered as text/html without Cache-Control) is
// not stored, for a client with a session cookie or without; the next
// client gets its own answer from the origin. Static files with the
// origin's freshness are stored for clients with cookies; a rule may
// opt out of either check. Explain says what a response must have.
func TestCacheDeception(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/account/"):
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte("profile of " + r.Header.Get("Cookie")))
		case strings.HasPrefix(r.URL.Path, "/assets/"):
			w.Header().Set("Cache-Control", "max-age=600")
			w.Header().Set("Content-Type", "text/css")
			_, _ = w.Write([]byte("body{}"))
		default: // no Cache-Control: heuristic freshness under the static rule
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("page for " + r.Header.Get("Cookie")))
		}
	})
	off := false
	n := startNode(t, nil, Config{AdminAddr: "127.0.0.1:0", Sites: []site.Config{{Hosts: []string{"a.test"},
		Origins: []site.OriginConfig{{URL: o.url(t).String()}},
		Rules:   []site.RuleConfig{{PathPrefix: "/legacy/", Action: "cache", TTL: 3600e9, CheckContentType: &off, IgnoreCookie: true}}}}})
	for _, cookie := range []string{"session=victim", ""} {
		hdr := []string{"Host", "a.test"}
		if cookie != "" {
			hdr = append(hdr, "Cookie", cookie)
		}
		r := do(t, n, "GET", "/account/profile/x.css", hdr...)
		want := "detail=cookie"
		if cookie == "" {
			want = "detail=content-type-mismatch"
		}
		if strings.Contains(r.cacheStatus(), "; stored") || !strings.Contains(r.cacheStatus(), want) {
			t.Errorf("cookie %q: %s; want not stored, %s", cookie, r.cacheStatus(), want)
		}
	}
	if r := do(t, n, "GET", "/account/profile/x.css", "Host", "a.test"); r.body != "profile of " {
		t.Errorf("the next client without a cookie got %q", r.body)
	}
	wantHits(t, o, 3)
	// A stylesheet with the origin's freshness is shared, cookie or not.
	do(t, n, "GET", "/assets/site.css", "Host", "a.test", "Cookie", "session=a")
	wantStatus(t, do(t, n, "GET", "/assets/site.css", "Host", "a.test", "Cookie", "session=b"), "meshcdn; hit")
	// The opt-outs: this rule stores what the origin sends, as it is told.
	do(t, n, "GET", "/legacy/x.css", "Host", "a.test", "Cookie", "session=a")
	if r := do(t, n, "GET", "/legacy/x.css", "Host", "a.test"); !strings.HasPrefix(r.cacheStatus(), "meshcdn; hit") || r.body != "page for session=a" {
		t.Errorf("opted-out rule: %s %q", r.cacheStatus(), r.body)
	}
	ac, _ := adminClient(t, n.AdminAddr())
	ex, err := ac.Explain(t.Context(), &adminv1.ExplainRequest{Url: "http://a.test/account/profile/x.css", Headers: map[string]string{"Cookie": "s=1"}})
	if err != nil || len(ex.GetStoreConditions()) != 2 || !strings.HasPrefix(ex.GetStoreConditions()[0], "cookie: ") ||
		!strings.HasPrefix(ex.GetStoreConditions()[1], "content-type-mismatch: ") {
		t.Errorf("Explain: %v %v", ex.GetStoreConditions(), err)
	}
}

// TestRequestFraming: Content-Length with Transfer-Encoding is answered 400
// and the connection closed (RFC 9112 §6.1), so a smuggled second request
// is never served; a bare-LF chunked body is 400, not an origin error; a
// body that trickles in is cut with 408 and the origin request ends.
func TestRequestFraming(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s %v", r.Method, r.URL.Path, err != nil))
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	})
	n := startNode(t, o, Config{BodyTimeout: 300 * time.Millisecond})
	smuggle := "POST /api/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
		"GET /smuggled.css HTTP/1.1\r\nHost: x\r\n\r\n"
	if got := testutil.RawHTTP(t, n.HTTPAddr(), smuggle, 2); len(got) != 1 || got[0] != "400 Bad Request" {
		t.Errorf("CL+TE: %v; want 400 and the connection closed", got)
	}
	// HTTP/1.0 with both (net/http drops a 1.0 request's Transfer-Encoding
	// and reads by Content-Length), and codings other than one chunked line.
	for _, raw := range []string{
		"POST /api/a10 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
			"GET /smuggled10.css HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET /a10.css HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /api/a11 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" +
			"GET /smuggled11.css HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /api/a11 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x-unknown\r\n\r\n0\r\n\r\n",
	} {
		if got := testutil.RawHTTP(t, n.HTTPAddr(), raw, 2); len(got) != 1 || got[0] != "400 Bad Request" {
			t.Errorf("%q: %v; want 400 and the connection closed", raw, got)
		}
	}
	if got := testutil.RawHTTP(t, n.HTTPAddr(), "POST /api/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", 1); len(got) != 1 || got[0] != "400 Bad Request" {
		t.Errorf("bare-LF chunks: %v; want 400", got)
	}
	c, err := net.Dial("tcp", n.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST /api/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	status := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			status <- err.Error()
			return
		}
		status <- resp.Status
	}()
	start := time.Now()
	var got string
	for got == "" {
		_, _ = c.Write([]byte("a"))
		select {
		case got = <-status:
		case <-time.After(100 * time.Millisecond):
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("a trickled body was never cut")
		}
	}
	if got != "408 Request Timeout" {
		t.Errorf("a trickled body: %q; want 408", got)
	}
	eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(seen, "POST /api/slow true")
	})
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if strings.Contains(s, "smuggled") || strings.Contains(s, "/api/a") || strings.Contains(s, "a10") {
			t.Errorf("the origin saw %q", s)
		}
	}
}

// TestHostileMix is acceptance 2 of the hardening: 200 hostile requests of
// the kinds above (host spellings with forged forwarding fields, cache
// deception with a cookie, dot segments around a bypass rule, smuggling
// framings, bare-LF chunks, trickled bodies) interleaved with normal ones
// at a 3-node cluster: every normal client gets exactly what the origin
// serves for the canonical request, and the nodes keep serving in bounded
// memory.
func TestHostileMix(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch {
		case strings.HasPrefix(r.URL.Path, "/dyn/"):
			w.Header().Set("Cache-Control", "no-store")
			_, _ = io.WriteString(w, "dynamic for "+r.Header.Get("Cookie"))
		case strings.HasPrefix(r.URL.Path, "/account/"):
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "profile of "+r.Header.Get("Cookie"))
		default:
			w.Header().Set("Cache-Control", "max-age=600")
			w.Header().Set("Content-Type", "text/css")
			_, _ = io.WriteString(w, "body of "+r.URL.Path+" at "+r.Host+" via "+r.Header.Get("X-Forwarded-Host"))
		}
	})
	sites := []site.Config{{Hosts: []string{"www.example.test"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
		Rules: []site.RuleConfig{{PathPrefix: "/dyn/", Action: "bypass"}}}}
	nodes := startCluster(t, o, 3, func(c *Config) { c.Sites, c.BodyTimeout = sites, 200*time.Millisecond })
	normal := func(i int) {
		t.Helper()
		n := nodes[i%3]
		p := fmt.Sprintf("/static/%d.css", i%20)
		r := do(t, n, "GET", p, "Host", "www.example.test")
		if want := "body of " + p + " at www.example.test via www.example.test"; r.body != want {
			t.Fatalf("a normal client at %s got %q; want %q", n.Name(), r.body, want)
		}
		r = do(t, n, "GET", "/account/profile/x.css", "Host", "www.example.test")
		if r.body != "profile of " {
			t.Fatalf("a client without a cookie got %q", r.body)
		}
	}
	hostile := []func(n *Node, i int){
		func(n *Node, i int) { // host spellings and forged forwarding fields
			do(t, n, "GET", fmt.Sprintf("/static/%d.css", i%20), "Host", "WWW.EXAMPLE.TEST.:1337",
				"X-Forwarded-Host", "evil.test", "Forwarded", "host=evil.test")
		},
		func(n *Node, i int) { // cache deception
			do(t, n, "GET", "/account/profile/x.css", "Host", "www.example.test", "Cookie", fmt.Sprintf("session=victim%d", i))
		},
		func(n *Node, i int) { // dot segments around the bypass rule
			do(t, n, "GET", "/static/%2e%2e/dyn/x.css", "Host", "www.example.test", "Cookie", "session=victim")
		},
		func(n *Node, i int) { // request smuggling
			testutil.RawHTTP(t, n.HTTPAddr(), "POST /dyn/a HTTP/1.1\r\nHost: www.example.test\r\nContent-Length: 4\r\n"+
				"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /static/1.css HTTP/1.1\r\nHost: www.example.test\r\nX-Forwarded-Host: evil.test\r\n\r\n", 2)
		},
		func(n *Node, i int) { // bare-LF chunks
			testutil.RawHTTP(t, n.HTTPAddr(), "POST /dyn/b HTTP/1.1\r\nHost: www.example.test\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", 1)
		},
		func(n *Node, i int) { // a trickled body, given up on by the client
			c, err := net.Dial("tcp", n.HTTPAddr())
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(c, "POST /dyn/c HTTP/1.1\r\nHost: www.example.test\r\nContent-Length: 100\r\n\r\nab")
			_ = c.Close()
		},
	}
	for i := range 200 {
		hostile[i%len(hostile)](nodes[(i/len(hostile))%3], i)
		normal(i)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("heap in use after 200 hostile and 400 normal requests: %d MiB", ms.HeapInuse>>20)
	if ms.HeapInuse > 256<<20 {
		t.Errorf("heap in use %d MiB", ms.HeapInuse>>20)
	}
}

// TestEmptyHost: a request with an empty Host is 400 (RFC 9112 §3.2), like
// a missing one, even with a default origin: nothing is fetched or stored.
func TestEmptyHost(t *testing.T) {
	o := newOrigin(t, static("x", "max-age=600"))
	n := startNode(t, o, Config{})
	if got := testutil.RawHTTP(t, n.HTTPAddr(), "GET /a.css HTTP/1.1\r\nHost: \r\n\r\n", 1); len(got) != 1 || got[0] != "400 Bad Request" {
		t.Errorf("an empty Host: %v; want 400", got)
	}
	wantHits(t, o, 0)
}

// TestReroutingFields: fields that an origin framework obeys as a second
// request line (IIS's X-Original-URL, the X-HTTP-Method family) never
// reach the origin, through a fill or a bypass, so one client cannot store
// another path's page under a key every client shares; a site that needs
// one names it in forward_headers.
func TestReroutingFields(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if v := r.Header.Get("X-Original-URL"); v != "" {
			p = v // as IIS URL Rewrite and Symfony route
		}
		mu.Lock()
		for _, f := range site.ReroutingFields {
			if v := r.Header.Get(f); v != "" {
				seen = append(seen, f+": "+v)
			}
		}
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Type", "text/css")
		_, _ = io.WriteString(w, "page "+p)
	})
	sites := []site.Config{
		{Hosts: []string{"www.example.test"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
			Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}},
		{Hosts: []string{"iis.example.test"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
			ForwardHeaders: []string{"X-Original-URL"}},
	}
	nodes := startCluster(t, nil, 2, func(c *Config) { c.Sites = sites })
	attack := []string{"Host", "www.example.test", "X-Original-URL", "/admin/secret", "X-Rewrite-URL", "/admin/secret",
		"X-HTTP-Method-Override", "DELETE", "X-HTTP-Method", "PUT", "X-Method-Override", "PATCH"}
	for i, n := range nodes { // the owner's fill and the other node's peer request
		p := fmt.Sprintf("/public%d.css", i)
		do(t, n, "GET", p, attack...)
		for _, m := range nodes {
			if r := do(t, m, "GET", p, "Host", "www.example.test"); r.body != "page "+p {
				t.Errorf("%s at %s after a re-routing request: %q", p, m.Name(), r.body)
			}
		}
	}
	do(t, nodes[0], "POST", "/api/x", attack...)
	mu.Lock()
	if len(seen) != 0 {
		t.Errorf("the origin saw %v", seen)
	}
	seen = nil
	mu.Unlock()
	if r := do(t, nodes[0], "GET", "/old.css", "Host", "iis.example.test", "X-Original-URL", "/new.css", "X-HTTP-Method-Override", "DELETE"); r.body != "page /new.css" {
		t.Errorf("forward_headers: X-Original-URL: %q", r.body)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, []string{"X-Original-Url: /new.css"}) {
		t.Errorf("forward_headers [X-Original-URL]: the origin saw %v", seen)
	}
}

// TestHalfClose: a client that shuts its side of the connection after
// sending its request (RFC 9112 §9.6: a half-close is not an abort), as
// `nc -N` and some scripted clients do, gets the whole response on a miss,
// a bypass and a POST, never an empty one that looks complete.
func TestHalfClose(t *testing.T) {
	halfClosed := make(chan struct{}, 1)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select {
		case <-halfClosed:
		case <-time.After(10 * time.Second):
		}
		// Time for the edge to read the client's EOF before this answers:
		// without the fix, the edge gives up on the client meanwhile.
		select {
		case <-r.Context().Done():
		case <-time.After(300 * time.Millisecond):
		}
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Type", "text/css")
		_, _ = io.WriteString(w, "answer to "+r.Method+" "+r.URL.Path+" "+string(body))
	})
	n := startNode(t, o, Config{Sites: []site.Config{{Hosts: []string{"www.example.test"},
		Origins: []site.OriginConfig{{URL: o.url(t).String()}}, Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}}}})
	for _, tt := range []struct{ name, raw, want string }{
		{"miss", "GET /a.css HTTP/1.1\r\nHost: www.example.test\r\n\r\n", "answer to GET /a.css "},
		{"bypass", "GET /api/x HTTP/1.1\r\nHost: www.example.test\r\n\r\n", "answer to GET /api/x "},
		{"post", "POST /api/form HTTP/1.1\r\nHost: www.example.test\r\nContent-Length: 5\r\n\r\nhello", "answer to POST /api/form hello"},
	} {
		c, err := net.DialTimeout("tcp", n.HTTPAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, tt.raw); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		halfClosed <- struct{}{}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("%s: %v; want the response", tt.name, err)
			c.Close()
			continue
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(body) != tt.want || resp.Header.Get("Cache-Status") == "" {
			t.Errorf("%s: %d %q (%v), Cache-Status %q; want 200 %q", tt.name, resp.StatusCode, body, err, resp.Header.Get("Cache-Status"), tt.want)
		}
		c.Close()
	}
}

// TestConnectionLimits: idle connections cannot pile up on a node. An
// address at max_connections_per_ip makes room by losing its longest-idle
// connection; with all of its connections busy its next one is closed at
// once, while other addresses are served; at max_connections the same
// holds for all addresses together. The metrics count both, a warning is
// logged, and the defaults follow the memory budget.
func TestConnectionLimits(t *testing.T) {
	if c := (Config{}).withDefaults(); c.MaxConnections != 4096 || c.MaxConnectionsPerIP != 256 {
		t.Errorf("defaults: max_connections %d, per ip %d; want 4096 and 256", c.MaxConnections, c.MaxConnectionsPerIP)
	}
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/hold") {
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	var logs testutil.SyncBuffer
	n := startNode(t, nil, Config{MaxConnections: 6, MaxConnectionsPerIP: 3,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Sites: []site.Config{{Hosts: []string{"www.example.test"}, Origins: []site.OriginConfig{{URL: o.url(t).String()}},
			Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}}}}})
	defer close(release)
	type conn struct {
		c  net.Conn
		br *bufio.Reader
	}
	dial := func(from string) conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", n.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		return conn{c, bufio.NewReader(c)}
	}
	send := func(c conn, path string) {
		if _, err := io.WriteString(c.c, "GET "+path+" HTTP/1.1\r\nHost: www.example.test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	get := func(c conn, path string) string {
		send(c, path)
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	closed := func(c conn) bool {
		_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.br.ReadByte()
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	idle := func(want int) {
		t.Helper()
		eventually(t, 5*time.Second, func() bool { return n.conns.Idle() == want })
	}
	// 127.0.0.2: three idle connections, then a fourth closes the first.
	var a []conn
	for i := range 3 {
		a = append(a, dial("127.0.0.2"))
		if got := get(a[i], "/x.css"); got != "ok" {
			t.Fatalf("connection %d of 127.0.0.2: %q", i, got)
		}
		idle(i + 1)
	}
	fourth := dial("127.0.0.2")
	if got := get(fourth, "/x.css"); got != "ok" {
		t.Fatalf("a fourth connection of 127.0.0.2 with idle ones: %q", got)
	}
	if !closed(a[0]) {
		t.Error("the longest-idle connection of 127.0.0.2 was not closed for its fourth")
	}
	// Its three connections busy: its next is closed at once; another
	// address is served.
	for _, c := range []conn{a[1], a[2], fourth} {
		send(c, "/api/hold")
	}
	for range 2 {
		send(dial("127.0.0.3"), "/api/hold")
	}
	eventually(t, 5*time.Second, func() bool { return n.conns.Open() == 5 && n.conns.Idle() == 0 })
	if c := dial("127.0.0.2"); !closed(c) {
		t.Error("a connection past max_connections_per_ip with none idle was not closed at once")
	}
	// The node's sixth connection, idle, makes room for a seventh; with all
	// six busy, the next is closed at once.
	sixth := dial("127.0.0.4")
	if got := get(sixth, "/x.css"); got != "ok" {
		t.Fatalf("127.0.0.4: %q", got)
	}
	idle(1)
	seventh := dial("127.0.0.5")
	if got := get(seventh, "/x.css"); got != "ok" {
		t.Fatalf("127.0.0.5 at max_connections with an idle one: %q", got)
	}
	if !closed(sixth) {
		t.Error("the idle connection was not closed for a new one at max_connections")
	}
	send(seventh, "/api/hold")
	eventually(t, 5*time.Second, func() bool { return n.conns.Open() == 6 && n.conns.Idle() == 0 })
	if c := dial("127.0.0.6"); !closed(c) {
		t.Error("a connection past max_connections with none idle was not closed at once")
	}
	for _, w := range []struct {
		name, reason string
		want         float64
	}{
		{"meshcdn_connections_refused_total", "max_connections_per_ip", 1},
		{"meshcdn_connections_refused_total", "max_connections", 1},
		{"meshcdn_connections_idle_closed_total", "max_connections_per_ip", 1},
		{"meshcdn_connections_idle_closed_total", "max_connections", 1},
	} {
		if v := seriesValue(t, n, w.name, map[string]string{"reason": w.reason}); v != w.want {
			t.Errorf("%s{reason=%s} = %v; want %v", w.name, w.reason, v, w.want)
		}
	}
	if !strings.Contains(logs.String(), "connection limit reached") {
		t.Errorf("no warning logged: %q", logs.String())
	}
}
