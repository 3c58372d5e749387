package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// routerProc is `meshcdn router` running as a child process.
type routerProc struct {
	edgeProc
	dns string
}

// startRouterProc runs this test binary as `meshcdn router args...` and
// waits for it to listen.
func startRouterProc(t *testing.T, args ...string) *routerProc {
	t.Helper()
	p := &routerProc{edgeProc: edgeProc{cmd: exec.Command(os.Args[0], append([]string{"router"}, args...)...)}}
	p.cmd.Env = append(os.Environ(), "MESHCDN_TEST_MAIN=1")
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.kill)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	started := make(chan []string, 1)
	go func() {
		re := regexp.MustCompile(`^router \S+: dns (\S*), http (\S*), metrics (\S*), gossip (\S+)$`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				started <- m[1:]
			}
		}
	}()
	select {
	case a := <-started:
		p.dns, p.http, p.metric, p.gossip = a[0], "http://"+a[1], "http://"+a[2], a[3]
	case <-time.After(20 * time.Second):
		t.Fatalf("router did not start: %s", p.logs())
	}
	return p
}

// routeZones places the test's clients: 127.0.0.2 and 10.1/16 in region a,
// 127.0.0.3 and 10.2/16 in b; a is in Hangzhou, b in Frankfurt; each falls
// back on the other.
const routeZones = `{"regions": {
  "a": {"networks": ["127.0.0.2/32", "10.1.0.0/16"], "coordinates": {"latitude": 30.27, "longitude": 120.15}, "fallback": ["b"]},
  "b": {"networks": ["127.0.0.3/32", "10.2.0.0/16"], "coordinates": {"latitude": 50.11, "longitude": 8.68}, "fallback": ["a"]}
}}`

// askA asks the router for the A records of name for a client subnet.
func askA(t *testing.T, server, name, subnet string) (*dns.Msg, []string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	if subnet != "" {
		_, n, err := net.ParseCIDR(subnet)
		if err != nil {
			t.Fatal(err)
		}
		ones, _ := n.Mask.Size()
		o := m.SetEdns0(1232, false).IsEdns0()
		o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(ones), Address: n.IP})
	}
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, server)
	if err != nil {
		t.Fatalf("dns %s for %s: %v", name, subnet, err)
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	slices.Sort(ips)
	return r, ips
}

// routeClient asks the router from the local address from, without
// following the redirect.
func routeClient(from string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// redirectOf asks the router for path on www.example.test from the address
// from and returns where it sends the client.
func redirectOf(t *testing.T, router *routerProc, from, path string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", router.http+path, nil)
	req.Host = "www.example.test"
	c := routeClient(from)
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("router answered %d for %s from %s", resp.StatusCode, path, from)
	}
	return resp.Header.Get("Location")
}

