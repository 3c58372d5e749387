package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node"
	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
)

// peerFetchesFailed sums the nodes' meshcdn_peer_fetches_total{result="failed"}:
// fetches that went to the origin because the key's owner did not answer.
func peerFetchesFailed(t *testing.T, nodes []*node.Node) int {
	t.Helper()
	sum := 0
	for _, n := range nodes {
		resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, `meshcdn_peer_fetches_total{result="failed"} `); ok {
				f, _ := strconv.ParseFloat(v, 64)
				sum += int(f)
			}
		}
	}
	return sum
}

// adminCluster starts three meshed nodes in this process in front of a test
// origin and returns them with the origin's request counter.
func adminCluster(t *testing.T, token string) ([]*node.Node, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("Surrogate-Key", "all")
		fmt.Fprintf(w, "body of %s", r.URL.Path)
	}))
	t.Cleanup(origin.Close)
	ou, _ := url.Parse(origin.URL)
	var nodes []*node.Node
	for i := range 3 {
		mesh := &node.MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}
		if i > 0 {
			mesh.Join = []string{nodes[0].GossipAddr()}
		}
		n, err := node.New(node.Config{Name: fmt.Sprintf("n%d", i+1), HTTPAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
			AdminAddr: "127.0.0.1:0", AdminToken: token, Version: "test", Origins: []*url.URL{ou}, Mesh: mesh,
			Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Shutdown(t.Context()) })
		nodes = append(nodes, n)
	}
	waitFor(t, 10*time.Second, "a ring of 3", func() bool {
		return nodes[0].RingMembers() == 3 && nodes[1].RingMembers() == 3 && nodes[2].RingMembers() == 3
	})
	return nodes, &hits
}

