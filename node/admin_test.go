package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshcdn/meshcdn/internal/units"
	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/tlsconf"
	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// TestREADMEGrpcurl runs every grpcurl line of the README's "Operating the
// cluster" section, verbatim but for the address, against a live 3-node
// cluster, and checks what each prints.
func TestREADMEGrpcurl(t *testing.T) {
	grpcurl := tool(t, "grpcurl")
	lines := readmeLines(t, "grpcurl examples")
	if len(lines) < 6 {
		t.Fatalf("found %d grpcurl lines in the README", len(lines))
	}
	o := newOrigin(t, static("x", "max-age=60"))
	nodes := startCluster(t, o, 3, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	addr := nodes[0].AdminAddr()
	want := map[string][]string{
		" list":        {"meshcdn.admin.v1.AdminService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"},
		" describe ":   {"rpc ListMembers", "rpc Locate", "rpc GetConfig"},
		"Health/Check": {`"status": "SERVING"`},
		"/ListMembers": {`"name": "n1"`, `"name": "n2"`, `"name": "n3"`, `"self": true`, `"ownedShare"`, `"state": "alive"`,
			`"adminAddr": "127.0.0.1:`, `"version": "test"`},
		"/Locate":    {`"key": "127.0.0.1/css/site.css"`, `"owner": "n`, `"replicas": [`},
		"/GetConfig": {`"node": "n1"`, `"mesh": {`, `"handoffWindow": "120s"`, `"fillTimeout": "600s"`, `"purgeAllow": [`},
		"/Drain":     {`"node": "n3"`, `"took"`},
		"/Prefetch":  {`"url": "http://127.0.0.1/js/app.js"`, `"status": 200`, `"node": "n`},
		"/Explain":   {`"rule": "default-static"`, `"key": "127.0.0.1/css/site.css"`, `"outcome"`},
		"/GetStats":  {`"node": "cluster"`, `"node": "n2"`, `"tier": "memory"`, `"tier": "copies"`},
		"/Purge":     {`"purgeId"`, `"node": "n1"`, `"node": "n2"`, `"node": "n3"`, `"applied": true`},
		"/GetPurge":  {`"purgeId"`, `"node": "n1"`, `"node": "n2"`, `"node": "n3"`, `"applied": true`},
	}
	purgeID := regexp.MustCompile(`"purgeId": "([0-9a-f]{16})"`)
	lastPurge := "" // PURGE_ID in the README: the id the last Purge line answered
	for _, l := range lines {
		// The README names `make run`'s nodes (edge-1...); the test cluster's are n1...
		line := strings.ReplaceAll(strings.ReplaceAll(l, "127.0.0.1:7071", addr), `"edge-`, `"n`)
		args, err := shellSplit(strings.ReplaceAll(line, "PURGE_ID", lastPurge))
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		out, err := exec.CommandContext(ctx, grpcurl, args[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s: %v\n%s", l, err, out)
			continue
		}
		// protojson, which grpcurl prints with, varies the space after a
		// colon from build to build on purpose.
		out = colonSpace.ReplaceAll(out, []byte(`": `))
		if m := purgeID.FindSubmatch(out); m != nil && strings.HasSuffix(l, "/Purge") {
			lastPurge = string(m[1])
		}
		matched := false
		for frag, wants := range want {
			if !strings.Contains(l, frag) {
				continue
			}
			matched = true
			for _, w := range wants {
				if !strings.Contains(string(out), w) {
					t.Errorf("%s: output lacks %s:\n%s", l, w, out)
				}
			}
		}
		if !matched {
			t.Errorf("%s: no expectation for this README line", l)
		}
	}
}

// colonSpace is the white space after a JSON object key.
var colonSpace = regexp.MustCompile(`":\s+`)

// readmeLines returns the grpcurl lines of a marked section of the README.
func readmeLines(t *testing.T, section string) []string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, text, _ := strings.Cut(string(readme), "<!-- "+section+": tested by node/admin_test.go -->")
	text, _, _ = strings.Cut(text, "<!-- end of "+section+" -->")
	var lines []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(l, "grpcurl ") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestREADMEGrpcurlTLS runs the README's grpcurl lines for an admin API
// over TLS with client certificates, with certificates made as the README
// says; a client without a certificate, or in cleartext, is refused.
func TestREADMEGrpcurlTLS(t *testing.T) {
	grpcurl := tool(t, "grpcurl")
	lines := readmeLines(t, "grpcurl TLS examples")
	if len(lines) < 2 {
		t.Fatalf("found %d grpcurl TLS lines in the README", len(lines))
	}
	pki := t.TempDir()
	if err := tlsconf.InitCA(pki, 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		role  tlsconf.Role
		hosts []string
	}{{"admin-api", tlsconf.RoleServer, []string{"127.0.0.1"}}, {"admin", tlsconf.RoleAdmin, nil}} {
		if _, err := tlsconf.Issue(pki, c.name, c.role, c.hosts, 0); err != nil {
			t.Fatal(err)
		}
	}
	o := newOrigin(t, static("x", "max-age=60"))
	n := startNode(t, o, Config{Name: "n1", AdminAddr: "127.0.0.1:0", AdminCertFile: filepath.Join(pki, "admin-api.pem"),
		AdminKeyFile: filepath.Join(pki, "admin-api-key.pem"), AdminClientCAFile: filepath.Join(pki, "ca.pem")})
	grpcurlRun := func(line string) (string, error) {
		args, err := shellSplit(strings.ReplaceAll(strings.ReplaceAll(line, "127.0.0.1:7071", n.AdminAddr()), "pki/", pki+"/"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, grpcurl, args[1:]...).CombinedOutput()
		return string(colonSpace.ReplaceAll(out, []byte(`": `))), err
	}
	for _, l := range lines {
		out, err := grpcurlRun(l)
		if err != nil || !strings.Contains(out, "meshcdn.admin.v1.AdminService") && !strings.Contains(out, `"name": "n1"`) {
			t.Errorf("%s: %v\n%s", l, err, out)
		}
	}
	for _, bad := range []string{
		"grpcurl -connect-timeout 2 -cacert pki/ca.pem 127.0.0.1:7071 list",
		"grpcurl -connect-timeout 2 -plaintext 127.0.0.1:7071 list",
	} {
		if out, err := grpcurlRun(bad); err == nil {
			t.Errorf("%s: answered without a client certificate:\n%s", bad, out)
		}
	}
}

// shellSplit splits a command line with single-quoted arguments.
func shellSplit(s string) ([]string, error) {
	re := regexp.MustCompile(`'[^']*'|\S+`)
	var out []string
	for _, m := range re.FindAllString(s, -1) {
		out = append(out, strings.Trim(m, "'"))
	}
	return out, nil
}

func adminClient(t *testing.T, addr string) (adminv1.AdminServiceClient, healthpb.HealthClient) {
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return adminv1.NewAdminServiceClient(c), healthpb.NewHealthClient(c)
}

// TestAdminTokenAndArguments: with a token, calls without it are
// Unauthenticated (health excepted); bad arguments are InvalidArgument naming
// the field; a listener beyond loopback needs a token.
func TestAdminTokenAndArguments(t *testing.T) {
	o := newOrigin(t, static("x", "max-age=60"))
	n := startNode(t, o, Config{AdminAddr: "127.0.0.1:0", AdminToken: "s3cret"})
	ac, hc := adminClient(t, n.AdminAddr())
	ctx := t.Context()
	if _, err := ac.ListMembers(ctx, &adminv1.ListMembersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong")
	if _, err := ac.ListMembers(bad, &adminv1.ListMembersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong token: %v", err)
	}
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health without a token: %v %v", r, err)
	}
	good := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	m, err := ac.ListMembers(good, &adminv1.ListMembersRequest{})
	if err != nil || len(m.GetMembers()) != 1 || !m.GetMembers()[0].GetSelf() {
		t.Errorf("with the token: %v %v", m, err)
	}
	for _, tt := range []struct {
		req  *adminv1.LocateRequest
		want string
	}{
		{&adminv1.LocateRequest{}, "url: required"},
		{&adminv1.LocateRequest{Url: "not a url"}, "url: "},
		{&adminv1.LocateRequest{Url: "ftp://x/y"}, "url: "},
		{&adminv1.LocateRequest{Url: "http://127.0.0.1/a", Replicas: -1}, "replicas: -1"},
	} {
		_, err := ac.Locate(good, tt.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("Locate(%v) = %v, want InvalidArgument %q", tt.req, err, tt.want)
		}
	}
	c, err := ac.GetConfig(good, &adminv1.GetConfigRequest{})
	if js := protojson.Format(c); err != nil || strings.Contains(js, "s3cret") || !slices.Equal(c.GetConfig().GetAdminAuth(), []string{"token"}) {
		t.Errorf("GetConfig leaks the token or hides that one is needed: %v %s", err, js)
	}
	if err := (Config{Origins: mustOrigins(t), AdminAddr: "0.0.0.0:7071"}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "beyond loopback") {
		t.Errorf("open admin listener without a token: %v", err)
	}
	if err := (Config{Origins: mustOrigins(t), AdminAddr: "0.0.0.0:7071", AdminInsecure: true}).Validate(); err != nil {
		t.Errorf("admin_insecure: %v", err)
	}
}

// TestGetStats: the counters and ratios of one node, and the cluster's sums.
func TestGetStats(t *testing.T) {
	o := newOrigin(t, static("0123456789", "max-age=60"))
	nodes := startCluster(t, o, 2, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	do(t, nodes[0], "GET", "/s.css")
	do(t, nodes[0], "GET", "/s.css")
	do(t, nodes[0], "GET", "/s.css")
	do(t, nodes[1], "GET", "/s.css") // a miss at n2 (owner or copy), or a hit
	ac, _ := adminClient(t, nodes[1].AdminAddr())
	r, err := ac.GetStats(t.Context(), &adminv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetNodes()) != 2 || r.GetNodes()[0].GetNode() != "n1" {
		t.Fatalf("nodes %v", r.GetNodes())
	}
	n1 := r.GetNodes()[0]
	if n1.GetRequests()["miss"] != 1 || n1.GetRequests()["hit"] != 2 || n1.GetBytesServed() != 30 ||
		n1.GetRequestHitRatio() < 0.66 || n1.GetRequestHitRatio() > 0.67 {
		t.Errorf("n1 stats %v", n1)
	}
	c := r.GetCluster()
	var total int64
	for _, v := range c.GetRequests() {
		total += v
	}
	if total != 4 || c.GetBytesServed() != 40 || c.GetOriginRequests() != 1 {
		t.Errorf("cluster stats %v", c)
	}
}

// TestExplain is acceptance 8 of the admin issue: Explain reports the rule,
// key, owner and TTL source of a cacheable, a bypassed and a stale URL.
func TestExplain(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/old.js":
			w.Header().Set("Cache-Control", "max-age=0")
			w.Header().Set("ETag", `"1"`)
		default:
			w.Header().Set("Cache-Control", "max-age=60")
		}
		_, _ = w.Write([]byte("x"))
	})
	n := startNode(t, nil, Config{Name: "solo", AdminAddr: "127.0.0.1:0", Sites: []site.Config{{
		Name: "shop", Hosts: []string{"shop.example"}, Origins: []site.OriginConfig{{URL: o.URL}},
		Rules: []site.RuleConfig{{PathPrefix: "/api/", Action: "bypass"}, {Extensions: []string{"css"}, Action: "cache", TTL: units.Duration(time.Hour)}},
	}}})
	for _, p := range []string{"/a.css", "/old.js", "/fresh.js"} {
		do(t, n, "GET", p, "Host", "shop.example")
	}
	ac, _ := adminClient(t, n.AdminAddr())
	for _, tt := range []struct {
		url                                string
		rule, action, key, source, outcome string
		stored                             bool
	}{
		{"http://shop.example/a.css", "rules[1]", "cache", "shop.example/a.css", "rule", "hit", true},
		{"http://shop.example/fresh.js", "default-static", "cache", "shop.example/fresh.js", "max-age", "hit", true},
		{"http://shop.example/old.js", "default-static", "cache", "shop.example/old.js", "no-cache", "stale", true},
		{"http://shop.example/api/cart?b=2&a=1", "rules[0]", "bypass", "shop.example/api/cart?a=1&b=2", "", "bypass", false},
		{"http://shop.example/never.css", "rules[1]", "cache", "shop.example/never.css", "", "miss", false},
	} {
		r, err := ac.Explain(t.Context(), &adminv1.ExplainRequest{Url: tt.url})
		if err != nil {
			t.Fatalf("%s: %v", tt.url, err)
		}
		if r.GetSite() != "shop" || r.GetRule() != tt.rule || r.GetAction() != tt.action || r.GetKey() != tt.key ||
			r.GetOwner() != "solo" || r.GetTtlSource() != tt.source || r.GetOutcome() != tt.outcome || r.GetStored() != tt.stored {
			t.Errorf("Explain(%s) = %v", tt.url, r)
		}
	}
	if r, _ := ac.Explain(t.Context(), &adminv1.ExplainRequest{Url: "http://shop.example/a.css", Method: "POST"}); r.GetOutcome() != "bypass" {
		t.Errorf("POST: %v", r)
	}
	if _, err := ac.Explain(t.Context(), &adminv1.ExplainRequest{Url: "http://other.example/"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown host: %v", err)
	}
}

// TestPrefetch is acceptance 6 of the admin issue: 50 URLs prefetched through
// one node are afterwards hits at their owners, the origin asked once each.
func TestPrefetch(t *testing.T) {
	o := newOrigin(t, static("prefetched", "public, max-age=600"))
	nodes := startCluster(t, o, 3, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	var urls []string
	for i := range 50 {
		urls = append(urls, fmt.Sprintf("http://127.0.0.1/pre/%d.js", i))
	}
	ac, _ := adminClient(t, nodes[0].AdminAddr())
	stream, err := ac.Prefetch(t.Context(), &adminv1.PrefetchRequest{Urls: urls})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*adminv1.PrefetchResponse{}
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[p.GetUrl()] = p
	}
	if len(got) != 50 {
		t.Fatalf("%d progress messages", len(got))
	}
	wantHits(t, o, 50)
	byName := map[string]*Node{}
	for _, n := range nodes {
		byName[n.Name()] = n
	}
	for _, u := range urls {
		p := got[u]
		if p.GetError() != "" || p.GetStatus() != 200 || p.GetBytes() != int64(len("prefetched")) {
			t.Errorf("%s: %v", u, p)
			continue
		}
		owner := byName[p.GetNode()]
		wantStatus(t, do(t, owner, "GET", strings.TrimPrefix(u, "http://127.0.0.1")), "meshcdn; hit")
	}
	wantHits(t, o, 50)
	empty, err := ac.Prefetch(t.Context(), &adminv1.PrefetchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := empty.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "urls:") {
		t.Errorf("empty prefetch: %v", err)
	}
}

// TestDrain: a node drained through another leaves every ring, reports not
// ready, and still answers its clients.
func TestDrain(t *testing.T) {
	o := newOrigin(t, static("x", "public, max-age=600"))
	nodes := startCluster(t, o, 3, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	ac, _ := adminClient(t, nodes[0].AdminAddr())
	r, err := ac.Drain(t.Context(), &adminv1.DrainRequest{Node: "n3"})
	if err != nil || r.GetNode() != "n3" {
		t.Fatalf("Drain: %v %v", r, err)
	}
	eventually(t, 10*time.Second, func() bool {
		return nodes[0].RingMembers() == 2 && nodes[1].RingMembers() == 2 && nodes[2].RingMembers() == 2
	})
	if owner, _ := nodes[2].mesh.Ring().Owner("127.0.0.1/d.js"); owner == "n3" {
		t.Error("the drained node still owns keys")
	}
	resp, err := http.Get("http://" + nodes[2].MetricsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz of a drained node: %d", resp.StatusCode)
	}
	if r := do(t, nodes[2], "GET", "/d.js"); r.StatusCode != 200 || r.body != "x" {
		t.Errorf("the drained node stopped answering: %d", r.StatusCode)
	}
	if _, err := ac.Drain(t.Context(), &adminv1.DrainRequest{Node: "n9"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown node: %v", err)
	}
}

// TestDrainHandsOff: the new owners of drained nodes' keys pull their
// objects from them on demand, not from the origin, while they stay members
// shown as draining; two drains one after the other move some keys twice
// before anybody asks for them; spurious change signals keep where keys were.
func TestDrainHandsOff(t *testing.T) {
	const keys = 300
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	nodes := startCluster(t, o, 4, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	byName := map[string]*Node{}
	for _, n := range nodes {
		byName[n.Name()] = n
	}
	// Each object filled at its owner: no copies elsewhere.
	paths := make([]string, keys)
	for i := range paths {
		paths[i] = fmt.Sprintf("/k/%d.js", i)
		owner, _ := nodes[0].mesh.Ring().Owner(nodes[0].sites.Default().CacheKey("127.0.0.1", paths[i], ""))
		do(t, byName[owner], "GET", paths[i])
	}
	wantHits(t, o, keys)
	ac, _ := adminClient(t, nodes[0].AdminAddr())
	for _, drained := range []string{"n4", "n3"} {
		// A drain without its push of the hottest objects: what the new
		// owners get, they pull on demand (as for objects past the push's
		// limit, or on disk only).
		d := byName[drained]
		d.ready.Store(false)
		d.mesh.Drain(false)
		want := len(nodes) - 1
		if drained == "n3" {
			want--
		}
		eventually(t, 10*time.Second, func() bool {
			for _, n := range nodes {
				if n.RingMembers() != want {
					return false
				}
			}
			return true
		})
	}
	r, err := ac.ListMembers(t.Context(), &adminv1.ListMembersRequest{})
	if err != nil || len(r.GetMembers()) != 4 {
		t.Fatalf("members after the drains: %v %v", r, err)
	}
	for _, m := range r.GetMembers()[2:] {
		if m.GetState() != "draining" || m.GetOwnedShare() != 0 {
			t.Errorf("%s after its drain: %s, share %v", m.GetName(), m.GetState(), m.GetOwnedShare())
		}
	}
	nodes[0].mesh.Rebuild() // as after a member's metadata change
	nodes[1].mesh.Rebuild()
	requestEverywhere(t, nodes[:2], paths)
	if h := o.hits.Load(); h != keys {
		t.Errorf("origin asked %d times, want %d: the drained nodes' objects were not all handed off", h, keys)
	}
	if h := counterValue(t, nodes[0], "meshcdn_handoffs_total") + counterValue(t, nodes[1], "meshcdn_handoffs_total"); h == 0 {
		t.Error("no hand-off counted")
	}
}

// TestDrainOnStop: with mesh.drain_on_stop, a stopping node drains first and
// keeps answering, so the objects asked for meanwhile come from it, not from
// the origin; it stops once the time is up or its shutdown context ends.
func TestDrainOnStop(t *testing.T) {
	const keys = 100
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	nodes := startCluster(t, o, 3, func(c *Config) {
		if c.Name == "n3" {
			c.Mesh.DrainOnStop, c.ShutdownTimeout = time.Minute, 2*time.Minute
		}
	})
	var paths []string
	for i := range keys {
		p := fmt.Sprintf("/k/%d.js", i)
		if owner, _ := nodes[0].mesh.Ring().Owner(nodes[0].sites.Default().CacheKey("127.0.0.1", p, "")); owner == "n3" {
			do(t, nodes[2], "GET", p) // held by n3 alone
			paths = append(paths, p)
		}
	}
	hits := o.hits.Load()
	ctx, stop := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- nodes[2].Shutdown(ctx) }()
	eventually(t, 10*time.Second, func() bool { return nodes[0].RingMembers() == 2 && nodes[1].RingMembers() == 2 })
	for _, p := range paths {
		if r := do(t, nodes[0], "GET", p); r.StatusCode != 200 || r.body != "body of "+p {
			t.Fatalf("%s: %d %q", p, r.StatusCode, r.body)
		}
	}
	if h := o.hits.Load() - hits; h != 0 {
		t.Errorf("the origin was asked %d times for %d objects of the node draining before its stop", h, len(paths))
	}
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned before its drain time: %v", err)
	default:
	}
	stop() // the shutdown's deadline: the drain ends, the node stops
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after its context ended")
	}
	eventually(t, 10*time.Second, func() bool { return len(nodes[0].mesh.Members()) == 2 })
}

// TestDrainPushesHottest: a drained node offers its objects to their new
// owners, which take them from its cache (variants included) before anybody
// asks; once it is gone, they are all still served without the origin.
func TestDrainPushesHottest(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		if strings.HasPrefix(r.URL.Path, "/v/") {
			w.Header().Set("Vary", "Accept-Encoding")
			w.Header().Set("Content-Encoding", r.Header.Get("Accept-Encoding"))
		}
		_, _ = w.Write([]byte("body of " + r.URL.Path + " " + r.Header.Get("Accept-Encoding")))
	})
	nodes := startCluster(t, o, 3, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	key := func(p string) string { return nodes[0].sites.Default().CacheKey("127.0.0.1", p, "") }
	var paths []string
	for i := range 100 {
		p := fmt.Sprintf("/k/%d.js", i)
		if i%10 == 0 {
			p = fmt.Sprintf("/v/%d.js", i)
		}
		if owner, _ := nodes[0].mesh.Ring().Owner(key(p)); owner != "n3" {
			continue
		}
		paths = append(paths, p)
		if r := do(t, nodes[2], "GET", p, "Accept-Encoding", "gzip"); r.StatusCode != 200 {
			t.Fatalf("%s: %d", p, r.StatusCode)
		}
	}
	hits := o.hits.Load()
	ac, _ := adminClient(t, nodes[0].AdminAddr())
	d, err := ac.Drain(t.Context(), &adminv1.DrainRequest{Node: "n3", Wait: true})
	if err != nil || d.GetHandedOff() != int64(len(paths)) || d.GetNotTaken() != 0 || d.GetTook().AsDuration() <= 0 {
		t.Fatalf("Drain with wait: %v %v; want %d handed off", d, err, len(paths))
	}
	// The new owners hold every object without a client's request.
	r := nodes[2].mesh.Ring()
	for _, p := range paths {
		owner, _ := r.Owner(key(p))
		n := nodes[0]
		if owner == "n2" {
			n = nodes[1]
		}
		if _, ok := n.store.Get(key(p)); !ok {
			t.Fatalf("%s: not at its new owner %s after the drain's offers", p, owner)
		}
	}
	// An offer is answered with the head alone; one without its sender is
	// refused.
	offer := &peerv1.FetchRequest{Key: key(paths[0]), Host: "127.0.0.1", PathQuery: paths[0], From: "n3", TakeOver: true}
	resp, err := nodes[2].mesh.Peers().Fetch(t.Context(), nodes[0].PeerAddr(), offer)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); resp.StatusCode != 200 || len(b) != 0 || err != nil {
		t.Errorf("a take-over offer answered %d with %d body bytes (%v), want 200 and none", resp.StatusCode, len(b), err)
	}
	resp.Body.Close()
	offer.From = ""
	if _, err := nodes[2].mesh.Peers().Fetch(t.Context(), nodes[0].PeerAddr(), offer); status.Code(err) != codes.InvalidArgument {
		t.Errorf("an offer without from: %v, want InvalidArgument", err)
	}
	if err := nodes[2].Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return len(nodes[0].mesh.Members()) == 2 })
	for _, n := range nodes[:2] {
		for _, p := range paths {
			r := do(t, n, "GET", p, "Accept-Encoding", "gzip")
			if want := "body of " + p + " gzip"; r.StatusCode != 200 || r.body != want {
				t.Fatalf("%s at %s: %d %q, want %q", p, n.Name(), r.StatusCode, r.body, want)
			}
		}
	}
	if h := o.hits.Load() - hits; h != 0 {
		t.Errorf("the origin was asked %d times for %d objects handed off before their node stopped", h, len(paths))
	}
	t.Logf("%d objects handed off by the drain, none asked of the origin after the node stopped", len(paths))
}

