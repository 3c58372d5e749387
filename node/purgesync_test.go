package node

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/meshcdn/meshcdn/proto/meshcdn/admin/v1"
	peerv1 "github.com/meshcdn/meshcdn/proto/meshcdn/peer/v1"
)

// versionedOrigin answers "version N" for the Nth fill of a path, with an
// ETag per version, and counts conditional requests.
type versionedOrigin struct {
	*testOrigin
	mu          sync.Mutex
	fills       map[string]int
	conditional map[string]int
}

func newVersionedOrigin(t *testing.T) *versionedOrigin {
	v := &versionedOrigin{fills: map[string]int{}, conditional: map[string]int{}}
	v.testOrigin = newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		v.mu.Lock()
		defer v.mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age=600")
		if inm := r.Header.Get("If-None-Match"); inm != "" {
			v.conditional[r.URL.Path]++
			if inm == fmt.Sprintf(`"%d"`, v.fills[r.URL.Path]) {
				w.Header().Set("ETag", inm)
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
		v.fills[r.URL.Path]++
		w.Header().Set("ETag", fmt.Sprintf(`"%d"`, v.fills[r.URL.Path]))
		fmt.Fprintf(w, "version %d", v.fills[r.URL.Path])
	})
	return v
}

func (v *versionedOrigin) count(m map[string]int, path string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return m[path]
}

