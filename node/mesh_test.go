package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/node/mesh"
	"github.com/meshcdn/meshcdn/node/peer"
	"github.com/meshcdn/meshcdn/node/tlsconf"
	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
	"github.com/meshcdn/meshcdn/ring"
)

// startCluster starts n nodes on loopback in front of o, joined into one mesh,
// and waits until every node's ring has all of them.
func startCluster(t testing.TB, o *testOrigin, size int, tweak func(*Config)) []*Node {
	t.Helper()
	var nodes []*Node
	for i := range size {
		cfg := Config{Name: fmt.Sprintf("n%d", i+1), Version: "test", Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}}
		if i > 0 {
			cfg.Mesh.Join = []string{nodes[0].GossipAddr()}
		}
		if tweak != nil {
			tweak(&cfg)
		}
		nodes = append(nodes, startNode(t, o, cfg))
	}
	waitRings(t, nodes, size)
	return nodes
}

// waitRings waits until every node's ring has size members.
func waitRings(t testing.TB, nodes []*Node, size int) {
	t.Helper()
	eventually(t, 10*time.Second, func() bool {
		for _, n := range nodes {
			if n.RingMembers() != size {
				return false
			}
		}
		return true
	})
}

// TestMeshOffload is acceptance 1 of the mesh: 100 distinct objects, each
// requested at all 3 nodes: the origin sees each object once.
// With mesh TLS, the same holds over mutual TLS between the peers.
func TestMeshOffload(t *testing.T) { overBoth(t, testMeshOffload) }

// overBoth runs a cluster test in cleartext and over mutual TLS between the
// peers.
func overBoth(t *testing.T, test func(*testing.T, func(*Config))) {
	t.Run("cleartext", func(t *testing.T) { test(t, nil) })
	t.Run("mutual TLS", func(t *testing.T) { test(t, withMeshTLS(t)) })
}

// withMeshTLS gives each node of a test cluster a certificate for its name
// from one cluster CA.
func withMeshTLS(t *testing.T) func(*Config) { return withMeshTLSIn(t, t.TempDir()) }

// withMeshTLSIn is withMeshTLS with the CA in dir, made unless it is there.
func withMeshTLSIn(t *testing.T, dir string) func(*Config) {
	if _, err := os.Stat(filepath.Join(dir, tlsconf.CAFile)); err != nil {
		if err := tlsconf.InitCA(dir, 0); err != nil {
			t.Fatal(err)
		}
	}
	return func(c *Config) {
		if _, err := tlsconf.Issue(dir, c.Name, tlsconf.RoleMember, []string{"127.0.0.1"}, 0); err != nil {
			t.Fatal(err)
		}
		c.Mesh.TLS = tlsconf.MeshFiles{CAFile: filepath.Join(dir, tlsconf.CAFile),
			CertFile: filepath.Join(dir, c.Name+".pem"), KeyFile: filepath.Join(dir, c.Name+"-key.pem")}
	}
}

func testMeshOffload(t *testing.T, tweak func(*Config)) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	nodes := startCluster(t, o, 3, tweak)
	peerFills := 0
	for i := range 100 {
		p := fmt.Sprintf("/obj/%d.css", i)
		for _, n := range nodes {
			r := do(t, n, "GET", p)
			if r.StatusCode != 200 || r.body != "body of "+p {
				t.Fatalf("%s at %s: %d %q", p, n.cfg.Name, r.StatusCode, r.body)
			}
			if strings.Contains(r.cacheStatus(), "detail=peer-n") {
				peerFills++
			}
		}
	}
	wantHits(t, o, 100)
	if peerFills == 0 {
		t.Error("no response came through a peer")
	}
	var ok, served, share float64
	for _, n := range nodes {
		if v := counterValue(t, n, "meshcdn_ring_members"); v != 3 {
			t.Errorf("%s: ring members %v", n.Name(), v)
		}
		ok += counterValue(t, n, "meshcdn_peer_fetches_total")
		served += counterValue(t, n, "meshcdn_peer_served_total")
		share += counterValue(t, n, "meshcdn_ring_owned_share")
	}
	if ok < float64(peerFills) || served < ok || share < 0.999 || share > 1.001 {
		t.Errorf("peer fetches %v (responses through peers %d), served %v, owned shares sum to %v", ok, peerFills, served, share)
	}
}

// TestMeshCoalescing is acceptance 2 of the mesh: 300 concurrent cold requests
// for one object, spread over 3 nodes, make one origin request.
func TestMeshCoalescing(t *testing.T) { overBoth(t, testMeshCoalescing) }

func testMeshCoalescing(t *testing.T, tweak func(*Config)) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("the one body"))
	})
	nodes := watchedCluster(t, o, 3, tweak)
	before := meshTurmoil(t, nodes)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 300 {
		n := nodes[i%3]
		wg.Go(func() {
			if r := doMaybe(t, n, "GET", "/hot.js"); r.Response == nil || r.body != "the one body" {
				bad.Add(1)
			}
		})
	}
	// Every request is parked: 2 non-owner fills joined the owner's, and
	// everyone else joined their node's fill. A peer fetch that failed (a
	// starved member that did not take it within its bound) or a ring
	// change sends a non-owner's fill to the origin instead: one request
	// fewer joins a fill.
	coalesced := func() int64 {
		sum := 0.0
		for _, n := range nodes {
			sum += counterValue(t, n, "meshcdn_coalesced_requests_total")
		}
		return int64(sum)
	}
	eventually(t, 10*time.Second, func() bool { return coalesced()+meshTurmoil(t, nodes)-before >= 299 })
	turmoil := meshTurmoil(t, nodes) - before
	close(release)
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d requests failed", bad.Load())
	}
	if turmoil == 0 {
		if c := coalesced(); c != 299 {
			t.Errorf("%d requests joined a fill, want 299", c)
		}
		wantHits(t, o, 1)
		return
	}
	// As the mesh's contract has it, a peer's failure costs origin
	// fetches, never a client's bytes: the count is logged, not judged.
	t.Logf("with %d peer fetches failed, ring changes and warnings, the origin was asked %d times", turmoil, o.hits.Load())
	if h := o.hits.Load(); h > 1+2*turmoil {
		t.Errorf("the origin was asked %d times, more than once and twice per failure (%d)", h, turmoil)
	}
}

