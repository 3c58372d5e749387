package node

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startCluster starts n nodes on loopback in front of o, joined into one mesh,
// and waits until every node's ring has all of them.
func startCluster(t *testing.T, o *testOrigin, size int, tweak func(*Config)) []*Node {
	t.Helper()
	var nodes []*Node
	for i := range size {
		cfg := Config{Name: fmt.Sprintf("n%d", i+1), Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}}
		if i > 0 {
			cfg.Mesh.Join = []string{nodes[0].GossipAddr()}
		}
		if tweak != nil {
			tweak(&cfg)
		}
		nodes = append(nodes, startNode(t, o, cfg))
	}
	eventually(t, 10*time.Second, func() bool {
		for _, n := range nodes {
			if n.RingMembers() != size {
				return false
			}
		}
		return true
	})
	return nodes
}

// TestMeshOffload is acceptance 1 of the mesh: 100 distinct objects, each
// requested at all 3 nodes: the origin sees each object once.
func TestMeshOffload(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		_, _ = w.Write([]byte("body of " + r.URL.Path))
	})
	nodes := startCluster(t, o, 3, nil)
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
}

// TestMeshCoalescing is acceptance 2 of the mesh: 300 concurrent cold requests
// for one object, spread over 3 nodes, make one origin request.
func TestMeshCoalescing(t *testing.T) {
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
	nodes := startCluster(t, o, 3, nil)
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
	// everyone else joined their node's fill.
	eventually(t, 10*time.Second, func() bool {
		sum := 0.0
		for _, n := range nodes {
			sum += counterValue(t, n, "meshcdn_coalesced_requests_total")
		}
		return sum == 299
	})
	close(release)
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d requests failed", bad.Load())
	}
	wantHits(t, o, 1)
}
