//go:build e2e

// Package e2e runs the docker-compose cluster of deploy/ for real: the
// meshcdn image, the demo origin and the edges as containers on a private
// network, driven with docker, docker compose and grpcurl. `make e2e` builds
// the image and runs it; it needs a Docker engine.
//
// One test walks through the steps in order, each building on the last; the
// cluster is torn down, volumes included, however the test ends.
package e2e

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

const (
	project = "meshcdn-e2e"
	token   = "e2e-token"
	objects = 200
	// The router's published DNS (UDP and TCP) and HTTP ports.
	routerDNSPort, routerHTTPPort = "15353", "18090"
)

// cluster drives one compose project.
type cluster struct {
	t       testing.TB
	compose []string // the compose command and its file and project flags
	env     []string
	grpcurl string
}

func newCluster(t testing.TB) *cluster {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := strings.Fields(os.Getenv("MESHCDN_COMPOSE"))
	if len(cmd) == 0 {
		if exec.Command("docker", "compose", "version").Run() == nil {
			cmd = []string{"docker", "compose"}
		} else {
			cmd = []string{"docker-compose"}
		}
	}
	image := os.Getenv("MESHCDN_IMAGE")
	if image == "" {
		image = "meshcdn:dev"
	}
	c := &cluster{t: t, grpcurl: filepath.Join(root, "bin", "grpcurl"),
		compose: append(cmd, "-f", filepath.Join(root, "deploy", "docker-compose.yml"), "-p", project),
		env: append(os.Environ(), "MESHCDN_IMAGE="+image, "MESHCDN_ADMIN_TOKEN="+token,
			// Ports apart from `make cluster-up`'s, so both may run.
			"MESHCDN_ORIGIN_PORT=18000", "MESHCDN_HTTP_PORTS=18080-18089", "MESHCDN_ADMIN_PORTS=17071-17080",
			"MESHCDN_B_HTTP_PORTS=18100-18109", "MESHCDN_B_ADMIN_PORTS=17081-17090",
			"MESHCDN_HTTPS_PORTS=19443-19452", "MESHCDN_B_HTTPS_PORTS=19453-19462",
			"MESHCDN_DNS_PORT="+routerDNSPort, "MESHCDN_ROUTER_PORT="+routerHTTPPort, "MESHCDN_ROUTER_METRICS_PORT=19090")}
	if _, err := os.Stat(c.grpcurl); err != nil {
		t.Fatalf("%s is missing: `make tools` installs it", c.grpcurl)
	}
	return c
}