// halt stops a node as a crash would: listeners closed, no Leave, no
// lease renewed.
func halt(n *Node) {
	n.leases.Stop()
	n.mesh.Halt()
	_ = n.sniff.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = n.h1.Shutdown(ctx)
	_ = n.h2c.Close()
}

// TestOwnerKilled is acceptance 3 of the mesh: a node is killed (no Leave)
// under a steady load at the others: no client request fails, and the ring
// converges to the survivors within the failure-detection bound.
func TestOwnerKilled(t *testing.T) { overBoth(t, testOwnerKilled) }

func testOwnerKilled(t *testing.T, tweak func(*Config)) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	nodes := startCluster(t, o, 3, tweak)
	stop := make(chan struct{})
	var failed, sent atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		n := nodes[1+w%2]
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := fmt.Sprintf("/w%d/%d.js", w, i%200)
				sent.Add(1)
				if r := doMaybe(t, n, "GET", p); r.Response == nil || r.StatusCode != 200 || r.body != "body of "+p {
					failed.Add(1)
				}
			}
		})
	}
	eventually(t, 10*time.Second, func() bool { return sent.Load() > 300 })
	killed := time.Now()
	halt(nodes[0])
	eventually(t, 10*time.Second, func() bool { return nodes[1].RingMembers() == 2 && nodes[2].RingMembers() == 2 })
	converged := time.Since(killed)
	before := sent.Load()
	eventually(t, 10*time.Second, func() bool { return sent.Load() > before+300 })
	close(stop)
	wg.Wait()
	t.Logf("%d requests, ring converged %v after the kill", sent.Load(), converged.Round(10*time.Millisecond))
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed", failed.Load(), sent.Load())
	}
	if converged > 5*time.Second {
		t.Errorf("ring took %v to converge; the fast gossip profile detects a dead node in about a second", converged)
	}
}

// TestBrokenPeerStream is acceptance 5 of the mesh: when the owner's response
// breaks off mid-body, a client of another node sees an aborted transfer and
// nothing is stored anywhere.
func TestBrokenPeerStream(t *testing.T) {
	var calls atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("Content-Length", "1000000")
		_, _ = w.Write(make([]byte, 300000))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	nodes := startCluster(t, o, 3, nil)
	// A key owned by n1, asked at n2.
	var p string
	for i := 0; ; i++ {
		p = fmt.Sprintf("/cut/%d.bin", i)
		if owner, _ := nodes[1].mesh.Ring().Owner(nodes[1].sites.Default().CacheKey("127.0.0.1", p, "")); owner == "n1" {
			break
		}
	}
	for range 2 {
		r := doMaybe(t, nodes[1], "GET", p, "Connection", "close")
		if r.Response != nil && r.err == nil && r.StatusCode == 200 {
			t.Fatalf("a cut body was delivered as complete (%d bytes)", len(r.body))
		}
	}
	// Each request may also try the origin directly after the peer failed; the
	// cut body is stored nowhere.
	if c := calls.Load(); c < 2 {
		t.Errorf("origin asked %d times", c)
	}
	for _, n := range nodes {
		for _, tier := range []string{"memory", "copies"} {
			if v := gaugeValue(t, n, "meshcdn_store_objects", "tier", tier); v != 0 {
				t.Errorf("%s holds %v objects in %s after cut responses", n.Name(), v, tier)
			}
		}
	}
}

// TestRingDisagreement is acceptance 6 of the mesh: two nodes each believe the
// other owns every key; the owner never forwards, so requests complete.
func TestRingDisagreement(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("ok"))
	})
	nodes := startCluster(t, o, 2, nil)
	a, b := nodes[0], nodes[1]
	onlyB, _ := ring.New([]string{"n2"}, ring.Config{})
	onlyA, _ := ring.New([]string{"n1"}, ring.Config{})
	a.mesh.SetRing(onlyB)
	b.mesh.SetRing(onlyA)
	done := make(chan response, 2)
	go func() { done <- doMaybe(t, a, "GET", "/loop/1.js") }()
	go func() { done <- doMaybe(t, b, "GET", "/loop/2.js") }()
	for range 2 {
		select {
		case r := <-done:
			if r.Response == nil || r.body != "ok" {
				t.Errorf("request failed: %v", r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request loops between the nodes")
		}
	}
	wantHits(t, o, 2)
}

// TestJoinHandOff is acceptance 4 of the mesh: a fourth node takes about a
// quarter of the keys, and the moved keys that were cached are served through
// hand-off from their previous owners, without new origin requests.
func TestJoinHandOff(t *testing.T) { overBoth(t, testJoinHandOff) }

func testJoinHandOff(t *testing.T, tweak func(*Config)) {
	const keys = 300
	o, nodes, paths := warmCluster(t, keys, tweak)
	key := func(p string) string { return nodes[0].sites.Default().CacheKey("127.0.0.1", p, "") }
	before := map[string]string{}
	for _, p := range paths {
		before[p], _ = nodes[0].mesh.Ring().Owner(key(p))
	}

	cfg4 := Config{Name: "n4", Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		Fast: true, Join: []string{nodes[0].GossipAddr()}}}
	if tweak != nil {
		tweak(&cfg4)
	}
	n4 := startNode(t, o, cfg4)
	all := append(nodes, n4)
	eventually(t, 10*time.Second, func() bool {
		for _, n := range all {
			if n.RingMembers() != 4 {
				return false
			}
		}
		return true
	})
	var moved []string
	for _, p := range paths {
		if now, _ := n4.mesh.Ring().Owner(key(p)); now != before[p] {
			moved = append(moved, p)
		}
	}
	share := float64(len(moved)) / keys
	t.Logf("%d of %d keys (%.2f) changed owner", len(moved), keys, share)
	if share < 0.25*0.7 || share > 0.25*1.3 {
		t.Errorf("%.2f of keys changed owner; want 1/4 ± 30%%", share)
	}
	// The new node serves the keys it now owns from their previous owners.
	for _, p := range moved {
		if r := do(t, n4, "GET", p); r.StatusCode != 200 || r.body != "body of "+p {
			t.Fatalf("%s: %d %q", p, r.StatusCode, r.body)
		}
	}
	wantHits(t, o, keys)
	if h := counterValue(t, n4, "meshcdn_handoffs_total") + counterValue(t, all[0], "meshcdn_handoffs_total") +
		counterValue(t, all[1], "meshcdn_handoffs_total") + counterValue(t, all[2], "meshcdn_handoffs_total"); h == 0 {
		t.Error("no hand-off counted")
	}
}