// TestRouter runs two regions of two edge processes each (their own
// loopback addresses) and a router process: DNS answers a client subnet of
// each region with that region's edges, a client the GeoIP database places
// near Frankfurt with b's, and refuses other names; HTTP sends a client to
// the owner of its key in its region, and following the redirect serves
// the object with the site's host; the router owns nothing; when both edges
// of region a are killed, a's clients are answered with b's edges within
// the failure-detection bound (the router's probes: about two seconds), with
// a's again when an edge returns, and with b's while that edge drains.
func TestRouter(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Host+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = io.WriteString(w, "body of "+r.URL.Path)
	}))
	defer origin.Close()
	dir := t.TempDir()
	zones := filepath.Join(dir, "zones.json")
	if err := os.WriteFile(zones, []byte(routeZones), 0o600); err != nil {
		t.Fatal(err)
	}
	geo := testutil.WriteGeoIP(t, map[string][2]float64{"198.51.100.0/24": {48.86, 2.35}}) // Paris

	edge := func(name, ip, region string, join ...string) *edgeProc {
		args := []string{"--name", name, "--origin", origin.URL, "--region", region,
			"--http", ip + ":0", "--peer", ip + ":0", "--gossip", ip + ":0"}
		if len(join) > 0 {
			args = append(args, "--join", join[0])
		}
		return startEdgeProc(t, args...)
	}
	a1 := edge("a1", "127.0.0.11", "a")
	a2 := edge("a2", "127.0.0.12", "a", a1.gossip)
	b1 := edge("b1", "127.0.0.21", "b", a1.gossip)
	b2 := edge("b2", "127.0.0.22", "b", a1.gossip)
	router := startRouterProc(t, "--name", "r1", "--zones", zones, "--geoip", geo, "--domain", "www.example.test",
		"--dns", "127.0.0.31:0", "--http", "127.0.0.31:0", "--metrics", "127.0.0.31:0", "--peer", "127.0.0.31:0",
		"--gossip", "127.0.0.31:0", "--join", b1.gossip, "--trust-proxy", "127.0.0.4/32", "--log-level", "debug")
	waitFor(t, 30*time.Second, "the router sees four healthy edges", func() bool {
		return router.metricValue(t, "meshcdn_router_healthy_edges") == 4
	})
	if r, err := http.Get(router.metric + "/readyz"); err != nil || r.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", r, err)
	}

	// The router owns nothing: every edge's ring holds its region's two
	// edges, and the members list shows it as a router without a share.
	waitFor(t, 10*time.Second, "a1 lists the router", func() bool {
		out, _, _ := admin(t, "--addr", a1.admin, "members")
		return strings.Contains(out, "r1")
	})
	for _, e := range []*edgeProc{a1, a2, b1, b2} {
		if v := e.metricValue(t, "meshcdn_ring_members"); v != 2 {
			t.Errorf("an edge's region ring has %v members; want 2", v)
		}
	}
	out, _, _ := admin(t, "--addr", a1.admin, "members")
	if !regexp.MustCompile(`(?m)^r1\s+router\s+alive\s+no\s+0\s+-\s+127\.0\.0\.31:\d+\s+-\s+\S+\s+-\s*$`).MatchString(out) {
		t.Errorf("members: the router's row:\n%s", out)
	}
	if out, _, code := admin(t, "--addr", a1.admin, "stats"); code != 0 || strings.Contains(out, "r1") {
		t.Errorf("stats asked the router (exit %d):\n%s", code, out)
	}
	if _, errOut, code := admin(t, "--addr", a1.admin, "drain", "r1"); code != 2 || !strings.Contains(errOut, "is a router") {
		t.Errorf("drain r1: exit %d, %s", code, errOut)
	}

	// DNS: by client subnet, by GeoIP, other names refused.
	r, ips := askA(t, router.dns, "www.example.test.", "10.1.7.0/24")
	if !slices.Equal(ips, []string{"127.0.0.11", "127.0.0.12"}) || !r.Authoritative {
		t.Errorf("A for a subnet of a: %v (aa %v)", ips, r.Authoritative)
	}
	if _, ips := askA(t, router.dns, "www.example.test.", "10.2.7.0/24"); !slices.Equal(ips, []string{"127.0.0.21", "127.0.0.22"}) {
		t.Errorf("A for a subnet of b: %v", ips)
	}
	if _, ips := askA(t, router.dns, "www.example.test.", "198.51.100.0/24"); !slices.Equal(ips, []string{"127.0.0.21", "127.0.0.22"}) {
		t.Errorf("A for a client in Paris (GeoIP): %v; want Frankfurt's edges", ips)
	}
	if r, _ := askA(t, router.dns, "other.test.", ""); r.Rcode != dns.RcodeRefused {
		t.Errorf("another name: %s", dns.RcodeToString[r.Rcode])
	}

	// HTTP: to the owner of the key in the client's region; following the
	// redirect serves the object, the origin seeing the site's host.
	ownerRe := regexp.MustCompile(`(?m)^owner\s+(\S+)`)
	addrOf := map[string]*edgeProc{"a1": a1, "a2": a2, "b1": b1, "b2": b2}
	for i, c := range []struct{ from, region string }{{"127.0.0.2", "a"}, {"127.0.0.3", "b"}, {"127.0.0.2", "a"}, {"127.0.0.3", "b"}} {
		path := fmt.Sprintf("/route/%d.css", i)
		loc := redirectOf(t, router, c.from, path)
		out, _, _ := admin(t, "--addr", addrOf[c.region+"1"].admin, "locate", "http://www.example.test"+path)
		m := ownerRe.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("locate: %s", out)
		}
		if want := addrOf[m[1]].http + "/_host/www.example.test" + path; loc != want {
			t.Errorf("client %s, %s: sent to %s; want the owner %s in %s: %s", c.from, path, loc, m[1], c.region, want)
		}
		resp, err := http.Get(loc)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "body of "+path {
			t.Errorf("following the redirect: %d %q", resp.StatusCode, body)
		}
	}
	mu.Lock()
	for _, s := range seen {
		if !strings.HasPrefix(s, "www.example.test/route/") {
			t.Errorf("the origin saw %q; want the site's host and the clean path", s)
		}
	}
	mu.Unlock()
	// A trusted proxy speaks for its client.
	req, _ := http.NewRequest("GET", router.http+"/route/x.css", nil)
	req.Host = "www.example.test"
	req.Header.Set("X-Forwarded-For", "127.0.0.3")
	resp, err := routeClient("127.0.0.4").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, b1.http) && !strings.HasPrefix(loc, b2.http) {
		t.Errorf("via a trusted proxy for a client of b: %s", loc)
	}

	// Failover: region a's edges die; its clients go to b, a's fallback.
	a1.kill()
	a2.kill()
	killed := time.Now()
	waitFor(t, 30*time.Second, "DNS answers a's clients with b's edges", func() bool {
		_, ips := askA(t, router.dns, "www.example.test.", "10.1.7.0/24")
		return slices.Equal(ips, []string{"127.0.0.21", "127.0.0.22"})
	})
	t.Logf("a's clients answered with b's edges %v after both of a's edges were killed", time.Since(killed).Round(100*time.Millisecond))
	if loc := redirectOf(t, router, "127.0.0.2", "/route/0.css"); !strings.HasPrefix(loc, b1.http) && !strings.HasPrefix(loc, b2.http) {
		t.Errorf("HTTP for a client of a with a down: %s; want b's edges", loc)
	} else if resp, err := http.Get(loc); err != nil || resp.StatusCode != 200 {
		t.Errorf("following it: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// a returns.
	a3 := edge("a3", "127.0.0.11", "a", b1.gossip)
	var last []string
	t.Cleanup(func() {
		if t.Failed() {
			// t.Context() has ended by now: the calls get a context of their own.
			var out, errb bytes.Buffer
			run(context.Background(), []string{"admin", "--addr", b1.admin, "members"}, &out, &errb)
			ready := "no answer"
			if r, err := http.Get(a3.metric + "/readyz"); err == nil {
				b, _ := io.ReadAll(r.Body)
				r.Body.Close()
				ready = fmt.Sprintf("%d %s", r.StatusCode, b)
			}
			t.Logf("last answer for a's clients %v; router: %v edges, %v healthy; a3's /readyz: %s; b1's members:\n%s%s\na3's log:\n%s\nthe router's log:\n%s",
				last, router.metricValue(t, "meshcdn_router_edges"), router.metricValue(t, "meshcdn_router_healthy_edges"), ready,
				out.String(), errb.String(), a3.logs(), router.logs())
		}
	})
	waitFor(t, 30*time.Second, "DNS answers a's clients with a's edge again", func() bool {
		_, last = askA(t, router.dns, "www.example.test.", "10.1.7.0/24")
		return slices.Equal(last, []string{"127.0.0.11"})
	})
	if loc := redirectOf(t, router, "127.0.0.2", "/route/0.css"); !strings.HasPrefix(loc, a3.http) {
		t.Errorf("HTTP for a client of a once a3 is up: %s", loc)
	}
	// A drained edge gets no users: gossip says so.
	if _, errOut, code := admin(t, "--addr", a3.admin, "drain"); code != 0 {
		t.Fatalf("drain a3: exit %d: %s", code, errOut)
	}
	waitFor(t, 30*time.Second, "DNS answers a's clients with b's edges while a3 drains", func() bool {
		_, ips := askA(t, router.dns, "www.example.test.", "10.1.7.0/24")
		return slices.Equal(ips, []string{"127.0.0.21", "127.0.0.22"})
	})
	if logs := router.logs(); !strings.Contains(logs, "msg=route method=dns client=10.1.7.0 located=zone region=a") ||
		!strings.Contains(logs, "msg=route method=http client=127.0.0.2 located=zone region=a served_from=a") {
		t.Errorf("the router's decision log lacks lines:\n%s", logs)
	}
}

// TestRouterConfigErrors: every mistake is named, with the file's name when
// it comes from one; an exposed mesh without its protections is refused as
// an edge's is.
func TestRouterConfigErrors(t *testing.T) {
	dir := t.TempDir()
	zones := filepath.Join(dir, "zones.json")
	if err := os.WriteFile(zones, []byte(routeZones), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "router.yaml")
	if err := os.WriteFile(bad, []byte("router:\n  zones: "+zones+"\n  dns: off\n  nope: 1\n  dommains: [a.test]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	local := []string{"router", "--name", "r", "--gossip", "127.0.0.1:0", "--peer", "127.0.0.1:0", "--metrics", "off", "--http", "127.0.0.1:0"}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"router", "--name", "r", "--zones", zones, "--dns", "off"}, `mesh: gossip ":7946" and peer ":7070" listen beyond loopback without a gossip key or mesh TLS`},
		{append(local, "--zones", zones, "--dns", "127.0.0.1:0"), "domain: a DNS listener needs at least one domain"},
		{append(local, "--zones", zones, "--domain", "a b.test"), `domain: "a b.test" is not a domain name`},
		{append(local, "--zones", zones, "--dns", "off", "--trust-proxy", "10.0.0.0/33"), `trust-proxy: "10.0.0.0/33" is not a CIDR`},
		{append(local, "--zones", zones, "--dns", "off", "--default-region", "c"), `default region: "c" is not a region of`},
		{append(local, "--zones", filepath.Join(dir, "none.json"), "--dns", "off"), "none.json: no such file"},
		{append(local, "--zones", bad, "--dns", "off"), "not a coverage-zone file"},
		{append(local, "--config", bad), "router.yaml: line 4: router.nope is not a setting\n" + bad + ": line 5: router.dommains is not a setting (did you mean domains?)"},
		{append(local, "--zones", zones, "--dns", "off", "--gossip-key", "c2hvcnQ="), "--gossip-key"},
	} {
		var stdout, stderr testutil.SyncBuffer
		if c := run(t.Context(), tt.args, &stdout, &stderr); c != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, c, stderr.String(), tt.want)
		}
	}
}