// run runs a command with a deadline and returns its output; a failure ends
// the test with the command and what it printed.
func (c *cluster) run(timeout time.Duration, name string, args ...string) string {
	c.t.Helper()
	out, err := c.try(timeout, name, args...)
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (c *cluster) try(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c *cluster) composeRun(timeout time.Duration, args ...string) string {
	c.t.Helper()
	return c.run(timeout, c.compose[0], append(slices.Clone(c.compose[1:]), args...)...)
}

// down removes everything the project made, volumes included.
func (c *cluster) down() {
	out, err := c.try(2*time.Minute, c.compose[0], append(slices.Clone(c.compose[1:]), "down", "-v", "--remove-orphans", "-t", "5")...)
	if err != nil {
		c.t.Logf("compose down: %v\n%s", err, out)
	}
}

// edge is one edge container.
type edge struct {
	id, name    string // container id; name is its host name, the node's name
	service     string // edge (region a, the shield) or edge-b (region b)
	number      int    // the replica's number in compose
	http, admin string // published 127.0.0.1:port addresses
	ip          string // its address on the cluster's network
}

// edgeServices are the compose services of edges: regions a and b.
var edgeServices = []string{"edge", "edge-b"}

// edges lists the running edge containers of both regions with their
// published ports.
func (c *cluster) edges() []edge {
	c.t.Helper()
	var out []edge
	for _, service := range edgeServices {
		for _, id := range strings.Fields(c.composeRun(time.Minute, "ps", "-q", service)) {
			state := strings.Fields(c.run(time.Minute, "docker", "inspect", "-f",
				`{{.State.Running}} {{.Config.Hostname}} {{index .Config.Labels "com.docker.compose.container-number"}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}`, id))
			if len(state) != 4 || state[0] != "true" {
				continue
			}
			number, err := strconv.Atoi(state[2])
			if err != nil {
				c.t.Fatalf("container %s: replica number %q: %v", id, state[2], err)
			}
			out = append(out, edge{id: id, name: state[1], service: service, number: number, http: c.port(id, "8080"),
				admin: c.port(id, "7071"), ip: state[3]})
		}
	}
	slices.SortFunc(out, func(a, b edge) int { return strings.Compare(a.name, b.name) })
	return out
}

// port is the 127.0.0.1 address a container's TCP port is published on.
func (c *cluster) port(id, port string) string {
	c.t.Helper()
	return c.published(id, port+"/tcp")
}

// published is the 127.0.0.1 address a container port ("8443/udp") is
// published on.
func (c *cluster) published(id, port string) string {
	c.t.Helper()
	out := strings.TrimSpace(c.run(time.Minute, "docker", "port", id, port))
	addr, _, _ := strings.Cut(out, "\n")
	return addr
}

// grpc calls an admin RPC on a node with grpcurl and decodes the answer.
func (c *cluster) grpc(adminAddr, method, data string, into any) error {
	args := []string{"-plaintext", "-max-time", "20", "-H", "authorization: Bearer " + token}
	if data != "" {
		args = append(args, "-d", data)
	}
	args = append(args, adminAddr, "meshcdn.admin.v1.AdminService/"+method)
	out, err := c.try(30*time.Second, c.grpcurl, args...)
	if err != nil {
		return fmt.Errorf("grpcurl %s at %s: %v: %s", method, adminAddr, err, out)
	}
	if into == nil {
		return nil
	}
	if err := json.Unmarshal([]byte(out), into); err != nil {
		return fmt.Errorf("grpcurl %s at %s: %v: %s", method, adminAddr, err, out)
	}
	return nil
}

type memberList struct {
	Members []struct {
		Name, State, Role string
		OwnedShare        float64
	}
}

// alive lists the alive edges a node reports.
func (c *cluster) alive(e edge) ([]string, error) {
	var ml memberList
	if err := c.grpc(e.admin, "ListMembers", "", &ml); err != nil {
		return nil, err
	}
	var names []string
	for _, m := range ml.Members {
		if m.State == "alive" && m.Role == "edge" {
			names = append(names, m.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// secureByDefault checks that every edge runs with a gossip key and mesh
// TLS (made by the compose file's mesh-init), and that a program on the
// cluster's network without the key is refused: the edges log its
// cleartext gossip and never list it.
func (c *cluster) secureByDefault(es []edge) {
	t := c.t
	t.Helper()
	for _, e := range es {
		var cfg struct {
			Config struct {
				Mesh struct {
					GossipKeys int
					TLS        struct{ CAFile, CAKeyFile string }
					Insecure   bool
				}
			}
		}
		if err := c.grpc(e.admin, "GetConfig", "", &cfg); err != nil {
			t.Fatal(err)
		}
		if m := cfg.Config.Mesh; m.GossipKeys != 1 || m.TLS.CAFile == "" || m.TLS.CAKeyFile == "" || m.Insecure {
			t.Fatalf("%s runs its mesh with %+v; want one gossip key and mesh TLS", e.name, m)
		}
	}
	network := strings.TrimSpace(c.run(time.Minute, "docker", "inspect", "-f",
		"{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}", es[0].id))
	image := os.Getenv("MESHCDN_IMAGE")
	if image == "" {
		image = "meshcdn:dev"
	}
	stranger := strings.TrimSpace(c.run(time.Minute, "docker", "run", "-d", "--rm", "--network", network, image,
		"edge", "--name", "stranger", "--origin", "http://origin:8000", "--join", "edge:7946", "--mesh-insecure", "--admin", "off"))
	defer func() { _, _ = c.try(time.Minute, "docker", "rm", "-f", stranger) }()
	// The cluster is new: only the stranger sends cleartext gossip.
	waitFor(t, time.Minute, "an edge to refuse the stranger's gossip", func() string {
		out, _ := c.try(time.Minute, c.compose[0], append(slices.Clone(c.compose[1:]), "logs", "--no-color", "edge")...)
		if strings.Contains(out, "remote state is not encrypted") {
			return ""
		}
		return "no edge logged it yet"
	})
	for _, e := range es {
		got, err := c.alive(e)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(got, "stranger") || len(got) != len(es) {
			t.Fatalf("%s lists %v with a keyless stranger on the network", e.name, got)
		}
	}
}

// httpsAndHTTP3 checks that every edge serves www.example.test over HTTPS
// with the certificate tls-init made with the cluster CA, announces HTTP/3
// with Alt-Svc, and serves the same object over HTTP/3 on its published UDP
// port, a hit.
func (c *cluster) httpsAndHTTP3(es []edge) {
	t := c.t
	t.Helper()
	dir := t.TempDir()
	c.run(time.Minute, "docker", "cp", es[0].id+":/etc/meshcdn/mesh/ca.pem", filepath.Join(dir, "ca.pem"))
	pem, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("ca.pem from the mesh volume holds no certificate")
	}
	const path = "/css/site.css?over=tls"
	for _, e := range es {
		addr := c.port(e.id, "8443")
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
		resp, body, err := fetch(&http.Client{Transport: tr, Timeout: 30 * time.Second}, "https://www.example.test"+path)
		tr.CloseIdleConnections()
		if err != nil {
			t.Fatalf("HTTPS at %s (%s): %v", e.name, addr, err)
		}
		if resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" || resp.Header.Get("Alt-Svc") != `h3=":8443"; ma=86400` {
			t.Fatalf("HTTPS at %s: %d over %s, Alt-Svc %q", e.name, resp.StatusCode, resp.Proto, resp.Header.Get("Alt-Svc"))
		}
		udp := c.published(e.id, "8443/udp")
		h3 := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots},
			Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
				return quic.DialAddrEarly(ctx, udp, tc, qc)
			}}
		resp3, body3, err := fetch(&http.Client{Transport: h3, Timeout: 30 * time.Second}, "https://www.example.test"+path)
		_ = h3.Close()
		if err != nil {
			t.Fatalf("HTTP/3 at %s (%s): %v", e.name, udp, err)
		}
		if resp3.StatusCode != 200 || resp3.Proto != "HTTP/3.0" || body3 != body || !strings.Contains(resp3.Header.Get("Cache-Status"), "; hit") {
			t.Fatalf("HTTP/3 at %s: %d over %s, %d bytes (HTTPS: %d), Cache-Status %q", e.name, resp3.StatusCode, resp3.Proto,
				len(body3), len(body), resp3.Header.Get("Cache-Status"))
		}
	}
}