// TestSuccessiveScaleOuts: two scale-outs in a row, each a wave of its own,
// both within the hand-off window: a key that moved to the first new node
// and then to the second, unasked in between, is found where it was before
// the first.
func TestSuccessiveScaleOuts(t *testing.T) {
	const (
		keys = 300
		wave = time.Second
	)
	tweak := func(c *Config) { c.Mesh.JoinWave = wave }
	o, nodes, paths := warmCluster(t, keys, tweak)
	time.Sleep(wave) // the cluster's own wave is over
	all := nodes
	for _, name := range []string{"n4", "n5"} {
		cfg := Config{Name: name, Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true,
			Join: []string{nodes[0].GossipAddr()}}}
		tweak(&cfg)
		started := time.Now()
		all = append(all, startNode(t, o, cfg))
		eventually(t, 10*time.Second, func() bool {
			for _, n := range all {
				if n.RingMembers() != len(all) {
					return false
				}
			}
			return true
		})
		time.Sleep(time.Until(started.Add(wave + 500*time.Millisecond))) // the next node is a wave of its own
	}
	key := func(p string) string { return nodes[0].sites.Default().CacheKey("127.0.0.1", p, "") }
	r3, _ := ring.New([]string{"n1", "n2", "n3"}, ring.Config{})
	r4, _ := ring.New([]string{"n1", "n2", "n3", "n4"}, ring.Config{})
	var twice int
	for _, p := range paths {
		o4, _ := r4.Owner(key(p))
		o5, _ := all[4].mesh.Ring().Owner(key(p))
		if o3, _ := r3.Owner(key(p)); o3 != o4 && o4 == "n4" && o5 == "n5" {
			twice++
		}
	}
	t.Logf("%d of %d keys moved to n4, then to n5", twice, keys)
	requestEverywhere(t, all, paths)
	if h := o.hits.Load(); h != keys {
		t.Errorf("origin asked %d times after two scale-outs, want %d (no more than before)", h, keys)
	}
}

// requestEverywhere asks every node for every path of a warmCluster origin
// and checks the bodies.
func requestEverywhere(t *testing.T, nodes []*Node, paths []string) {
	t.Helper()
	for _, n := range nodes {
		for _, p := range paths {
			if r := do(t, n, "GET", p); r.StatusCode != 200 || r.body != "body of "+p {
				t.Fatalf("%s at %s: %d %q", p, n.Name(), r.StatusCode, r.body)
			}
		}
	}
}

// warmCluster starts 3 nodes (tweak, if any, adjusts their configuration)
// and fills n objects into the cluster, each once from the origin.
func warmCluster(t *testing.T, n int, tweak func(*Config)) (*testOrigin, []*Node, []string) {
	t.Helper()
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	nodes := startCluster(t, o, 3, tweak)
	started := time.Now() // after every node's start
	paths := make([]string, n)
	for i := range n {
		paths[i] = fmt.Sprintf("/k/%d.js", i)
		do(t, nodes[i%3], "GET", paths[i])
	}
	wantHits(t, o, int64(n))
	// Nodes that start within a join wave of each other count as one wave:
	// let it pass, so the nodes a test adds next form a wave of their own.
	time.Sleep(time.Until(started.Add(mesh.FastJoinWave)))
	return o, nodes, paths
}

// ownedBy returns a path whose key the given node owns.
func ownedBy(t *testing.T, n *Node, owner, prefix string) string {
	for i := 0; i < 10000; i++ {
		p := fmt.Sprintf("%s%d.js", prefix, i)
		if o, _ := n.mesh.Ring().Owner(n.sites.Default().CacheKey("127.0.0.1", p, "")); o == owner {
			return p
		}
	}
	t.Fatalf("no key owned by %s", owner)
	return ""
}

// TestCopiesShare: a non-owner keeps what it fetched from the owner in the
// copies' share of its memory, bounded by it; the owner keeps the object.
func TestCopiesShare(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write(make([]byte, 10000))
	})
	nodes := startCluster(t, o, 2, func(c *Config) { c.MemoryBytes = 4 << 20; c.Mesh.CopyShare = 0.25 })
	p := ownedBy(t, nodes[1], "n1", "/c/")
	do(t, nodes[1], "GET", p)
	wantStatus(t, do(t, nodes[1], "GET", p), "meshcdn; hit")
	if gaugeValue(t, nodes[1], "meshcdn_store_objects", "tier", "copies") != 1 || gaugeValue(t, nodes[1], "meshcdn_store_objects", "tier", "memory") != 0 {
		t.Error("the non-owner did not keep its copy in the copies' share")
	}
	if gaugeValue(t, nodes[0], "meshcdn_store_objects", "tier", "memory") != 1 {
		t.Error("the owner did not store the object")
	}
	for i := range 300 {
		do(t, nodes[1], "GET", ownedBy(t, nodes[1], "n1", fmt.Sprintf("/many%d-", i)))
	}
	if b := gaugeValue(t, nodes[1], "meshcdn_store_bytes", "tier", "copies"); b > 1<<20+20000 {
		t.Errorf("copies hold %v bytes, share 1 MiB", b)
	}
}

// TestLargeObjectThroughPeer is acceptance 7 of the mesh: a 100 MiB object
// fetched through its owner streams with bounded memory.
func TestLargeObjectThroughPeer(t *testing.T) {
	const size = 100 << 20
	o := newOrigin(t, patternHandler(size))
	nodes := startCluster(t, o, 2, nil)
	p := ownedBy(t, nodes[1], "n1", "/big/")
	before := testutil.PeakRSS(t, 0)
	resp, err := http.Get("http://" + nodes[1].HTTPAddr() + p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	want := sha256.New()
	_, _ = io.CopyN(want, &pattern{}, size)
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Fatalf("body through the peer: %d bytes, %v", n, err)
	}
	if !strings.Contains(resp.Header.Get("Cache-Status"), "detail=") {
		t.Logf("Cache-Status %q", resp.Header.Get("Cache-Status"))
	}
	if c := counterValue(t, nodes[1], "meshcdn_peer_received_bytes_total"); c != size {
		t.Errorf("%v bytes came from the peer, want %d", c, size)
	}
	growth := testutil.PeakRSS(t, 0) - before
	t.Logf("peak RSS grew by %d MiB for a %d MiB object through a peer", growth>>20, size>>20)
	if growth > 48<<20 && !raceEnabled {
		t.Errorf("peak RSS grew by %d MiB (bound 48 MiB)", growth>>20)
	}
}