// TestPrefetchOwnerDown: a URL whose owner does not answer its peer port
// (still a member to gossip) is filled through the node asked, not failed.
func TestPrefetchOwnerDown(t *testing.T) {
	o := newOrigin(t, static("prefetched", "public, max-age=600"))
	nodes := startCluster(t, o, 3, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	u := "http://127.0.0.1" + ownedBy(t, nodes[0], "n3", "/down/")
	nodes[2].mesh.StopServing()
	ac, _ := adminClient(t, nodes[0].AdminAddr())
	stream, err := ac.Prefetch(t.Context(), &adminv1.PrefetchRequest{Urls: []string{u}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := stream.Recv()
	if err != nil || p.GetError() != "" || p.GetStatus() != 200 || p.GetNode() != "n1" {
		t.Fatalf("prefetch with its owner down: %v %v", p, err)
	}
	wantStatus(t, do(t, nodes[0], "GET", strings.TrimPrefix(u, "http://127.0.0.1")), "meshcdn; hit")
}

// TestSoftPurgeThenDrain: an object soft-purged at its owner (marked stale)
// is not handed off as fresh when the owner drains: the new owner
// revalidates with the origin instead of serving it as stored.
func TestSoftPurgeThenDrain(t *testing.T) {
	var version atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		fmt.Fprintf(w, "version %d", version.Add(1))
	})
	nodes := startCluster(t, o, 3, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	p := ownedBy(t, nodes[0], "n3", "/soft/")
	do(t, nodes[2], "GET", p) // stored at its owner only
	ac, _ := adminClient(t, nodes[0].AdminAddr())
	if _, err := ac.Purge(t.Context(), &adminv1.PurgeRequest{Urls: []string{"http://127.0.0.1" + p}, Soft: true}); err != nil {
		t.Fatal(err)
	}
	nodes[2].ready.Store(false)
	nodes[2].mesh.Drain(false)
	eventually(t, 10*time.Second, func() bool { return nodes[0].RingMembers() == 2 && nodes[1].RingMembers() == 2 })
	owner, _ := nodes[0].mesh.Ring().Owner(nodes[0].sites.Default().CacheKey("127.0.0.1", p, ""))
	var at *Node
	for _, n := range nodes[:2] {
		if n.Name() == owner {
			at = n
		}
	}
	r := do(t, at, "GET", p)
	if r.body != "version 2" || strings.Contains(r.cacheStatus(), "detail=peer-n3") {
		t.Errorf("after a soft purge and a drain, the new owner %s served %q (%s); want the origin's new version", owner, r.body, r.cacheStatus())
	}
}

// TestGetConfigFields: GetConfig answers with the configuration as fields an
// operator can read (sites with their hosts and origins, sizes, time
// bounds), defaults filled in, and never a secret.
func TestGetConfigFields(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {})
	n := startNode(t, nil, Config{
		AdminToken: "s3cret-token", MemoryBytes: 64 << 20,
		Sites: []site.Config{{Name: "shop", Hosts: []string{"shop.example", "*.img.shop.example"},
			Origins: []site.OriginConfig{{URL: o.URL, Weight: 3}}}},
	})
	c := adminView{n}.Config()
	js := protojson.Format(c)
	if strings.Contains(js, "s3cret") {
		t.Fatalf("GetConfig shows the admin token:\n%s", js)
	}
	if len(c.GetSites()) != 1 {
		t.Fatalf("sites: %v", c.GetSites())
	}
	s := c.GetSites()[0]
	if s.GetName() != "shop" || !slices.Equal(s.GetHosts(), []string{"shop.example", "*.img.shop.example"}) ||
		!slices.Equal(s.GetOrigins(), []string{o.URL + " weight=3 priority=1"}) || s.GetRules() != 2 {
		t.Errorf("site: %s", protojson.Format(s))
	}
	if c.GetMemoryBytes() != 64<<20 || c.GetMaxObjectSizeBytes() != 8<<20 || c.GetDiskBytes() != 0 ||
		c.GetFillTimeout().AsDuration() != DefaultFillTimeout || c.GetBodyTimeout().AsDuration() != DefaultBodyTimeout ||
		!slices.Equal(c.GetAdminAuth(), []string{"token"}) || c.GetMesh() != nil {
		t.Errorf("GetConfig:\n%s", js)
	}
}
