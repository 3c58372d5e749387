package node

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// startRegions starts two regions, a and b, of two members each, shield
// being the mesh's shield region, and waits until every member sees all
// four and its region's ring of two.
func startRegions(t *testing.T, o *testOrigin, shield string) map[string][]*Node {
	t.Helper()
	out := map[string][]*Node{}
	var first *Node
	for i, region := range []string{"a", "a", "b", "b"} {
		mc := &MeshConfig{PeerAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true, Region: region, ShieldRegion: shield}
		if first != nil {
			mc.Join = []string{first.GossipAddr()}
		}
		n := startNode(t, o, Config{Name: fmt.Sprintf("%s%d", region, i%2+1), Mesh: mc})
		if first == nil {
			first = n
		}
		out[region] = append(out[region], n)
	}
	eventually(t, 15*time.Second, func() bool {
		for _, ns := range out {
			for _, n := range ns {
				if len(n.mesh.Members()) != 4 || n.RingMembers() != 2 {
					return false
				}
			}
		}
		return true
	})
	return out
}

// requestAll asks every member of every region for paths, each once, and
// fails on any answer but 200.
func requestAll(t *testing.T, regions map[string][]*Node, paths []string) {
	t.Helper()
	for _, p := range paths {
		for _, r := range []string{"a", "b"} {
			for _, n := range regions[r] {
				if res := do(t, n, "GET", p); res.StatusCode != http.StatusOK {
					t.Fatalf("%s at %s: %d", p, n.Name(), res.StatusCode)
				}
			}
		}
	}
}

// objectPaths are n distinct static objects.
func objectPaths(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("/region/%d.css", i))
	}
	return out
}

// TestShieldRegion: with region a as the shield, 40 objects requested at all
// four members of two regions cost the origin 40 requests, and each region
// holds each object once, in its owner's memory tier (its other member keeps
// a copy).
func TestShieldRegion(t *testing.T) {
	o := newOrigin(t, static("body", "public, max-age=600"))
	regions := startRegions(t, o, "a")
	paths := objectPaths(40)
	requestAll(t, regions, paths)
	if h := o.hits.Load(); h != 40 {
		t.Errorf("the origin was asked %d times for 40 objects; want 40", h)
	}
	for r, ns := range regions {
		for _, p := range paths {
			key := ns[0].sites.Default().CacheKey("127.0.0.1", p, "")
			held := 0
			for _, n := range ns {
				if _, ok := n.store.Get(key); ok {
					held++
				}
			}
			if held != 1 {
				t.Errorf("region %s holds %s in %d owners' tiers; want 1", r, p, held)
			}
		}
	}
	loc, err := adminView{regions["b"][0]}.Locate("http://127.0.0.1"+paths[0], 0, 0)
	if err != nil || loc.Region != "b" || (loc.Owner != "b1" && loc.Owner != "b2") || (loc.ShieldOwner != "a1" && loc.ShieldOwner != "a2") {
		t.Errorf("Locate in region b: %+v %v", loc, err)
	}
	var shielded float64
	for _, n := range regions["b"] {
		shielded += labelledValue(t, n, "meshcdn_shield_fetches_total", "ok")
	}
	if shielded != 40 {
		t.Errorf("region b's owners filled %v objects from the shield; want 40", shielded)
	}
}

// TestNoShield: without a shield region each region's owner asks the
// origin: 80 requests for 40 objects in two regions, and no fill crosses
// regions.
func TestNoShield(t *testing.T) {
	o := newOrigin(t, static("body", "public, max-age=600"))
	regions := startRegions(t, o, "none")
	requestAll(t, regions, objectPaths(40))
	if h := o.hits.Load(); h != 80 {
		t.Errorf("the origin was asked %d times for 40 objects in 2 regions; want 80", h)
	}
	for _, ns := range regions {
		for _, n := range ns {
			if v := counterValue(t, n, "meshcdn_shield_fetches_total"); v != 0 {
				t.Errorf("%s asked a shield %v times", n.Name(), v)
			}
		}
	}
}

// TestShieldUnreachable: when the shield region's members are gone, the
// other region's owners fill from the origin: no client request fails, and
// the fallback is counted.
func TestShieldUnreachable(t *testing.T) {
	o := newOrigin(t, static("body", "public, max-age=600"))
	regions := startRegions(t, o, "a")
	for _, n := range regions["a"] {
		if err := n.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	paths := objectPaths(20)
	for _, p := range paths {
		for _, n := range regions["b"] {
			if res := do(t, n, "GET", p); res.StatusCode != http.StatusOK {
				t.Fatalf("%s at %s with the shield region gone: %d", p, n.Name(), res.StatusCode)
			}
		}
	}
	if h := o.hits.Load(); h != 20 {
		t.Errorf("the origin was asked %d times for 20 objects; want 20", h)
	}
	var fallbacks float64
	for _, n := range regions["b"] {
		fallbacks += labelledValue(t, n, "meshcdn_shield_fetches_total", "failed") +
			labelledValue(t, n, "meshcdn_shield_fetches_total", "no-member")
	}
	if fallbacks != 20 {
		t.Errorf("%v fills fell back to the origin; want 20 counted", fallbacks)
	}
}

// TestAdvertisedStatus: a member advertises in gossip whether it takes
// client traffic and its requests in flight; the others see both in their
// member lists (and ListMembers shows them).
func TestAdvertisedStatus(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = w.Write([]byte("ok"))
	})
	nodes := startCluster(t, o, 2, nil)
	seen := func(name string) (ready bool, load int) {
		for _, m := range (adminView{nodes[0]}).Members() {
			if m.Name == name {
				return m.Ready, m.Load
			}
		}
		return false, -1
	}
	b := nodes[1].Name()
	eventually(t, 10*time.Second, func() bool { r, l := seen(b); return r && l == 0 })
	done := make(chan struct{})
	for range 3 {
		go func() {
			defer func() { done <- struct{}{} }()
			doMaybe(t, nodes[1], "POST", "/slow")
		}()
	}
	eventually(t, 10*time.Second, func() bool { _, l := seen(b); return l >= 2 })
	close(release)
	for range 3 {
		<-done
	}
	eventually(t, 10*time.Second, func() bool { _, l := seen(b); return l == 0 })
	if _, err := (adminView{nodes[0]}).Drain(t.Context(), b, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { r, _ := seen(b); return !r })
}