// TestScaleOutHandOff: two nodes join at once (docker compose --scale):
// every key either keeps its owner or is handed off from the node that held
// it, so requests through every node cost the origin nothing more.
func TestScaleOutHandOff(t *testing.T) {
	t.Run("young cluster", func(t *testing.T) { testScaleOut(t, 0, false) })
	// Members older than the hand-off window see the two joins as two ring
	// changes (or one): keys moved between them are where they were before
	// the first.
	t.Run("settled cluster", func(t *testing.T) { testScaleOut(t, 3*time.Second, false) })
	// The second node starts only when every member has seen the first: two
	// ring changes everywhere, within one join wave.
	t.Run("settled cluster, one join after the other", func(t *testing.T) { testScaleOut(t, 3*time.Second, true) })
}

// testScaleOut adds two nodes of one join wave to a warm cluster of 3 whose
// members have been up for settle, with that hand-off window (0: the
// default); staggered starts the second once the first is in every ring.
// The new nodes keep the default window, however long the requests take.
func testScaleOut(t *testing.T, settle time.Duration, staggered bool) {
	const (
		keys = 300
		// wave is long enough for two nodes started together on a busy
		// machine to count as one wave, and for a staggered start.
		wave = 5 * time.Second
	)
	tweak := func(c *Config) { c.Mesh.JoinWave = wave }
	o, nodes, paths := warmCluster(t, keys, func(c *Config) { tweak(c); c.Mesh.HandoffWindow = settle })
	// The members leave their own hand-off window and join wave.
	time.Sleep(max(settle, wave))
	inRing := func(nodes []*Node, size int) func() bool {
		return func() bool {
			for _, n := range nodes {
				if n.RingMembers() != size {
					return false
				}
			}
			return true
		}
	}
	added := make([]*Node, 2)
	add := func(i int) {
		cfg := Config{Name: fmt.Sprintf("n%d", 4+i), Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0",
			GossipAddr: "127.0.0.1:0", Fast: true, Join: []string{nodes[0].GossipAddr()}}}
		tweak(&cfg)
		added[i] = startNode(t, o, cfg)
	}
	if staggered {
		add(0)
		eventually(t, wave-time.Second, inRing(append(nodes, added[0]), 4)) // well within the wave
		add(1)
	} else {
		var wg sync.WaitGroup
		for i := range added {
			wg.Go(func() { add(i) })
		}
		wg.Wait()
	}
	all := append(nodes, added...)
	eventually(t, 10*time.Second, inRing(all, 5))
	requestEverywhere(t, all, paths)
	h := o.hits.Load()
	if failed := peerFetchesFailed(t, all); failed > 0 {
		// A previous owner too starved to answer within its bound sends
		// the new owner to the origin, as the mesh's contract has it.
		t.Logf("%d peer fetches failed: the origin was asked %d times after the scale-out", failed, h-keys)
		return
	}
	if h != keys {
		t.Errorf("origin asked %d times after the scale-out, want %d (no more than before)", h, keys)
	}
}

// TestPeerForwardingFields: the owner builds the origin request's forwarding
// fields itself: a peer's forged X-Forwarded-Host or Forwarded never reaches
// the origin (so cannot shape what the owner stores), of its X-Forwarded-For
// only a single address is kept, and of its X-Forwarded-Proto (the scheme
// its client used) only "https", anything else being "http".
func TestPeerForwardingFields(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]http.Header{}
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Clone()
		mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = io.WriteString(w, "links to https://"+r.Header.Get("X-Forwarded-Host")+"/")
	})
	nodes := startCluster(t, o, 2, nil)
	for _, c := range []struct{ xff, wantXFF, proto, wantProto string }{
		{"203.0.113.9", "203.0.113.9", "https", "https"},
		{"203.0.113.9, 10.0.0.1", "", "javascript", "http"},
	} {
		p := ownedBy(t, nodes[0], "n2", fmt.Sprintf("/fwd/%d-", len(c.xff)))
		req := &peerv1.FetchRequest{Key: nodes[0].sites.Default().CacheKey("127.0.0.1", p, ""), Host: "127.0.0.1",
			PathQuery: p, From: "n1", Headers: []*peerv1.HeaderField{
				{Name: "X-Forwarded-Host", Values: []string{"evil.example"}},
				{Name: "Forwarded", Values: []string{"host=evil.example;proto=https"}},
				{Name: "X-Forwarded-Proto", Values: []string{c.proto}},
				{Name: "X-Forwarded-For", Values: []string{c.xff}},
			}}
		resp, err := nodes[0].mesh.Peers().Fetch(t.Context(), nodes[1].PeerAddr(), req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mu.Lock()
		h := seen[p]
		mu.Unlock()
		if strings.Contains(string(body), "evil") || h.Get("X-Forwarded-Host") != "127.0.0.1" || h.Get("Forwarded") != "" ||
			h.Get("X-Forwarded-Proto") != c.wantProto || h.Get("X-Forwarded-For") != c.wantXFF || h.Get("Via") != "1.1 meshcdn" {
			t.Errorf("X-Forwarded-For %q: the origin saw %v and answered %q", c.xff, h, body)
		}
		// What the owner stored is what any client gets.
		if r := do(t, nodes[1], "GET", p); strings.Contains(r.body, "evil") {
			t.Errorf("the owner stored a poisoned body: %q", r.body)
		}
	}
}

