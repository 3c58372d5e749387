package router

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// edges is a Source over a list the test changes: what gossip would say.
type edges struct {
	mu     sync.Mutex
	list   []Edge
	owners map[string]string // region+"\x00"+key → owner
}

func (e *edges) Edges() []Edge {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Edge(nil), e.list...)
}

func (e *edges) Owner(region, key string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	o, ok := e.owners[region+"\x00"+key]
	return o, ok
}

func (e *edges) set(name string, change func(*Edge)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range e.list {
		if e.list[i].Name == name {
			change(&e.list[i])
		}
	}
}

// startRouter runs a router over src with the zone file zones until the
// test ends.
func startRouter(t *testing.T, src Source, zones string, change func(*Config)) *Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "zones.json")
	if err := os.WriteFile(path, []byte(zones), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{HTTPAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Zones: path, Domains: []string{"www.example.test"},
		ZonesCheck: 20 * time.Millisecond, Probe: -1}
	if change != nil {
		change(&cfg)
	}
	s, err := New(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// get asks the router for path with host, from the local address from,
// without following the redirect.
func get(t *testing.T, s *Server, method, host, path, from string, header http.Header) *http.Response {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://"+s.HTTPAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

const testZones = `{"regions": {
  "a": {"networks": ["127.0.0.2/32"], "coordinates": {"latitude": 30.27, "longitude": 120.15}, "fallback": ["b"]},
  "b": {"networks": ["127.0.0.3/32"], "coordinates": {"latitude": 50.11, "longitude": 8.68}}
}}`

// TestRedirect: a client is sent to the owner of its request's key in its
// region while that owner is healthy, else to the least loaded edge there,
// else to its fallback region; the routed path keeps the host; a trusted
// proxy's X-Forwarded-For places the client; other hosts, methods and a
// mesh without healthy edges get clear refusals.
func TestRedirect(t *testing.T) {
	src := &edges{list: []Edge{
		{Name: "a1", Region: "a", HTTPAddr: "127.0.0.11:8080", State: "alive", Ready: true, Load: 5},
		{Name: "a2", Region: "a", HTTPAddr: "127.0.0.12:8080", State: "alive", Ready: true, Load: 1},
		{Name: "b1", Region: "b", HTTPAddr: "127.0.0.21:8080", State: "alive", Ready: true},
	}, owners: map[string]string{"a\x00www.example.test/v/1.mp4?q=1": "a1"}}
	s := startRouter(t, src, testZones, func(c *Config) { c.TrustProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")} })

	loc := func(r *http.Response) string {
		t.Helper()
		if r.StatusCode != http.StatusFound {
			t.Fatalf("status %d; want 302", r.StatusCode)
		}
		if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
			t.Errorf("Cache-Control %q: a redirect that depends on the client must not be shared", cc)
		}
		return r.Header.Get("Location")
	}
	if got, want := loc(get(t, s, "GET", "www.example.test", "/v/1.mp4?q=1", "127.0.0.2", nil)), "http://127.0.0.11:8080/_host/www.example.test/v/1.mp4?q=1"; got != want {
		t.Errorf("to the owner: %s; want %s", got, want)
	}
	if got, want := loc(get(t, s, "HEAD", "WWW.example.test:80", "/v/2.mp4", "127.0.0.2", nil)), "http://127.0.0.12:8080/_host/www.example.test/v/2.mp4"; got != want {
		t.Errorf("no owner known: the least loaded edge: %s; want %s", got, want)
	}
	src.set("a1", func(e *Edge) { e.State = "draining" })
	if got := loc(get(t, s, "GET", "www.example.test", "/v/1.mp4?q=1", "127.0.0.2", nil)); !strings.HasPrefix(got, "http://127.0.0.12:8080/") {
		t.Errorf("the owner drains: %s; want the other edge of a", got)
	}
	src.set("a2", func(e *Edge) { e.Load = DefaultMaxLoad })
	if got := loc(get(t, s, "GET", "www.example.test", "/v/1.mp4", "127.0.0.2", nil)); !strings.HasPrefix(got, "http://127.0.0.21:8080/") {
		t.Errorf("a's edges draining and overloaded: %s; want b's (a's fallback)", got)
	}
	src.set("a2", func(e *Edge) { e.Load = 0 })
	// A trusted proxy speaks for a client of b; an untrusted one does not.
	xff := http.Header{"X-Forwarded-For": {"127.0.0.3, 127.0.0.9"}}
	if got := loc(get(t, s, "GET", "www.example.test", "/x", "127.0.0.4", xff)); !strings.HasPrefix(got, "http://127.0.0.21:8080/") {
		t.Errorf("via a trusted proxy for a client of b: %s", got)
	}
	if got := loc(get(t, s, "GET", "www.example.test", "/x", "127.0.0.2", xff)); !strings.HasPrefix(got, "http://127.0.0.12:8080/") {
		t.Errorf("an untrusted X-Forwarded-For moved a client of a: %s", got)
	}
	if r := get(t, s, "GET", "other.test", "/x", "127.0.0.2", nil); r.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("another host: %d; want 421", r.StatusCode)
	}
	if r := get(t, s, "POST", "www.example.test", "/x", "127.0.0.2", nil); r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d, Allow %q", r.StatusCode, r.Header.Get("Allow"))
	}
	for _, n := range []string{"a1", "a2", "b1"} {
		src.set(n, func(e *Edge) { e.Ready = false })
	}
	if r := get(t, s, "GET", "www.example.test", "/x", "127.0.0.2", nil); r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Errorf("no healthy edge: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r, err := http.Get("http://" + s.MetricsAddr() + "/readyz"); err != nil || r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz without a healthy edge: %v %v", r, err)
	}
	metrics := scrape(t, s)
	for _, want := range []string{`meshcdn_router_answers_total{located="zone",method="http",region="a"} 4`,
		`meshcdn_router_answers_total{located="zone",method="http",region="b"} 2`, `meshcdn_router_no_edge_total{method="http"} 1`,
		`meshcdn_router_edges 3`, `meshcdn_router_healthy_edges 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}
}

// TestRedirectAnyHost: a router without domains redirects every host, and
// a client that asked by address is sent on by address.
func TestRedirectAnyHost(t *testing.T) {
	src := &edges{list: []Edge{{Name: "a1", Region: "a", HTTPAddr: "127.0.0.11:8080", State: "alive", Ready: true}}}
	s := startRouter(t, src, testZones, func(c *Config) { c.Domains = nil })
	r := get(t, s, "GET", "127.0.0.1:80", "/x.js", "127.0.0.2", nil)
	if got := r.Header.Get("Location"); r.StatusCode != http.StatusFound || got != "http://127.0.0.11:8080/x.js" {
		t.Errorf("by address: %d %s", r.StatusCode, got)
	}
	r = get(t, s, "GET", "cdn.example.test", "/x.js", "127.0.0.2", nil)
	if got := r.Header.Get("Location"); got != "http://127.0.0.11:8080/_host/cdn.example.test/x.js" {
		t.Errorf("any host: %s", got)
	}
}

func scrape(t *testing.T, s *Server) string {
	t.Helper()
	r, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

// TestZonesReload: a changed zone file moves clients at once; one that does
// not parse keeps the zones in use and is counted.
func TestZonesReload(t *testing.T) {
	src := &edges{list: []Edge{
		{Name: "a1", Region: "a", HTTPAddr: "127.0.0.11:8080", State: "alive", Ready: true},
		{Name: "b1", Region: "b", HTTPAddr: "127.0.0.21:8080", State: "alive", Ready: true},
	}}
	s := startRouter(t, src, testZones, nil)
	path := s.cfg.Zones
	where := func() string {
		r, _ := s.Locator().Locate(netip.MustParseAddr("127.0.0.2"))
		return r
	}
	if where() != "a" {
		t.Fatalf("127.0.0.2 in %q before the change", where())
	}
	moved := strings.Replace(strings.Replace(testZones, `"127.0.0.2/32"`, `"127.0.0.5/32"`, 1), `"127.0.0.3/32"`, `"127.0.0.2/32", "127.0.0.3/32"`, 1)
	if err := os.WriteFile(path, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, func() bool { return where() == "b" })
	if got := get(t, s, "GET", "www.example.test", "/x", "127.0.0.2", nil).Header.Get("Location"); !strings.HasPrefix(got, "http://127.0.0.21:8080/") {
		t.Errorf("after the reload: %s", got)
	}
	if err := os.WriteFile(path, []byte(`{"regions": {"a": {"networks": ["not a network"]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, func() bool {
		return strings.Contains(scrape(t, s), `meshcdn_router_zone_reloads_total{result="failed"} 1`)
	})
	if where() != "b" {
		t.Errorf("a broken file changed the zones: 127.0.0.2 in %q", where())
	}
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProbe: an edge gossip still lists but whose HTTP port refuses
// connections gets no users after two probes, and gets them again once it
// accepts.
func TestProbe(t *testing.T) {
	listen := func(addr string) net.Listener {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return ln
	}
	ln := listen("127.0.0.11:0")
	addr, other := ln.Addr().String(), listen("127.0.0.21:0").Addr().String()
	src := &edges{list: []Edge{
		{Name: "a1", Region: "a", HTTPAddr: addr, State: "alive", Ready: true},
		{Name: "b1", Region: "b", HTTPAddr: other, State: "alive", Ready: true},
	}}
	s := startRouter(t, src, testZones, func(c *Config) { c.Probe = 20 * time.Millisecond })
	sentTo := func() string {
		return get(t, s, "GET", "www.example.test", "/x", "127.0.0.2", nil).Header.Get("Location")
	}
	if got := sentTo(); !strings.HasPrefix(got, "http://"+addr+"/") {
		t.Fatalf("a1 up: %s", got)
	}
	ln.Close()
	waitUntil(t, 5*time.Second, func() bool { return strings.HasPrefix(sentTo(), "http://"+other+"/") })
	listen(addr)
	waitUntil(t, 5*time.Second, func() bool { return strings.HasPrefix(sentTo(), "http://"+addr+"/") })
}

// TestConfigErrors: each mistake is named.
func TestConfigErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zones.json")
	if err := os.WriteFile(path, []byte(testZones), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Zones: path}, "needs a DNS or an HTTP listener"},
		{Config{DNSAddr: ":53", Zones: path}, "at least one domain"},
		{Config{HTTPAddr: ":80", Zones: path, Domains: []string{"a b"}}, `"a b" is not a domain name`},
		{Config{HTTPAddr: ":80"}, "zones: a coverage-zone file is required"},
		{Config{HTTPAddr: "80", Zones: path}, `http: "80" is not host:port`},
		{Config{HTTPAddr: ":80", Zones: path, DefaultRegion: "c"}, `default region: "c" is not a region`},
		{Config{HTTPAddr: ":80", Zones: filepath.Join(t.TempDir(), "none.json")}, "no such file"},
		{Config{HTTPAddr: ":80", Zones: path, GeoIP: path}, "geoip"},
	} {
		_, err := New(tt.cfg, &edges{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v; want %q", tt.cfg, err, tt.want)
		}
	}
}

func ExampleEdge_Healthy() {
	e := Edge{Name: "a1", State: "alive", Ready: true, HTTPAddr: "10.0.0.1:8080", Load: 10}
	fmt.Println(e.Healthy(0), e.Healthy(10), e.Healthy(11))
	// Output: true false true
}