// admin runs `meshcdn admin args...` and returns its output and exit code.
func admin(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), append([]string{"admin"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

func wantContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

// TestAdminCLI runs every command of `meshcdn admin` against a live cluster
// and checks the tables, the JSON and what the commands did.
func TestAdminCLI(t *testing.T) {
	nodes, hits := adminCluster(t, "")
	addr := nodes[0].AdminAddr()

	out, errOut, code := admin(t, "--addr", addr, "members")
	if code != 0 {
		t.Fatalf("members: exit %d: %s", code, errOut)
	}
	wantContains(t, "members", out, "NAME", "STATE", "ADMIN", "n1 *", "n2", "n3", "alive", "test")
	if lines := strings.Count(out, "\n"); lines != 4 {
		t.Errorf("members: %d lines, want a header and 3 rows:\n%s", lines, out)
	}
	out, _, _ = admin(t, "--addr", addr, "--json", "members")
	var members struct {
		Members []struct{ Name, State, AdminAddr string }
	}
	if err := json.Unmarshal([]byte(out), &members); err != nil || len(members.Members) != 3 || members.Members[1].AdminAddr == "" {
		t.Errorf("members --json: %v %+v\n%s", err, members, out)
	}

	// Prefetch 50 URLs from a file, with the progress bar forced on.
	var list strings.Builder
	for i := range 50 {
		fmt.Fprintf(&list, "http://127.0.0.1/p/%d.css\n", i)
	}
	file := filepath.Join(t.TempDir(), "urls.txt")
	if err := os.WriteFile(file, []byte("# warm-up list\n"+list.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = admin(t, "--addr", addr, "prefetch", "--progress", "always", "--file", file)
	if code != 0 {
		t.Fatalf("prefetch: exit %d: %s", code, errOut)
	}
	wantContains(t, "prefetch output", out, "URL", "CACHE-STATUS", "http://127.0.0.1/p/7.css", "50 URLs", "0 failed")
	wantContains(t, "prefetch progress", errOut, "] 50/50 URLs", "[##############################]")
	if h := hits.Load(); h < 50 || (h > 50 && peerFetchesFailed(t, nodes) == 0) {
		// More only when a member too starved to take a peer fetch in
		// time sent a fill to the origin, as the mesh's contract has it.
		t.Errorf("origin asked %d times for 50 prefetched URLs", h)
	}

	out, _, code = admin(t, "--addr", addr, "locate", "http://127.0.0.1/p/7.css", "--replicas", "1")
	wantContains(t, "locate", out, "owner", "127.0.0.1/p/7.css", "replicas")
	owner := regexp.MustCompile(`owner\s+n([123])`).FindStringSubmatch(out)
	if code != 0 || owner == nil {
		t.Fatalf("locate: exit %d\n%s", code, out)
	}

	// Asked at the owner, explain finds the prefetched object.
	ownerAddr := nodes[owner[1][0]-'1'].AdminAddr()
	out, _, code = admin(t, "--addr", ownerAddr, "explain", "-H", "Accept-Encoding: gzip", "http://127.0.0.1/p/7.css")
	wantContains(t, "explain", out, "default-static (cache)", "stored   yes, in memory", "10m0s (from max-age)", "outcome  hit")
	if code != 0 {
		t.Errorf("explain: exit %d", code)
	}

	out, _, code = admin(t, "--addr", addr, "stats")
	wantContains(t, "stats", out, "NODE", "HIT", "ORIGIN", "n1", "n2", "n3", "cluster")
	// The cluster's origin requests: the 50 prefetched, and any a starved
	// member sent to the origin itself (see above).
	if code != 0 || !regexp.MustCompile(fmt.Sprintf(`cluster\s+\d+\s+[\d.]+%%\s+[\d.]+%%\s+%d\s`, hits.Load())).MatchString(out) {
		t.Errorf("stats: exit %d; want the cluster's %d origin requests\n%s", code, hits.Load(), out)
	}

	// Purge by tag after a URL: flags and URLs mix.
	out, errOut, code = admin(t, "--addr", addr, "purge", "http://127.0.0.1/p/1.css", "--tag", "all", "--soft")
	if code != 0 {
		t.Fatalf("purge: exit %d: %s", code, errOut)
	}
	wantContains(t, "purge", out, "purge ", "NODE", "applied")
	if strings.Count(out, "applied") != 3 {
		t.Errorf("purge: want 3 receipts\n%s", out)
	}
	id := regexp.MustCompile(`purge ([0-9a-f]{16})`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no purge id in %q", out)
	}
	out, errOut, code = admin(t, "--addr", nodes[2].AdminAddr(), "purge-status", id[1])
	if code != 0 || strings.Count(out, "applied") != 3 {
		t.Errorf("purge-status: exit %d %s\n%s", code, errOut, out)
	}

	out, _, code = admin(t, "--addr", addr, "config")
	wantContains(t, "config", out, "effective configuration of n1", `"name": "n1"`, `"memoryBytes": "`)
	if code != 0 {
		t.Errorf("config: exit %d", code)
	}

	out, _, code = admin(t, "--addr", addr, "drain", "n3", "--wait")
	if code != 0 || !strings.Contains(out, "n3 is draining: its new owners took") || !strings.Contains(out, "it can be stopped") {
		t.Errorf("drain --wait: exit %d: %s", code, out)
	}
	waitFor(t, 10*time.Second, "n3 out of n1's ring", func() bool { return nodes[0].RingMembers() == 2 })
}

// TestAdminCLIErrors: bad arguments exit 2 with a message naming the
// argument; a missing token exits 1 and says how to give one.
func TestAdminCLIErrors(t *testing.T) {
	nodes, _ := adminCluster(t, "s3cret")
	addr := nodes[0].AdminAddr()
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--addr", addr}, 2, "a command is required"},
		{[]string{"--addr", addr, "frob"}, 2, `unknown command "frob"`},
		{[]string{"--addr", addr, "members"}, 1, "--token"},
		{[]string{"--addr", addr, "--token", "wrong", "members"}, 1, "wrong bearer token"},
		{[]string{"--addr", addr, "--token", "s3cret", "purge", "/relative"}, 2, "urls[0]:"},
		{[]string{"--addr", addr, "--token", "s3cret", "locate"}, 2, "one URL is required"},
		{[]string{"--addr", addr, "--token", "s3cret", "prefetch", "--progress", "loud", "http://127.0.0.1/a"}, 2, `"loud" is not auto`},
		{[]string{"--addr", addr, "--token", "s3cret", "explain", "-H", "nocolon", "http://127.0.0.1/a"}, 2, "is not 'Name: value'"},
		{[]string{"--addr", addr, "--token", "s3cret", "members", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--addr", addr, "--token", "s3cret", "purge-status", "nope"}, 2, "purge_id:"},
		{[]string{"--addr", addr, "--token", "s3cret", "purge-status", "0123456789abcdef"}, 1, "NotFound"},
		{[]string{"--addr", "127.0.0.1:1", "members"}, 1, "cannot reach the admin API at 127.0.0.1:1"},
	} {
		_, errOut, code := admin(t, tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("admin %q: exit %d, %q; want exit %d and %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
	// The token from a file and from the environment.
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := admin(t, "--addr", addr, "--token-file", tok, "members"); code != 0 {
		t.Errorf("--token-file: exit %d: %s", code, errOut)
	}
	t.Setenv("MESHCDN_ADMIN_TOKEN", "s3cret")
	t.Setenv("MESHCDN_ADMIN_ADDR", addr)
	if _, errOut, code := admin(t, "members"); code != 0 {
		t.Errorf("token and address from the environment: exit %d: %s", code, errOut)
	}
}

// Every admin command answers -h and --help with its usage, exit 0, before
// any call.
func TestAdminCommandHelp(t *testing.T) {
	for _, cmd := range []string{"members", "locate", "purge", "purge-status", "prefetch", "stats", "explain", "drain", "config"} {
		for _, h := range []string{"-h", "--help"} {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{"admin", "--addr", "127.0.0.1:1", cmd, h}, &stdout, &stderr)
			if code != 0 || !strings.Contains(stdout.String(), "\n  "+cmd) {
				t.Errorf("admin %s %s: exit %d, %q %q", cmd, h, code, stdout.String(), stderr.String())
			}
		}
	}
}

// TestStableJSON: --json output is the same bytes from every build
// (protojson varies its white space between builds on purpose).
func TestStableJSON(t *testing.T) {
	m := &adminv1.LocateResponse{Site: "default", Key: "a/b", Owner: "n1", Replicas: []string{"n2"}, Epoch: 3}
	b, err := stableJSON(m, "  ")
	want := "{\n  \"site\": \"default\",\n  \"key\": \"a/b\",\n  \"owner\": \"n1\",\n  \"replicas\": [\n    \"n2\"\n  ],\n  \"epoch\": \"3\"\n}"
	if err != nil || string(b) != want {
		t.Errorf("indented: %q, %v; want %q", b, err, want)
	}
	b, err = stableJSON(m, "")
	if want := `{"site":"default","key":"a/b","owner":"n1","replicas":["n2"],"epoch":"3"}`; err != nil || string(b) != want {
		t.Errorf("one line: %q, %v; want %q", b, err, want)
	}
}