// TestPeerPortRefusesStrangers: with mesh TLS, the peer port answers only
// members: a client without a certificate, or with one of another CA, is
// refused, and a member cannot act in another member's name; clients of the
// cluster see no failure meanwhile.
func TestPeerPortRefusesStrangers(t *testing.T) {
	o := newOrigin(t, static("x", "public, max-age=600"))
	nodes := startCluster(t, o, 2, withMeshTLS(t))
	target := nodes[1].PeerAddr()
	load := clientLoad(t, nodes, "/during/", 50, "x")
	call := func(creds credentials.TransportCredentials, from string) error {
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err = peerv1.NewPeerServiceClient(conn).Purge(ctx, &peerv1.PurgeRequest{Id: "x" + from, KeyPrefixes: []string{""},
			From: from, Issued: timestamppb.Now()})
		return err
	}
	if err := call(insecure.NewCredentials(), "n1"); err == nil {
		t.Error("a cleartext client was answered")
	}
	other := t.TempDir()
	if err := tlsconf.InitCA(other, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsconf.Issue(other, "n1", tlsconf.RoleMember, nil, 0); err != nil {
		t.Fatal(err)
	}
	stranger, err := tls.LoadX509KeyPair(filepath.Join(other, "n1.pem"), filepath.Join(other, "n1-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := call(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{stranger}, InsecureSkipVerify: true}), "n1"); err == nil {
		t.Error("a client with another CA's certificate was answered")
	}
	member, err := tls.LoadX509KeyPair(nodes[0].cfg.Mesh.TLS.CertFile, nodes[0].cfg.Mesh.TLS.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	asN1 := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{member}, InsecureSkipVerify: true})
	if err := call(asN1, "n2"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("n1's certificate acting as n2: %v; want PermissionDenied", err)
	}
	if err := call(asN1, "n1"); err != nil {
		t.Errorf("n1 itself: %v", err)
	}
	if failed, sent := load(); failed != 0 || sent == 0 {
		t.Errorf("%d of %d client requests failed meanwhile", failed, sent)
	}
}

// clientLoad sends GETs for keys paths (prefix + i % keys + ".js") round
// the nodes until the returned function is called, which tells how many
// failed or did not answer want (a body of "body of " + path when want is
// empty).
func clientLoad(t *testing.T, nodes []*Node, prefix string, keys int, want string) func() (failed, sent int64) {
	return clientLoadOn(t, func() []*Node { return nodes }, prefix, keys, want)
}

// clientLoadOn is clientLoad over the nodes live returns at each request.
func clientLoadOn(t *testing.T, live func() []*Node, prefix string, keys int, want string) func() (failed, sent int64) {
	stop := make(chan struct{})
	var failed, sent atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := fmt.Sprintf("%s%d.js", prefix, i%keys)
			body := want
			if body == "" {
				body = "body of " + p
			}
			sent.Add(1)
			nodes := live()
			if r := doMaybe(t, nodes[i%len(nodes)], "GET", p); r.Response == nil || r.StatusCode != 200 || r.body != body {
				failed.Add(1)
			}
		}
	})
	return func() (int64, int64) {
		close(stop)
		wg.Wait()
		return failed.Load(), sent.Load()
	}
}

// TestUntrustedMemberOwnsNothing: with mesh TLS, a program that joins
// gossip with meshcdn's metadata (an old start time, a peer address that
// serves its own bodies) but has no certificate of the cluster CA is listed
// as untrusted, never owns a key and is never asked for one: no edge serves
// its bodies.
func TestUntrustedMemberOwnsNothing(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("origin body of " + r.URL.Path))
	})
	certs := withMeshTLS(t)
	nodes := startCluster(t, o, 3, func(c *Config) {
		certs(c)
		c.AdminAddr = "127.0.0.1:0"
	})
	// The impostor: a peer service answering every fetch with its own body,
	// and a gossip member pointing at it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startImpostor(t, "impostor", ln, nodes[0].GossipAddr())
	ac, _ := adminClient(t, nodes[0].AdminAddr())
	eventually(t, 10*time.Second, func() bool {
		r, err := ac.ListMembers(t.Context(), &adminv1.ListMembersRequest{})
		if err != nil {
			return false
		}
		for _, m := range r.GetMembers() {
			if m.GetName() == "impostor" {
				return m.GetState() == "untrusted" && m.GetOwnedShare() == 0
			}
		}
		return false
	})
	for _, n := range nodes {
		if n.RingMembers() != 3 {
			t.Fatalf("%s's ring has %d members", n.Name(), n.RingMembers())
		}
	}
	foreign := 0
	for i := range 40 {
		p := fmt.Sprintf("/new/%d.js", i)
		for _, n := range nodes {
			if r := do(t, n, "GET", p); r.body != "origin body of "+p {
				foreign++
			}
		}
	}
	if foreign != 0 {
		t.Errorf("%d of 120 responses were not the origin's", foreign)
	}
	wantHits(t, o, 40)
	// A purge goes to the members alone, and none is left waiting for the
	// impostor's lease.
	start := time.Now()
	pr, err := ac.Purge(t.Context(), &adminv1.PurgeRequest{Urls: []string{"http://127.0.0.1/new/1.js"}})
	if err != nil {
		t.Fatal(err)
	}
	var receipts []string
	for _, r := range pr.GetNodes() {
		receipts = append(receipts, fmt.Sprintf("%s:%v", r.GetNode(), r.GetApplied()))
	}
	if got := strings.Join(receipts, " "); len(pr.GetNodes()) != 3 || strings.Contains(got, "false") || strings.Contains(got, "impostor") {
		t.Errorf("receipts %s", got)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the purge took %v", took)
	}
}