// fetch gets u with c and reads the body.
func fetch(c *http.Client, u string) (*http.Response, string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// router checks the router against the edges of both regions: DNS for a
// client subnet of each region's zone (deploy/zones.json) names that
// region's edges, other names are refused; an HTTP client nothing places
// is sent to an edge of the default region a, by the routed path that
// keeps the site's host, and following the redirect serves the object;
// the edges list the router as a member that owns nothing.
func (c *cluster) router(es []edge) {
	t := c.t
	t.Helper()
	ips := map[string][]string{}
	for _, e := range es {
		region := map[string]string{"edge": "a", "edge-b": "b"}[e.service]
		ips[region] = append(ips[region], e.ip)
	}
	for _, l := range ips {
		slices.Sort(l)
	}
	for _, q := range []struct{ subnet, region string }{{"10.1.0.0/24", "a"}, {"10.2.0.0/24", "b"}} {
		waitFor(t, time.Minute, "DNS for "+q.subnet+" to name region "+q.region+"'s edges", func() string {
			rcode, got, err := askDNS("www.example.test.", q.subnet)
			if err != nil {
				return err.Error()
			}
			if !slices.Equal(got, ips[q.region]) {
				return fmt.Sprintf("%s: %v; want %v", rcode, got, ips[q.region])
			}
			return ""
		})
	}
	if rcode, _, err := askDNS("other.example.", "10.1.0.0/24"); err != nil || rcode != "REFUSED" {
		t.Errorf("another name: %s %v; want REFUSED", rcode, err)
	}
	noRedirect := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://127.0.0.1:"+routerHTTPPort+"/css/site.css?router=1", nil)
	req.Host = "www.example.test"
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !slices.ContainsFunc(ips["a"], func(ip string) bool {
		return loc == "http://"+ip+":8080/_host/www.example.test/css/site.css?router=1"
	}) {
		t.Fatalf("router: %d, Location %q; want an edge of region a (%v)", resp.StatusCode, loc, ips["a"])
	}
	resp, err = client.Get(loc)
	if err != nil {
		t.Fatalf("following the redirect from the host: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("following the redirect: %d, %d bytes", resp.StatusCode, len(body))
	}
	var ml memberList
	if err := c.grpc(es[0].admin, "ListMembers", "", &ml); err != nil {
		t.Fatal(err)
	}
	routers := 0
	for _, m := range ml.Members {
		if m.Role == "router" {
			routers++
			if m.OwnedShare != 0 {
				t.Errorf("the router owns %v of the ring", m.OwnedShare)
			}
		}
	}
	if routers != 1 {
		t.Errorf("%s lists %d routers: %+v", es[0].name, routers, ml.Members)
	}
	// Its status page, on the published metrics port: the token the compose
	// file sets opens it; without it the browser is asked for one.
	status := "http://127.0.0.1:19090/status.json"
	if resp, err := http.Get(status); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the router's status page without the token: %v %v; want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	sreq, _ := http.NewRequest("GET", status, nil)
	sreq.SetBasicAuth("", "meshcdn-dev-token")
	resp, err = http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Regions []struct {
			Name       string   `json:"name"`
			AnswerWith []string `json:"answer_with"`
		} `json:"regions"`
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(page.Regions) != 2 || len(page.Regions[0].AnswerWith) == 0 || len(page.Regions[1].AnswerWith) == 0 {
		t.Errorf("the router's status.json: %d %v %+v; want regions a and b, each answered with its edges", resp.StatusCode, err, page)
	}
}

// askDNS asks the router's published DNS port for the A records of name
// with an EDNS Client Subnet, over UDP.
func askDNS(name, subnet string) (rcode string, ips []string, err error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	_, n, err := net.ParseCIDR(subnet)
	if err != nil {
		return "", nil, err
	}
	ones, _ := n.Mask.Size()
	o := m.SetEdns0(1232, false).IsEdns0()
	o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(ones), Address: n.IP})
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, "127.0.0.1:"+routerDNSPort)
	if err != nil {
		return "", nil, err
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	slices.Sort(ips)
	return dns.RcodeToString[r.Rcode], ips, nil
}