// TestPurgeCatchUp: a purge whose fan-out missed a node reaches it through
// the purge log of the others, and removes only what it fetched before the
// purge was issued.
func TestPurgeCatchUp(t *testing.T) {
	o := newVersionedOrigin(t)
	nodes := startCluster(t, o.testOrigin, 3, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	for _, p := range []string{"/a.css", "/old.css"} {
		for _, n := range nodes {
			do(t, n, "GET", p)
			wantStatus(t, do(t, n, "GET", p), "meshcdn; hit")
		}
	}
	keys, _, err := nodes[0].purgeKeys([]string{"http://127.0.0.1/a.css", "http://127.0.0.1/old.css"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Two purges reach n1 and n2 only: one issued now, one issued a minute
	// ago (before any node fetched /old.css), which must not remove it.
	now := &peerv1.PurgeRequest{Id: "00000000000000a1", Keys: keys[:1], From: "n1", Issued: timestamppb.Now()}
	old := &peerv1.PurgeRequest{Id: "00000000000000a2", Keys: keys[1:], From: "n1", Issued: timestamppb.New(time.Now().Add(-time.Minute))}
	for _, n := range nodes[:2] {
		n.purges.Apply(now)
		n.purges.Apply(old)
	}
	eventually(t, 10*time.Second, func() bool { return counterValue(t, nodes[2], "meshcdn_purges_caught_up_total") == 2 })
	ac, _ := adminClient(t, nodes[0].AdminAddr())
	st, err := ac.GetPurge(t.Context(), &adminv1.GetPurgeRequest{PurgeId: now.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range st.GetNodes() {
		if !rc.GetApplied() {
			t.Errorf("after the catch-up, GetPurge: %v", st.GetNodes())
		}
	}
	if r := do(t, nodes[2], "GET", "/a.css"); r.body != "version 2" {
		t.Errorf("/a.css at n3 after catching up: %q (%s)", r.body, r.cacheStatus())
	}
	wantStatus(t, do(t, nodes[2], "GET", "/old.css"), "meshcdn; hit")
	// The purge is applied once: hearing of it again removes nothing.
	if got := nodes[2].purges.Apply(now); got != 0 {
		t.Errorf("a purge already applied removed %d objects again", got)
	}
}

// TestPurgeLease: a node cut off from every peer cannot know of purges
// issued meanwhile, so after the purge lease it revalidates what it serves;
// a node whose peers left gracefully keeps serving hits. A purge that a
// member did not acknowledge is answered after that member's lease, naming
// it.
func TestPurgeLease(t *testing.T) {
	const lease = 400 * time.Millisecond
	leaseCfg := func(c *Config) { c.Mesh.PurgeLease = lease; c.AdminAddr = "127.0.0.1:0" }

	t.Run("cut off", func(t *testing.T) {
		o := newVersionedOrigin(t)
		nodes := startCluster(t, o.testOrigin, 3, leaseCfg)
		do(t, nodes[2], "GET", "/x.css")
		fetched := time.Now() // no earlier than the response time n3 stored
		wantStatus(t, do(t, nodes[2], "GET", "/x.css"), "meshcdn; hit")
		halt(nodes[0])
		halt(nodes[1])
		eventually(t, 10*time.Second, func() bool { return counterValue(t, nodes[2], "meshcdn_purges_in_step") == 0 })
		time.Sleep(time.Until(fetched.Add(lease))) // objects fetched within the lease are still served
		r := do(t, nodes[2], "GET", "/x.css")
		if r.body != "version 1" || !strings.Contains(r.cacheStatus(), "fwd=stale") || o.count(o.conditional, "/x.css") != 1 {
			t.Fatalf("out of step: %q %s, conditional requests %d; want a revalidation", r.body, r.cacheStatus(), o.count(o.conditional, "/x.css"))
		}
		// A revalidated object is served within the lease.
		wantStatus(t, do(t, nodes[2], "GET", "/x.css"), "meshcdn; hit")

		// Purging now names both unreachable members and answers no sooner
		// than their lease.
		ac, _ := adminClient(t, nodes[2].AdminAddr())
		start := time.Now()
		resp, err := ac.Purge(t.Context(), &adminv1.PurgeRequest{Urls: []string{"http://127.0.0.1/y.css"}})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		notApplied := map[string]bool{}
		for _, rc := range resp.GetNodes() {
			if !rc.GetApplied() {
				notApplied[rc.GetNode()] = true
			}
		}
		if !notApplied["n1"] || !notApplied["n2"] || notApplied["n3"] || took < lease {
			t.Errorf("receipts %v after %v; want n1 and n2 not applied, after at least %v", resp.GetNodes(), took, lease)
		}
		st, err := ac.GetPurge(t.Context(), &adminv1.GetPurgeRequest{PurgeId: resp.GetPurgeId()})
		if err != nil {
			t.Fatal(err)
		}
		for _, rc := range st.GetNodes() {
			if rc.GetApplied() != (rc.GetNode() == "n3") || (!rc.GetApplied() && rc.GetError() == "") {
				t.Errorf("GetPurge: %v", st.GetNodes())
			}
		}

		// Alone after failures, the node still revalidates past the lease, and
		// lists the others as failed.
		eventually(t, 10*time.Second, func() bool { return nodes[2].RingMembers() == 1 })
		ms, err := ac.ListMembers(t.Context(), &adminv1.ListMembersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var states []string
		for _, m := range ms.GetMembers() {
			states = append(states, m.GetName()+"="+m.GetState())
		}
		if got := strings.Join(states, " "); got != "n3=alive n1=failed n2=failed" {
			t.Errorf("members %q", got)
		}
		time.Sleep(lease) // let the revalidated object age past the lease
		r = do(t, nodes[2], "GET", "/x.css")
		if !strings.Contains(r.cacheStatus(), "fwd=stale") || o.count(o.conditional, "/x.css") != 2 {
			t.Errorf("alone after failures: %s, conditional requests %d", r.cacheStatus(), o.count(o.conditional, "/x.css"))
		}
	})

	t.Run("left gracefully", func(t *testing.T) {
		o := newVersionedOrigin(t)
		nodes := startCluster(t, o.testOrigin, 3, leaseCfg)
		do(t, nodes[2], "GET", "/x.css")
		for _, n := range nodes[:2] {
			if err := n.Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 10*time.Second, func() bool { return nodes[2].RingMembers() == 1 })
		time.Sleep(2 * lease) // past the lease: nothing to sync with, nothing lost
		wantStatus(t, do(t, nodes[2], "GET", "/x.css"), "meshcdn; hit")
		if c := o.count(o.conditional, "/x.css"); c != 0 {
			t.Errorf("%d revalidations after the others left gracefully", c)
		}
	})
}

// TestPurgeRacesACopy: a node that has applied a purge and then fills from
// a peer that has not applied it yet (the fan-out is still on its way)
// neither serves nor keeps what the peer sent: it asks the origin, and its
// Cache-Status and Explain agree that the new response is stored. Copies
// carry the time the owner fetched the object from the origin.
func TestPurgeRacesACopy(t *testing.T) {
	o := newVersionedOrigin(t)
	// A long purge lease: on a loaded machine a sync round late by more
	// than the default 2 s made the owner revalidate its object (it could
	// not vouch for its purge log), so n1 got the origin's new version from
	// it (served, not stored, rightly) instead of racing the copy this test
	// is about.
	nodes := startCluster(t, o.testOrigin, 3, func(c *Config) { c.Mesh.PurgeLease = time.Minute })
	keys, _, err := nodes[0].purgeKeys([]string{"http://127.0.0.1/r.css"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := keys[0]
	ownerName, _ := nodes[0].mesh.Ring().Owner(key)
	var owner, other *Node
	for _, n := range nodes {
		if n.Name() == ownerName {
			owner = n
		} else if other == nil {
			other = n
		}
	}
	do(t, owner, "GET", "/r.css")
	wantStatus(t, do(t, owner, "GET", "/r.css"), "meshcdn; hit")

	// A copy records when the owner fetched the object, not when it arrived.
	do(t, other, "GET", "/r.css")
	obj, ok := other.copies.Get(key)
	own, _ := owner.store.Get(key)
	if !ok || len(obj.Variants) != 1 || !obj.Variants[0].FetchedAt().Equal(own.Variants[0].ResponseTime) {
		t.Fatalf("copy at %s: %v; want the owner's fetch time %v", other.Name(), obj, own.Variants[0].ResponseTime)
	}

	purge := &peerv1.PurgeRequest{Id: "race", Keys: keys, From: "test", Issued: timestamppb.Now()}
	other.purges.Apply(purge) // the owner has not applied it yet
	before := o.hits.Load()
	r := do(t, other, "GET", "/r.css")
	if r.body != "version 2" || strings.Contains(r.cacheStatus(), "detail=peer-") || !strings.Contains(r.cacheStatus(), "stored") {
		t.Fatalf("%s served its owner's pre-purge object: %q %s", other.Name(), r.body, r.cacheStatus())
	}
	if got := o.hits.Load() - before; got != 1 {
		t.Errorf("origin asked %d times; want 1", got)
	}
	if got := labelledValue(t, other, "meshcdn_peer_fetches_total", "purged"); got != 1 {
		t.Errorf("meshcdn_peer_fetches_total{result=purged} = %v; want 1", got)
	}
	ex, err := (adminView{other}).Explain("http://127.0.0.1/r.css", "GET", nil)
	if err != nil || !ex.Stored || ex.Outcome != "hit" {
		t.Errorf("explain after a stored fill: %+v %v", ex, err)
	}
	if r := do(t, other, "GET", "/r.css"); r.body != "version 2" || !strings.HasPrefix(r.cacheStatus(), "meshcdn; hit") {
		t.Errorf("second request: %q %s", r.body, r.cacheStatus())
	}

	// The owner applies the purge and fetches anew within Skew of it: the
	// clocks alone cannot tell that copy from a pre-purge one, but the
	// owner vouches for having applied the purge before it fetched, so a
	// node that has applied the purge keeps the copy.
	owner.purges.Apply(purge)
	if r := do(t, owner, "GET", "/r.css"); r.body != "version 3" {
		t.Fatalf("owner after the purge: %q %s", r.body, r.cacheStatus())
	}
	var third *Node
	for _, n := range nodes {
		if n != owner && n != other {
			third = n
		}
	}
	third.purges.Apply(purge)
	r = do(t, third, "GET", "/r.css")
	if r.body != "version 3" || r.cacheStatus() != "meshcdn; fwd=uri-miss; fwd-status=200; stored; detail=peer-"+owner.Name() {
		t.Errorf("%s, a copy fetched just after the purge: %q %s", third.Name(), r.body, r.cacheStatus())
	}
	if r := do(t, third, "GET", "/r.css"); r.body != "version 3" || r.cacheStatus() != "meshcdn; hit" {
		t.Errorf("%s after keeping the copy: %q %s", third.Name(), r.body, r.cacheStatus())
	}
}

// TestCopiesAfterPurge: after a purge through the cluster, the owner
// refills the object at once (within the clocks' allowance of the purge),
// and every other node keeps its copy of the new version again: one peer
// fetch, then hits, not a fetch from the owner on every request for as
// long as the object lives.
func TestCopiesAfterPurge(t *testing.T) {
	o := newVersionedOrigin(t)
	nodes := startCluster(t, o.testOrigin, 3, nil)
	keys, _, err := nodes[0].purgeKeys([]string{"http://127.0.0.1/r.css"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ownerName, _ := nodes[0].mesh.Ring().Owner(keys[0])
	var owner *Node
	var others []*Node
	for _, n := range nodes {
		if n.Name() == ownerName {
			owner = n
		} else {
			others = append(others, n)
		}
	}
	for _, n := range nodes {
		do(t, n, "GET", "/r.css")
	}
	if r := do(t, others[0], "PURGE", "/r.css"); r.StatusCode != http.StatusOK {
		t.Fatalf("PURGE: %d %s", r.StatusCode, r.body)
	}
	if r := do(t, owner, "GET", "/r.css"); r.body != "version 2" {
		t.Fatalf("the owner after the purge: %q %s", r.body, r.cacheStatus())
	}
	for _, n := range others {
		r := do(t, n, "GET", "/r.css")
		if r.body != "version 2" || r.cacheStatus() != "meshcdn; fwd=uri-miss; fwd-status=200; stored; detail=peer-"+owner.Name() {
			t.Errorf("%s after the purge: %q %s; want the owner's new version, kept", n.Name(), r.body, r.cacheStatus())
		}
		for range 3 {
			if r := do(t, n, "GET", "/r.css"); r.body != "version 2" || r.cacheStatus() != "meshcdn; hit" {
				t.Errorf("%s again: %q %s; want a hit on its copy", n.Name(), r.body, r.cacheStatus())
			}
		}
	}
	if got := o.hits.Load(); got != 2 {
		t.Errorf("the origin was asked %d times; want 2 (before and after the purge)", got)
	}
}

// TestNotReadyUntilInStep: a node that has joined others but could not yet
// read any of their purge logs reports not ready, so a load balancer keeps
// traffic away from what it might have missed while it was down.
func TestNotReadyUntilInStep(t *testing.T) {
	o := newVersionedOrigin(t)
	n1 := startNode(t, o.testOrigin, Config{Name: "n1", Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}})
	readyz := func(n *Node) (int, string) {
		resp, err := http.Get("http://" + n.MetricsAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := readyz(n1); code != 200 {
		t.Fatalf("a node alone: %d %q", code, body)
	}
	n1.mesh.StopServing() // its gossip answers, its peer service does not
	n2 := startNode(t, o.testOrigin, Config{Name: "n2", Mesh: &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		Fast: true, Join: []string{n1.GossipAddr()}, PurgeLease: 400 * time.Millisecond}})
	eventually(t, 10*time.Second, func() bool { return n2.RingMembers() == 2 })
	time.Sleep(n2.purges.Lease()) // a few rounds, all failing
	if code, body := readyz(n2); code != http.StatusServiceUnavailable || !strings.Contains(body, "catching up on purges") {
		t.Errorf("a node that could not read any purge log: %d %q", code, body)
	}
}