// TestCertificateRotation: a live mTLS cluster moves to a new CA (both CAs
// trusted, new certificates, then the old CA dropped, each step a reload
// as SIGHUP does) with no failed client request; afterwards a certificate
// of the old CA is refused, and a node with one of the new CA joins and
// takes keys.
func TestCertificateRotation(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	oldCA := t.TempDir()
	certs := withMeshTLSIn(t, oldCA)
	nodes := startCluster(t, o, 3, certs)
	load := clientLoad(t, nodes, "/rot/", 300, "")
	if _, err := tlsconf.Issue(oldCA, "n1-old", tlsconf.RoleMember, nil, 0); err != nil { // for the end
		t.Fatal(err)
	}
	newCA := t.TempDir()
	if err := tlsconf.InitCA(newCA, 0); err != nil {
		t.Fatal(err)
	}
	oldPEM, _ := os.ReadFile(filepath.Join(oldCA, tlsconf.CAFile))
	newPEM, _ := os.ReadFile(filepath.Join(newCA, tlsconf.CAFile))
	reloadAll := func(step string) {
		for _, n := range nodes {
			if err := n.Reload(); err != nil {
				t.Fatalf("%s: %s: %v", step, n.Name(), err)
			}
		}
	}
	// 1. Trust both CAs everywhere.
	for _, n := range nodes {
		if err := os.WriteFile(n.cfg.Mesh.TLS.CAFile, append(append([]byte{}, oldPEM...), newPEM...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reloadAll("both CAs")
	// 2. New certificates from the new CA.
	for _, n := range nodes {
		if _, err := tlsconf.Issue(newCA, n.Name(), tlsconf.RoleMember, nil, 0); err != nil {
			t.Fatal(err)
		}
		for _, f := range [][2]string{{n.Name() + ".pem", n.cfg.Mesh.TLS.CertFile}, {n.Name() + "-key.pem", n.cfg.Mesh.TLS.KeyFile}} {
			if err := os.Rename(filepath.Join(newCA, f[0]), f[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	reloadAll("new certificates")
	// 3. Drop the old CA.
	for _, n := range nodes {
		if err := os.WriteFile(n.cfg.Mesh.TLS.CAFile, newPEM, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reloadAll("old CA dropped")
	// A node of the new CA joins and takes keys: its connections are new.
	certs4 := withMeshTLSIn(t, newCA)
	cfg := Config{Name: "n4", Version: "test", Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		Fast: true, Join: []string{nodes[0].GossipAddr()}}}
	certs4(&cfg)
	n4 := startNode(t, o, cfg)
	eventually(t, 10*time.Second, func() bool { return n4.RingMembers() == 4 && nodes[0].RingMembers() == 4 })
	p := ownedBy(t, nodes[0], "n4", "/after/")
	if r := do(t, nodes[0], "GET", p); r.body != "body of "+p || !strings.Contains(r.cacheStatus(), "detail=peer-n4") {
		t.Errorf("a fetch from the new node: %q %s", r.body, r.cacheStatus())
	}
	if failed, sent := load(); failed != 0 || sent == 0 {
		t.Errorf("%d of %d client requests failed during the rotation", failed, sent)
	}
	// A certificate of the old CA is refused now.
	old, err := tls.LoadX509KeyPair(filepath.Join(oldCA, "n1-old.pem"), filepath.Join(oldCA, "n1-old-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", nodes[1].PeerAddr(), &tls.Config{Certificates: []tls.Certificate{old}, InsecureSkipVerify: true})
	if err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a certificate of the dropped CA: %v; want the handshake refused", err)
	}
}

// TestSelfSignedMembers: nodes that hold the CA key sign their own
// certificates (replicas whose names are not known in advance) and are
// members like a node with an issued certificate; a certificate replaced
// on disk is taken up without a reload call.
func TestSelfSignedMembers(t *testing.T) {
	o := newOrigin(t, static("x", "public, max-age=600"))
	dir := t.TempDir()
	issued := withMeshTLSIn(t, dir)
	nodes := startCluster(t, o, 3, func(c *Config) {
		if c.Name == "n1" {
			issued(c)
			return
		}
		c.Mesh.TLS = tlsconf.MeshFiles{CAFile: filepath.Join(dir, tlsconf.CAFile), CAKeyFile: filepath.Join(dir, tlsconf.CAKeyFile)}
	})
	for _, owner := range []string{"n2", "n3"} {
		p := ownedBy(t, nodes[0], owner, "/self/")
		if r := do(t, nodes[0], "GET", p); !strings.Contains(r.cacheStatus(), "detail=peer-"+owner) {
			t.Errorf("a fetch from self-signed %s: %s", owner, r.cacheStatus())
		}
	}
	served := func() string {
		conn, err := tls.Dial("tcp", nodes[0].PeerAddr(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return err.Error()
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()
	next := t.TempDir()
	for _, f := range []string{tlsconf.CAFile, tlsconf.CAKeyFile} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if err := os.WriteFile(filepath.Join(next, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tlsconf.Issue(next, "n1", tlsconf.RoleMember, nil, 0); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"n1.pem", "n1-key.pem"} {
		if err := os.Rename(filepath.Join(next, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, func() bool { return served() != before })
	p := ownedBy(t, nodes[1], "n1", "/after/")
	if r := do(t, nodes[1], "GET", p); !strings.Contains(r.cacheStatus(), "detail=peer-n1") {
		t.Errorf("a fetch from n1 with its new certificate: %s", r.cacheStatus())
	}
}

// TestGossipKeyRotation: a live mTLS cluster moves to a new gossip key by
// three rolling restarts, one per step on the key file (add, use, retire),
// with 0 failed client requests; every restarted node rejoins, and after
// the rotation the file holds only the new key.
func TestGossipKeyRotation(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	dir := t.TempDir()
	if err := tlsconf.InitCA(dir, 0); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "gossip.key")
	if err := gossip.CreateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	first, _ := gossip.ReadKeyFile(keyFile)
	configure := func(c *Config) {
		keys, err := gossip.ReadKeyFile(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		c.Mesh.GossipKeys = keys
		c.Mesh.TLS = tlsconf.MeshFiles{CAFile: filepath.Join(dir, tlsconf.CAFile), CAKeyFile: filepath.Join(dir, tlsconf.CAKeyFile)}
	}
	nodes := startCluster(t, o, 3, configure)
	var live atomic.Pointer[[]*Node]
	live.Store(&nodes)
	load := clientLoadOn(t, func() []*Node { return *live.Load() }, "/keys/", 200, "")
	restart := func(i int) {
		others := slices.Delete(slices.Clone(nodes), i, i+1)
		live.Store(&others)
		old := nodes[i]
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := old.Shutdown(ctx); err != nil {
			t.Fatalf("stop %s: %v", old.Name(), err)
		}
		cfg := Config{Name: old.Name(), Version: "test", Mesh: &MeshConfig{PeerAddr: old.PeerAddr(), GossipAddr: old.GossipAddr(),
			Fast: true, Join: []string{others[0].GossipAddr()}}}
		configure(&cfg)
		nodes[i] = startNode(t, o, cfg)
		waitRings(t, nodes, 3)
		all := slices.Clone(nodes)
		live.Store(&all)
	}
	for _, step := range []func(string) error{gossip.AddKey, gossip.UseNewestKey, gossip.RetireKeys} {
		if err := step(keyFile); err != nil {
			t.Fatal(err)
		}
		for i := range nodes {
			restart(i)
		}
	}
	if failed, sent := load(); failed != 0 || sent == 0 {
		t.Errorf("%d of %d client requests failed during the rotation", failed, sent)
	}
	keys, _ := gossip.ReadKeyFile(keyFile)
	if len(keys) != 1 || bytes.Equal(keys[0], first[0]) {
		t.Fatalf("after the rotation the file holds %d keys, the old one among them: %v", len(keys), bytes.Equal(keys[0], first[0]))
	}
	// GetConfig tells an operator where each node is: one key, the CA key
	// file, and never a key itself.
	cfg := adminView{nodes[0]}.Config()
	js := protojson.Format(cfg)
	if m := cfg.GetMesh(); m.GetGossipKeys() != 1 || m.GetTls().GetCaKeyFile() != filepath.Join(dir, tlsconf.CAKeyFile) ||
		strings.Contains(js, base64.StdEncoding.EncodeToString(keys[0])) {
		t.Errorf("GetConfig after the rotation:\n%s", js)
	}
}

// TestViaOncePerCDN: a response that crossed peers names the CDN once in
// Via, after the origin's own entries.
func TestViaOncePerCDN(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Via", "1.1 origin-proxy")
		_, _ = w.Write([]byte("x"))
	})
	nodes := startCluster(t, o, 3, nil)
	p := ownedBy(t, nodes[0], "n2", "/via/")
	for range 2 { // a fill through the owner, then a copy
		r := do(t, nodes[0], "GET", p)
		if v := r.Header.Get("Via"); v != "1.1 origin-proxy, 1.1 meshcdn" {
			t.Errorf("Via %q (%s)", v, r.cacheStatus())
		}
	}
}

// TestCertificateRoles is acceptance 2 of the certificate roles. On a
// running 3-node cluster with mutual TLS and admin listeners that trust the
// cluster CA: a certificate of the cluster CA for a name that is no member,
// an admin certificate, a server certificate and the certificate of a
// member that left are each refused on the peer port for every PeerService
// method (the one that left once it has been gone longer than the grace
// against false reports of a death), and none of those calls changes
// anything; a member's certificate
// is refused on the admin port, an admin certificate is served there; a
// gossip member that proves itself with an admin or a server certificate
// owns nothing and is listed as untrusted; a member's call that names no
// caller speaks for its certificate's member; the members keep serving.
func TestCertificateRoles(t *testing.T) {
	o := newOrigin(t, static("x", "public, max-age=600"))
	pki := t.TempDir()
	certs := withMeshTLSIn(t, pki)
	for _, c := range []struct {
		name  string
		role  tlsconf.Role
		hosts []string
	}{{"outsider", tlsconf.RoleMember, nil}, {"ops", tlsconf.RoleAdmin, nil}, {"www", tlsconf.RoleServer, []string{"127.0.0.1"}}} {
		if _, err := tlsconf.Issue(pki, c.name, c.role, c.hosts, 0); err != nil {
			t.Fatal(err)
		}
	}
	nodes := startCluster(t, o, 3, func(c *Config) {
		certs(c)
		c.AdminAddr = "127.0.0.1:0"
		c.AdminCertFile, c.AdminKeyFile = filepath.Join(pki, "www.pem"), filepath.Join(pki, "www-key.pem")
		c.AdminClientCAFile = filepath.Join(pki, tlsconf.CAFile)
	})
	load := clientLoad(t, nodes[:2], "/during/", 50, "x")
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(pki, tlsconf.CAFile))
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA: %v", err)
	}
	creds := func(name string) credentials.TransportCredentials {
		c, err := tls.LoadX509KeyPair(filepath.Join(pki, name+".pem"), filepath.Join(pki, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		// A member's name is no DNS name: the client checks nothing of the
		// server here, the server checks the client.
		return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{c}, InsecureSkipVerify: true})
	}
	// every PeerService method, as one caller: the errors they got.
	every := func(creds credentials.TransportCredentials, from string) map[string]error {
		conn, err := grpc.NewClient(nodes[0].PeerAddr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		pc := peerv1.NewPeerServiceClient(conn)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		errs := map[string]error{}
		stream, err := pc.Fetch(ctx, &peerv1.FetchRequest{Key: "127.0.0.1/x.js", Host: "127.0.0.1", PathQuery: "/x.js", From: from})
		if err == nil {
			_, err = stream.Recv()
		}
		errs["Fetch"] = err
		_, errs["Purge"] = pc.Purge(ctx, &peerv1.PurgeRequest{Id: "by-" + from, KeyPrefixes: []string{""}, From: from, Issued: timestamppb.Now()})
		_, errs["Drain"] = pc.Drain(ctx, &peerv1.DrainRequest{From: from})
		_, errs["Stats"] = pc.Stats(ctx, &peerv1.StatsRequest{})
		_, errs["SyncPurges"] = pc.SyncPurges(ctx, &peerv1.SyncPurgesRequest{})
		_, errs["PurgeStatus"] = pc.PurgeStatus(ctx, &peerv1.PurgeStatusRequest{Ids: []string{"x"}})
		_, errs["Certificate"] = pc.Certificate(ctx, &peerv1.CertificateRequest{Name: "127.0.0.1"})
		_, errs["Challenge"] = pc.Challenge(ctx, &peerv1.ChallengeRequest{Token: "x"})
		_, errs["Lease"] = pc.Lease(ctx, &peerv1.LeaseRequest{From: from, Sites: []*peerv1.LeaseAsk{{Site: "127.0.0.1", Budget: &peerv1.Limits{Concurrency: 9}, Waiting: 9}}})
		if n := len(peerv1.PeerService_ServiceDesc.Methods) + len(peerv1.PeerService_ServiceDesc.Streams); len(errs) != n {
			t.Fatalf("called %d methods of %d", len(errs), n)
		}
		return errs
	}
	refused := func(who string, errs map[string]error) {
		t.Helper()
		for m, err := range errs {
			if c := status.Code(err); c != codes.PermissionDenied && c != codes.Unavailable && c != codes.Unauthenticated {
				t.Errorf("%s: %s answered (%v)", who, m, err)
			}
		}
	}
	refused("a cluster certificate for a name that is no member", every(creds("outsider"), ""))
	refused("... naming a member in from", every(creds("outsider"), "n2"))
	refused("an admin certificate", every(creds("ops"), "ops"))
	refused("a server certificate", every(creds("www"), "www"))
	if errs := every(creds("outsider"), ""); status.Code(errs["Stats"]) != codes.PermissionDenied ||
		!strings.Contains(errs["Stats"].Error(), `"outsider" is not a current member`) {
		t.Errorf("the outsider's Stats: %v; want PermissionDenied naming it", errs["Stats"])
	}
	// A member's call: a from that names another member is refused, an
	// empty one speaks for the certificate's member (Drain relays need it).
	conn, err := grpc.NewClient(nodes[0].PeerAddr(), grpc.WithTransportCredentials(creds("n2")))
	if err != nil {
		t.Fatal(err)
	}
	pc := peerv1.NewPeerServiceClient(conn)
	if _, err := pc.Purge(t.Context(), &peerv1.PurgeRequest{Id: "as-n3", Keys: []string{"127.0.0.1/y.js"}, From: "n3", Issued: timestamppb.Now()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("n2's certificate naming n3: %v; want PermissionDenied", err)
	}
	if _, err := pc.Stats(t.Context(), &peerv1.StatsRequest{}); err != nil {
		t.Errorf("n2's Stats: %v", err)
	}
	if _, err := pc.Lease(t.Context(), &peerv1.LeaseRequest{From: "n3"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a lease request of n2's certificate naming n3: %v; want PermissionDenied", err)
	}
	if resp, err := pc.Lease(t.Context(), &peerv1.LeaseRequest{Sites: []*peerv1.LeaseAsk{{Site: "127.0.0.1", Budget: &peerv1.Limits{Concurrency: 1}}}}); err != nil || len(resp.GetGrants()) != 1 {
		t.Errorf("n2's lease request: %v %v", resp, err)
	}
	stream, err := pc.Fetch(t.Context(), &peerv1.FetchRequest{Key: "127.0.0.1/z.js", Host: "127.0.0.1", PathQuery: "/z.js", TakeOver: true})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) == codes.InvalidArgument {
		t.Errorf("a take-over offer without from from n2: %v; want it to speak for n2", err)
	}
	_ = conn.Close()
	// Nothing the refused calls asked for happened.
	for _, n := range nodes {
		if n.mesh.Draining() || n.RingMembers() != 3 {
			t.Errorf("%s: draining %v, %d ring members after refused calls", n.Name(), n.mesh.Draining(), n.RingMembers())
		}
	}
	if applied := nodes[0].purges.Applied([]string{"by-", "by-n2", "by-ops", "by-www", "as-n3"}); len(applied) != 0 {
		t.Errorf("refused purges applied: %v", applied)
	}
	// The admin port, trusting the cluster CA, takes admin certificates only.
	admin := func(name string) error {
		c, err := tls.LoadX509KeyPair(filepath.Join(pki, name+".pem"), filepath.Join(pki, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(nodes[0].AdminAddr(), grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{Certificates: []tls.Certificate{c}, RootCAs: roots, ServerName: "127.0.0.1"})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err = adminv1.NewAdminServiceClient(conn).ListMembers(ctx, &adminv1.ListMembersRequest{})
		return err
	}
	if err := admin("n1"); err == nil {
		t.Error("a member's certificate opened the admin port")
	}
	if err := admin("ops"); err != nil {
		t.Errorf("an admin certificate on the admin port: %v", err)
	}
	// Gossip members proving themselves with an admin or a server
	// certificate of the cluster CA own nothing.
	for _, name := range []string{"ops", "www"} {
		c, err := tls.LoadX509KeyPair(filepath.Join(pki, name+".pem"), filepath.Join(pki, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{c}, ClientAuth: tls.RequireAnyClientCert})
		if err != nil {
			t.Fatal(err)
		}
		startImpostor(t, name, ln, nodes[0].GossipAddr())
	}
	eventually(t, 10*time.Second, func() bool {
		untrusted := 0
		for _, m := range nodes[0].mesh.Members() {
			if (m.Name == "ops" || m.Name == "www") && m.State == "untrusted" {
				untrusted++
			}
		}
		return untrusted == 2
	})
	for _, n := range nodes {
		if n.RingMembers() != 3 {
			t.Errorf("%s's ring has %d members with the impostors", n.Name(), n.RingMembers())
		}
	}
	// A member that left is no member: its certificate opens nothing.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := nodes[2].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return nodes[0].RingMembers() == 2 })
	// Past the grace a member gets against a false report of its death
	// (2 s with these timings), read-only first, then every method.
	eventually(t, 10*time.Second, func() bool {
		conn, err := grpc.NewClient(nodes[0].PeerAddr(), grpc.WithTransportCredentials(creds("n3")))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = peerv1.NewPeerServiceClient(conn).Stats(t.Context(), &peerv1.StatsRequest{})
		return status.Code(err) == codes.PermissionDenied
	})
	refused("the certificate of a member that left", every(creds("n3"), "n3"))
	if failed, sent := load(); failed != 0 || sent == 0 {
		t.Errorf("%d of %d client requests failed meanwhile", failed, sent)
	}
}

// startImpostor runs, until the test ends, a peer service on ln that
// answers every fetch with its own body, and a gossip member called name
// that joins at seed with an old start time and ln as its peer address.
func startImpostor(t *testing.T, name string, ln net.Listener, seed string) {
	t.Helper()
	srv := grpc.NewServer()
	peerv1.RegisterPeerServiceServer(srv, peer.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		_, _ = w.Write([]byte("poisoned"))
	}), nil, nil, slog.New(slog.DiscardHandler)))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	g, err := gossip.New(gossip.Config{Name: name, BindAddr: "127.0.0.1:0", Join: []string{seed}, Fast: true,
		Meta: gossip.Meta{PeerAddr: ln.Addr().String(), HTTPAddr: "127.0.0.1:1", Started: time.Now().Add(-time.Hour).UnixMilli()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
}