// waitFor polls cond until it returns "" or the deadline passes, then fails
// with what it last reported.
func waitFor(t testing.TB, d time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		last := cond()
		if last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still waiting for %s: %s", d, what, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitMembers waits until every edge reports exactly the running edges as
// its alive members.
func (c *cluster) waitMembers(d time.Duration, want int) []edge {
	c.t.Helper()
	var es []edge
	waitFor(c.t, d, fmt.Sprintf("%d edges, each listing all of them", want), func() string {
		es = c.edges()
		if len(es) != want {
			return fmt.Sprintf("%d edges running", len(es))
		}
		var names []string
		for _, e := range es {
			names = append(names, e.name)
		}
		for _, e := range es {
			got, err := c.alive(e)
			if err != nil {
				return err.Error()
			}
			if !slices.Equal(got, names) {
				return fmt.Sprintf("%s lists %v, want %v", e.name, got, names)
			}
		}
		return ""
	})
	return es
}

// waitHealthy waits until docker reports every edge and the router healthy
// (their /readyz).
func (c *cluster) waitHealthy(d time.Duration) {
	c.t.Helper()
	waitFor(c.t, d, "every edge and the router healthy", func() string {
		var ids []string
		for _, service := range append(slices.Clone(edgeServices), "router") {
			ids = append(ids, strings.Fields(c.composeRun(time.Minute, "ps", "-q", service))...)
		}
		for _, id := range ids {
			h := strings.TrimSpace(c.run(time.Minute, "docker", "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id))
			if h != "running healthy" {
				return id[:12] + ": " + h
			}
		}
		return ""
	})
}

var client = &http.Client{Timeout: 30 * time.Second}

// get fetches a URL path through an edge.
func get(e edge, path string) (*http.Response, string, error) {
	resp, err := client.Get("http://" + e.http + path)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if cs := resp.Header.Get("Cache-Status"); err == nil && !strings.Contains(cs, "; hit") {
		forwarded.Lock()
		forwarded.lines = append(forwarded.lines, fmt.Sprintf("%s at %s: %s", path, e.name, cs))
		forwarded.Unlock()
	}
	return resp, string(b), err
}

// forwarded lists the responses that the edge's cache did not answer (their
// Cache-Status), so that a failed count of origin requests can say which
// requests went forward: to the origin, or to a peer (detail=peer-NAME),
// which may have asked the origin.
var forwarded struct {
	sync.Mutex
	lines []string
}

// originMark is a point of the test: the origin's count of requests then,
// and how many responses had gone forward.
type originMark struct {
	requests int64
	fwd      int
}

func markOrigin(t testing.TB) originMark {
	t.Helper()
	forwarded.Lock()
	n := len(forwarded.lines)
	forwarded.Unlock()
	return originMark{requests: originRequests(t), fwd: n}
}

// served is how many requests the origin served since m.
func (m originMark) served(t testing.TB) int64 {
	t.Helper()
	return originRequests(t) - m.requests
}

// forwarded says which responses went forward since m.
func (m originMark) forwarded() string {
	forwarded.Lock()
	defer forwarded.Unlock()
	lines := slices.Clone(forwarded.lines[m.fwd:])
	// Those that went to the origin first, then those a peer answered.
	slices.SortStableFunc(lines, func(a, b string) int {
		return cmp.Compare(strings.Count(a, "detail=peer-"), strings.Count(b, "detail=peer-"))
	})
	if len(lines) == 0 {
		return "; no response went forward"
	}
	if len(lines) > 20 {
		lines = append(lines[:20:20], fmt.Sprintf("and %d more", len(lines)-20))
	}
	return "; forwarded:\n\t" + strings.Join(lines, "\n\t")
}

// originRequests is the demo origin's own count of the requests it served.
func originRequests(t testing.TB) int64 {
	t.Helper()
	resp, err := client.Get("http://127.0.0.1:18000/_origin/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct{ Requests int64 }
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s.Requests
}

func objectPath(i int) string { return fmt.Sprintf("/css/site.css?v=%d", i) }

// requestAll fetches every object through every edge and fails on any
// error.
func requestAll(t testing.TB, es []edge, skip map[string]bool) {
	t.Helper()
	var paths []string
	for i := range objects {
		if p := objectPath(i); !skip[p] {
			paths = append(paths, p)
		}
	}
	request(t, es, paths)
}

// request fetches every path through every edge, the edges in parallel, and
// fails on any error.
func request(t testing.TB, es []edge, paths []string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(es))
	for _, e := range es {
		wg.Go(func() {
			for _, p := range paths {
				resp, _, err := get(e, p)
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				if err != nil {
					errs <- fmt.Errorf("%s at %s: %w", p, e.name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// recorder keeps a test's failure messages, so that they can be repeated
// after the cluster's logs: the end of a failed run's output says what
// failed.
type recorder struct {
	*testing.T
	mu       sync.Mutex
	failures []string
}

func (r *recorder) note(msg string) {
	r.mu.Lock()
	r.failures = append(r.failures, msg)
	r.mu.Unlock()
}

func (r *recorder) Error(args ...any) {
	r.T.Helper()
	r.note(fmt.Sprint(args...))
	r.T.Error(args...)
}

func (r *recorder) Errorf(format string, args ...any) {
	r.T.Helper()
	r.note(fmt.Sprintf(format, args...))
	r.T.Errorf(format, args...)
}

func (r *recorder) Fatal(args ...any) {
	r.T.Helper()
	r.note(fmt.Sprint(args...))
	r.T.Fatal(args...)
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.T.Helper()
	r.note(fmt.Sprintf(format, args...))
	r.T.Fatalf(format, args...)
}

func TestCluster(tt *testing.T) {
	t := &recorder{T: tt}
	c := newCluster(t)
	c.down()           // a clean state, whatever an earlier run left
	var current string // the step under way
	t.Cleanup(func() {
		if t.Failed() {
			// The warnings and errors, and the peer fetches that fell back to
			// the origin (logged at debug: MESHCDN_LOG_LEVEL=debug shows them).
			// MESHCDN_E2E_LOGS names a file for the whole of the logs.
			out, _ := c.try(time.Minute, c.compose[0], append(slices.Clone(c.compose[1:]), "logs", "--no-color", "--timestamps")...)
			if f := os.Getenv("MESHCDN_E2E_LOGS"); f != "" {
				if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
					t.Log(err)
				}
			}
			var notable []string
			for l := range strings.Lines(out) {
				if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "peer fetch failed") {
					notable = append(notable, l)
				}
			}
			t.Logf("cluster log lines of note (%d):\n%s", len(notable), strings.Join(notable[max(0, len(notable)-80):], ""))
			t.mu.Lock()
			t.Logf("failed in step %s:\n%s", current, strings.Join(t.failures, "\n"))
			t.mu.Unlock()
		}
		c.down()
	})
	start := time.Now()
	step := func(name string) {
		current = name
		t.Logf("--- %s (%v)", name, time.Since(start).Round(100*time.Millisecond))
	}

	step("1. cluster up (regions a and b, two edges each; the router); every edge lists every member")
	c.composeRun(5*time.Minute, "up", "-d")
	es := c.waitMembers(2*time.Minute, 4)
	c.waitHealthy(time.Minute)

	step("1b. secure by default: gossip encrypted, peers on mutual TLS; a node without the gossip key never joins")
	c.secureByDefault(es)

	step("1c. the router: DNS and HTTP send each region's clients to its edges; it owns nothing")
	c.router(es)

	step("1d. HTTPS and HTTP/3: every edge serves the cluster CA's certificate over TLS, announces HTTP/3 and serves it on UDP")
	c.httpsAndHTTP3(es)

	step("2. offload: 200 objects through every edge of both regions, the origin asked once each (region a shields b)")
	base := markOrigin(t)
	requestAll(t, es, nil)
	if got := base.served(t); got != objects {
		t.Fatalf("the origin served %d requests for %d objects requested through %d nodes%s", got, objects, len(es), base.forwarded())
	}

	step("3. docker kill an edge under load at the others: no failed request")
	victim, survivors := es[0], es[1:]
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		e := survivors[w%len(survivors)]
		wg.Go(func() {
			for i := w; ; i += 4 {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				resp, _, err := get(e, objectPath(i%objects))
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("%s: %w", e.name, err))
				}
			}
		})
	}
	waitFor(t, 30*time.Second, "load running", func() string {
		if sent.Load() < 200 {
			return fmt.Sprintf("%d requests sent", sent.Load())
		}
		return ""
	})
	c.run(time.Minute, "docker", "kill", victim.id)
	killed := time.Now()
	waitFor(t, time.Minute, "the survivors' rings to converge", func() string {
		for _, e := range survivors {
			got, err := c.alive(e)
			if err != nil {
				return err.Error()
			}
			if len(got) != len(survivors) || slices.Contains(got, victim.name) {
				return fmt.Sprintf("%s lists %v", e.name, got)
			}
		}
		return ""
	})
	converged := time.Since(killed)
	before := sent.Load()
	waitFor(t, time.Minute, "more load after the convergence", func() string {
		if sent.Load() < before+200 {
			return fmt.Sprintf("%d requests since", sent.Load()-before)
		}
		return ""
	})
	close(stop)
	wg.Wait()
	t.Logf("%d requests at the survivors, %d failed; rings converged %v after the kill", sent.Load(), failed.Load(), converged.Round(100*time.Millisecond))
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed, the first: %v", failed.Load(), firstErr.Load())
	}
	c.composeRun(2*time.Minute, "up", "-d") // the killed edge starts again, with its disk
	es = c.waitMembers(2*time.Minute, 4)
	c.waitHealthy(time.Minute)

	step("4. a disconnected edge never serves an object purged meanwhile")
	purged := objectPath(7)
	cut, other := es[1], es[2]
	for range 2 {
		for _, e := range es {
			if _, _, err := get(e, purged); err != nil {
				t.Fatal(err)
			}
		}
	}
	network := strings.TrimSpace(c.run(time.Minute, "docker", "inspect", "-f",
		"{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}", cut.id))
	c.run(time.Minute, "docker", "network", "disconnect", network, cut.id)
	var pr struct {
		PurgeID string `json:"purgeId"`
		Nodes   []struct {
			Node    string
			Applied bool
			Error   string
		}
	}
	purgeAt := time.Now()
	if err := c.grpc(other.admin, "Purge", `{"urls":["http://127.0.0.1`+purged+`"]}`, &pr); err != nil {
		t.Fatal(err)
	}
	named := false
	for _, r := range pr.Nodes {
		if r.Node == cut.name && !r.Applied {
			named = true
		}
	}
	if !named {
		t.Errorf("the purge's receipts %+v do not name %s as not applied", pr.Nodes, cut.name)
	}
	c.run(time.Minute, "docker", "network", "connect", network, cut.id)
	cut.http, cut.admin = c.port(cut.id, "8080"), c.port(cut.id, "7071") // published anew
	for i := range 20 {
		resp, _, err := get(cut, purged)
		if err != nil {
			if i < 19 {
				time.Sleep(100 * time.Millisecond) // the port mapping may lag the reconnection
				continue
			}
			t.Fatalf("%s after reconnecting: %v", cut.name, err)
		}
		age, _ := strconv.Atoi(resp.Header.Get("Age"))
		if strings.HasPrefix(resp.Header.Get("Cache-Status"), "meshcdn; hit") && time.Duration(age)*time.Second > time.Since(purgeAt)+time.Second {
			t.Fatalf("%s served the purged object from before the purge: %s, Age %d", cut.name, resp.Header.Get("Cache-Status"), age)
		}
	}
	es = c.waitMembers(2*time.Minute, 4)
	waitFor(t, time.Minute, cut.name+" to apply the purge from the others' logs", func() string {
		var st struct {
			Nodes []struct {
				Node    string
				Applied bool
				Error   string
			}
		}
		if err := c.grpc(other.admin, "GetPurge", `{"purge_id":"`+pr.PurgeID+`"}`, &st); err != nil {
			return err.Error()
		}
		for _, r := range st.Nodes {
			if !r.Applied {
				return fmt.Sprintf("%s: %s", r.Node, r.Error)
			}
		}
		return ""
	})

	step("5. scale region a out to 5 edges: no more origin requests for what is cached")
	skip := map[string]bool{purged: true}
	requestAll(t, es, skip) // the restarted edge's copies, after step 3
	base = markOrigin(t)
	c.composeRun(5*time.Minute, "up", "-d", "--scale", "edge=5")
	es = c.waitMembers(2*time.Minute, 7)
	c.waitHealthy(time.Minute)
	requestAll(t, es, skip)
	if got := base.served(t); got != 0 {
		t.Fatalf("the origin served %d more requests after the scale-out; hand-off should have answered them%s", got, base.forwarded())
	}

	step("6. docker stop of an edge, a purge meanwhile, docker start: its disk objects are served without the origin, the purged one is not")
	restarted := es[2]
	var owned []string
	for i := range objects {
		p := objectPath(i)
		if skip[p] {
			continue
		}
		var loc struct{ Owner string }
		if err := c.grpc(restarted.admin, "Locate", `{"url":"http://127.0.0.1`+p+`"}`, &loc); err != nil {
			t.Fatal(err)
		}
		if loc.Owner == restarted.name {
			owned = append(owned, p)
		}
	}
	if len(owned) < 2 {
		t.Fatalf("%s owns %d of the objects", restarted.name, len(owned))
	}
	c.run(2*time.Minute, "docker", "stop", "-t", "10", restarted.id)
	es = c.waitMembers(2*time.Minute, 6)
	purgedAtStop := owned[0]
	purgeAt = time.Now()
	if err := c.grpc(es[0].admin, "Purge", `{"urls":["http://127.0.0.1`+purgedAtStop+`"]}`, nil); err != nil {
		t.Fatal(err)
	}
	c.run(2*time.Minute, "docker", "start", restarted.id)
	es = c.waitMembers(2*time.Minute, 7)
	c.waitHealthy(time.Minute)
	for _, e := range es {
		if e.id == restarted.id {
			restarted = e
		}
	}
	base = markOrigin(t)
	for _, p := range owned[1:] {
		resp, _, err := get(restarted, p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s at the restarted %s: %v", p, restarted.name, err)
		}
	}
	if got := base.served(t); got != 0 {
		t.Fatalf("the restarted edge asked the origin %d times for %d objects it held on disk%s", got, len(owned)-1, base.forwarded())
	}
	resp, _, err := get(restarted, purgedAtStop)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s at the restarted %s: %v", purgedAtStop, restarted.name, err)
	}
	if age, _ := strconv.Atoi(resp.Header.Get("Age")); base.served(t) != 1 || time.Duration(age)*time.Second > time.Since(purgeAt)+time.Second {
		t.Fatalf("the restarted edge served %s, purged while it was stopped, from before the purge: %s, Age %s",
			purgedAtStop, resp.Header.Get("Cache-Status"), resp.Header.Get("Age"))
	}
	t.Logf("the restarted edge served %d objects from disk and refilled the one purged while it was stopped", len(owned)-1)
	skip[purgedAtStop] = true

	step("7. drain two edges of region a, then scale it in to 3: no origin requests for what is cached")
	// Compose removes the highest-numbered replicas. Objects of their own,
	// requested through them alone, are held by their owners and by them.
	var staying, leaving []edge
	for _, e := range es {
		if e.service == "edge" && e.number > 3 {
			leaving = append(leaving, e)
		} else {
			staying = append(staying, e)
		}
	}
	if len(leaving) != 2 {
		t.Fatalf("replicas 4 and 5 of region a: %+v", leaving)
	}
	var held []string
	for i := range objects / 2 {
		held = append(held, fmt.Sprintf("/css/site.css?held=%d", i))
	}
	base = markOrigin(t)
	request(t, leaving, held)
	if got := base.served(t); got != int64(len(held)) {
		t.Fatalf("the origin served %d requests for %d new objects%s", got, len(held), base.forwarded())
	}
	for _, e := range leaving {
		var d struct {
			HandedOff string `json:"handedOff"` // an int64: a string in JSON
			Took      string
		}
		if err := c.grpc(e.admin, "Drain", `{"wait":true}`, &d); err != nil {
			t.Fatal(err)
		}
		if d.HandedOff == "" || d.HandedOff == "0" {
			t.Errorf("%s handed no object off: %+v", e.name, d)
		}
		t.Logf("%s handed %s objects off in %s", e.name, d.HandedOff, d.Took)
	}
	waitFor(t, time.Minute, "the edges that stay to see the two others draining", func() string {
		for _, e := range staying {
			var ml memberList
			if err := c.grpc(e.admin, "ListMembers", "", &ml); err != nil {
				return err.Error()
			}
			for _, m := range ml.Members {
				if (m.Name == leaving[0].name || m.Name == leaving[1].name) && m.State != "draining" {
					return fmt.Sprintf("%s lists %s as %q", e.name, m.Name, m.State)
				}
			}
		}
		return ""
	})
	base = markOrigin(t)
	request(t, staying, held)
	if got := base.served(t); got != 0 {
		t.Fatalf("the origin served %d of %d objects again after the drain; the drained edges should have handed them off%s", got, len(held), base.forwarded())
	}
	c.composeRun(5*time.Minute, "up", "-d", "--scale", "edge=3")
	es = c.waitMembers(2*time.Minute, 5)
	for _, e := range es {
		if !slices.ContainsFunc(staying, func(s edge) bool { return s.id == e.id }) {
			t.Fatalf("compose kept %s (replica %d), not one of the undrained edges", e.name, e.number)
		}
	}
	request(t, es, held)
	requestAll(t, es, skip)
	if got := base.served(t); got != 0 {
		t.Fatalf("the origin served %d requests after the scale-in%s", got, base.forwarded())
	}

	step("8. done: the cluster is torn down with its volumes")
}