// TestDeployedRouterConfigs: the router configurations the compose cluster
// and the Kubernetes manifests ship load as the router reads them, with
// the mesh secrets of `meshcdn ca init --gossip-key` where they mount them.
func TestDeployedRouterConfigs(t *testing.T) {
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh")
	var stdout, stderr testutil.SyncBuffer
	if c := run(t.Context(), []string{"ca", "init", "--dir", mesh, "--gossip-key"}, &stdout, &stderr); c != 0 {
		t.Fatalf("ca init: %s", stderr.String())
	}
	compose, err := os.ReadFile("../../deploy/router.yaml")
	if err != nil {
		t.Fatal(err)
	}
	k8s, err := os.ReadFile("../../deploy/kubernetes/router.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct{ Data map[string]string }
	if err := yaml.NewDecoder(bytes.NewReader(k8s)).Decode(&cm); err != nil {
		t.Fatal(err)
	}
	admin := filepath.Join(dir, "admin")
	if err := os.MkdirAll(admin, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(admin, "token"), []byte("the-admin-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"compose": string(compose), "kubernetes": cm.Data["router.yaml"]} {
		file := filepath.Join(dir, name+".yaml")
		content = strings.NewReplacer("/etc/meshcdn/mesh/", mesh+"/", "/etc/meshcdn/admin/", admin+"/").Replace(content)
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		f := routerFlags{config: file}
		cfg, m, _, err := f.routerConfig()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(cfg.Domains) == 0 || cfg.DNSAddr == "" || cfg.HTTPAddr == "" || m.TLS.CAKeyFile == "" || len(m.GossipKeys) != 1 || len(m.Join) != 1 {
			t.Errorf("%s: %+v %+v", name, cfg, m)
		}
		if name == "kubernetes" && (cfg.StatusAccess.Open || !slices.Equal(cfg.StatusAccess.Tokens, []string{"the-admin-token"})) {
			t.Errorf("kubernetes: the status page's access %+v; want the admin token's", cfg.StatusAccess)
		}
	}
}
