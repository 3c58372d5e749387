package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/node/site"
	"github.com/meshcdn/meshcdn/node/slice"
)

// rangeOrigin is a real origin that serves objects with http.ServeContent
// (Range, If-Range, ETag) and records what it was asked and what it sent.
type rangeOrigin struct {
	*testOrigin
	mu      sync.Mutex
	objects map[string][]byte
	etags   map[string]string
	ranges  []string // the Range of every request but revalidations, "" for none
	sent    atomic.Int64
	// ignoreRanges answers every request with the whole object.
	ignoreRanges bool
	// afterRange, when set, runs after each Range request is answered.
	afterRange func(path, rng string)
	// stall, when set, is called for a Range request before it is
	// answered: true makes the origin send half of it, call stalled, then
	// wait for the request's end.
	stall   func(rng string) bool
	stalled func()
}

func newRangeOrigin(t testing.TB) *rangeOrigin {
	o := &rangeOrigin{objects: map[string][]byte{}, etags: map[string]string{}}
	o.testOrigin = newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		body, etag, ignore, after := o.objects[r.URL.Path], o.etags[r.URL.Path], o.ignoreRanges, o.afterRange
		rng := r.Header.Get("Range")
		if r.Header.Get("If-None-Match") == "" && r.Header.Get("If-Modified-Since") == "" {
			o.ranges = append(o.ranges, rng)
		}
		o.mu.Unlock()
		if body == nil {
			http.NotFound(w, r)
			return
		}
		if ignore {
			r.Header.Del("Range")
		}
		if o.stall != nil && rng != "" && o.stall(rng) {
			var a, b int
			_, _ = fmt.Sscanf(rng, "bytes=%d-%d", &a, &b)
			b = min(b, len(body)-1)
			w.Header().Set("ETag", etag)
			w.Header().Set("Cache-Control", "public, max-age=600")
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(body)))
			w.Header().Set("Content-Length", fmt.Sprint(b-a+1))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(body[a : a+(b-a+1)/2])
			w.(http.Flusher).Flush()
			o.stalled()
			<-r.Context().Done()
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "video/mp4")
		cw := &sentCounter{ResponseWriter: w, n: &o.sent}
		http.ServeContent(cw, r, "", time.Unix(1700000000, 0), bytes.NewReader(body))
		if after != nil && rng != "" {
			after(r.URL.Path, rng)
		}
	})
	return o
}

// put makes the origin serve body at path with etag.
func (o *rangeOrigin) put(path string, body []byte, etag string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.objects[path], o.etags[path] = body, etag
}

// asked returns the Range fields of the requests so far, and forgets them.
func (o *rangeOrigin) asked() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.ranges
	o.ranges = nil
	return r
}

type sentCounter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *sentCounter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

// slicedCluster starts 3 meshed nodes with the site video.test in front
// of o, sliced at 1 MiB. Their warnings are counted (see meshTurmoil).
func slicedCluster(t *testing.T, o *rangeOrigin) []*Node {
	return watchedCluster(t, nil, 3, func(c *Config) {
		c.Sites = []site.Config{{Hosts: []string{"video.test"}, Origins: []site.OriginConfig{{URL: o.URL}}, SliceSize: 1 << 20}}
	})
}

// watchedCluster is startCluster with the nodes' warnings logged at the
// test's output and counted (see meshTurmoil).
func watchedCluster(t *testing.T, o *testOrigin, size int, tweak func(*Config)) []*Node {
	warned := new(atomic.Int64)
	nodes := startCluster(t, o, size, func(c *Config) {
		c.Logger = slog.New(warnCounter{slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}), warned})
		if tweak != nil {
			tweak(c)
		}
	})
	for _, n := range nodes {
		warnings.Store(n, warned)
	}
	return nodes
}

// warnings holds the count of warnings of each node watchedCluster started.
var warnings sync.Map // *Node → *atomic.Int64

// warnCounter counts the records of Warn and above it handles.
type warnCounter struct {
	slog.Handler
	n *atomic.Int64
}

func (h warnCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h warnCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return warnCounter{h.Handler.WithAttrs(as), h.n}
}

func (h warnCounter) WithGroup(name string) slog.Handler {
	return warnCounter{h.Handler.WithGroup(name), h.n}
}

// peerFetchesFailed counts the peer fetches of nodes that failed, each of
// which then asked the origin.
func peerFetchesFailed(t *testing.T, nodes []*Node) int64 {
	var n float64
	for _, nd := range nodes {
		n += labelledValue(t, nd, "meshcdn_peer_fetches_total", "failed")
	}
	return int64(n)
}

// meshTurmoil counts what makes a mesh ask the origin again for what one
// member fetched already: peer fetches that failed (each asked the origin
// instead), ring changes (a member taken for dead, its keys someone
// else's for a while), and the nodes' warnings (a member suspected, a
// fill cut off, the purge log out of step).
func meshTurmoil(t *testing.T, nodes []*Node) int64 {
	n := peerFetchesFailed(t, nodes)
	for _, nd := range nodes {
		n += int64(nd.mesh.Epoch())
	}
	if w, ok := warnings.Load(nodes[0]); ok {
		n += w.(*atomic.Int64).Load()
	}
	return n
}

// wantSliceFetches checks the origin's requests since the last look
// (before is meshTurmoil then): every slice was asked for once, at most
// most slices in all. Under load (the race detector on busy cores) a peer
// may not accept a fetch within its bound, gossip may suspect a starved
// member or take it for dead: the node that asked, as well as the owner,
// then asks the origin, and a fill cut off with its peer's connection is
// asked again. As the mesh's contract has it, that costs origin fetches, never
// a client's bytes (which the tests check whatever happens): the count is
// then logged, not judged.
func wantSliceFetches(t *testing.T, o *rangeOrigin, nodes []*Node, before int64, most int) {
	t.Helper()
	asked := o.asked()
	counts := map[string]int{}
	for _, r := range asked {
		counts[r]++
	}
	calm := meshTurmoil(t, nodes) == before
	if !calm {
		t.Logf("peer fetches failed or the ring changed: the origin was asked %q", asked)
	}
	for r, c := range counts {
		if calm && c > 1 {
			t.Errorf("the origin was asked for %q %d times, and no peer fetch failed nor the ring changed", r, c)
		}
	}
	if calm && len(counts) > most {
		t.Errorf("the origin was asked for %d slices (%q), want at most %d", len(counts), asked, most)
	}
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestSlices is acceptance 1 to 3 of slices: a 24 MiB object fetched
// whole through one node of three costs the origin Range requests of one
// slice each and about the object once, and every node holds a share of
// its slices; through the other nodes, and as a Range in its middle, it
// costs the origin nothing more; a 100-byte Range near the end of a cold
// object costs at most two slices.
func TestSlices(t *testing.T) {
	o := newRangeOrigin(t)
	obj := randomBytes(24<<20, 1)
	o.put("/v/a.mp4", obj, `"a1"`)
	nodes := slicedCluster(t, o)
	turmoil := meshTurmoil(t, nodes)

	r := do(t, nodes[0], "GET", "/v/a.mp4", "Host", "video.test")
	if r.StatusCode != 200 || r.body != string(obj) {
		t.Fatalf("whole object: %d, %d bytes (want %d), err %v", r.StatusCode, len(r.body), len(obj), r.err)
	}
	if cl := r.Header.Get("Content-Length"); cl != fmt.Sprint(len(obj)) || r.Header.Get("Content-Range") != "" || r.Header.Get("ETag") != `"a1"` {
		t.Errorf("whole object's fields: Content-Length %q, Content-Range %q, ETag %q", cl, r.Header.Get("Content-Range"), r.Header.Get("ETag"))
	}
	o.mu.Lock()
	asked := o.ranges
	o.mu.Unlock()
	for _, rng := range asked {
		if !strings.HasPrefix(rng, "bytes=") {
			t.Fatalf("the origin got a request without Range (%q): %q", rng, asked)
		}
		var a, b int64
		if _, err := fmt.Sscanf(rng, "bytes=%d-%d", &a, &b); err != nil || b-a+1 > 1<<20 || a%(1<<20) != 0 {
			t.Errorf("the origin got %q, not one slice", rng)
		}
	}
	if sent := o.sent.Load(); sent < int64(len(obj)) {
		t.Errorf("the origin sent %d bytes for a %d-byte object", sent, len(obj))
	}
	wantSliceFetches(t, o, nodes, turmoil, 24)
	const key = "video.test/v/a.mp4"
	for _, n := range nodes {
		held := 0
		for i := range int64(24) {
			k := slice.Spec{Size: 1 << 20, Index: i}.Key(key)
			if _, ok := n.store.Get(k); ok {
				held++
			}
		}
		if held == 0 {
			t.Errorf("%s holds none of the object's slices", n.Name())
		}
		t.Logf("%s owns %d of 24 slices", n.Name(), held)
	}
	fills := 0.0
	for _, n := range nodes {
		fills += labelledValue(t, n, "meshcdn_slice_fills_total", "video.test")
	}
	if got := labelledValue(t, nodes[0], "meshcdn_sliced_responses_total", "video.test"); got != 1 || fills < 24 {
		t.Errorf("meshcdn_sliced_responses_total %v at the node asked, meshcdn_slice_fills_total %v in all (want 1 and at least 24)", got, fills)
	}
	if c := (&statusView{n: nodes[0]}).Counters().Sites["video.test"]; c.Sliced != 1 || c.SliceFills < 1 {
		t.Errorf("the status page's counts: %+v", c)
	}

	turmoil = meshTurmoil(t, nodes)
	for _, n := range nodes[1:] {
		r := do(t, n, "GET", "/v/a.mp4", "Host", "video.test")
		if r.StatusCode != 200 || r.body != string(obj) {
			t.Fatalf("whole object at %s: %d, %d bytes", n.Name(), r.StatusCode, len(r.body))
		}
	}
	r = do(t, nodes[2], "GET", "/v/a.mp4", "Host", "video.test", "Range", "bytes=5000000-13000000")
	if r.StatusCode != 206 || r.body != string(obj[5000000:13000001]) || r.Header.Get("Content-Range") != fmt.Sprintf("bytes 5000000-13000000/%d", len(obj)) {
		t.Fatalf("a Range in the middle: %d %q, %d bytes", r.StatusCode, r.Header.Get("Content-Range"), len(r.body))
	}
	wantSliceFetches(t, o, nodes, turmoil, 0)

	// A cold object: the last 100 bytes.
	obj2 := randomBytes(24<<20, 2)
	o.put("/v/b.mp4", obj2, `"b1"`)
	turmoil = meshTurmoil(t, nodes)
	r = do(t, nodes[1], "GET", "/v/b.mp4", "Host", "video.test", "Range", "bytes=-100")
	if r.StatusCode != 206 || r.body != string(obj2[len(obj2)-100:]) {
		t.Fatalf("the last 100 bytes: %d, %d bytes", r.StatusCode, len(r.body))
	}
	wantSliceFetches(t, o, nodes, turmoil, 2)
}

// TestSlicesHerd is acceptance 4 of slices: 20 clients at once on a cold
// sliced object over three nodes all get the right bytes, and the origin
// sends the object once (see wantSliceFetches for a loaded machine).
func TestSlicesHerd(t *testing.T) {
	o := newRangeOrigin(t)
	obj := randomBytes(4<<20+12345, 3)
	o.put("/v/h.mp4", obj, `"h1"`)
	nodes := slicedCluster(t, o)
	turmoil := meshTurmoil(t, nodes)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := range 20 {
		wg.Go(func() {
			r := doMaybe(t, nodes[i%3], "GET", "/v/h.mp4", "Host", "video.test")
			if r.Response == nil || r.StatusCode != 200 || r.body != string(obj) {
				errs <- fmt.Sprintf("client %d: %v %d bytes", i, r.err, len(r.body))
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if sent := o.sent.Load(); sent < int64(len(obj)) {
		t.Errorf("the origin sent %d bytes for a %d-byte object", sent, len(obj))
	}
	wantSliceFetches(t, o, nodes, turmoil, 5)
}

// TestSlicesNeverMixed is acceptance 5 of slices: an object that changes
// at the origin between two slice fetches is never served as a mix of the
// two versions: the response is cut short, and the next one is whole and
// of one version.
func TestSlicesNeverMixed(t *testing.T) {
	o := newRangeOrigin(t)
	v1, v2 := randomBytes(3<<20, 4), randomBytes(3<<20, 5)
	o.put("/v/m.mp4", v1, `"m1"`)
	var once sync.Once
	o.afterRange = func(path, rng string) {
		if strings.HasPrefix(rng, "bytes=0-") {
			once.Do(func() { o.put("/v/m.mp4", v2, `"m2"`) }) // changed right after the first slice
		}
	}
	nodes := slicedCluster(t, o)
	defer func() {
		if got := labelledValue(t, nodes[0], "meshcdn_slice_version_mismatches_total", "video.test"); got < 1 {
			t.Errorf("meshcdn_slice_version_mismatches_total %v", got)
		}
	}()
	r := doMaybe(t, nodes[0], "GET", "/v/m.mp4", "Host", "video.test")
	if r.err == nil && r.Response != nil && (r.body == string(v1) || r.body == string(v2)) {
		t.Logf("the first response was whole and of one version")
	} else if r.Response != nil && r.err == nil {
		t.Fatalf("a response of %d bytes completed, of neither version alone", len(r.body))
	}
	for range 3 {
		r = do(t, nodes[0], "GET", "/v/m.mp4", "Host", "video.test")
		if r.err == nil && r.body == string(v2) {
			return
		}
		if r.err == nil {
			t.Fatalf("a complete response of %d bytes is not the new version", len(r.body))
		}
	}
	t.Fatal("no complete response of the new version after the change")
}

// TestSlicesOriginIgnoresRanges: an origin that answers a slice's Range
// request with the whole object is served and stored whole; once it has
// done so for an object longer than a slice, the node fetches the site's
// objects whole, without a Range (a shorter object's answer proves
// nothing: a script may ignore ranges where files do not).
func TestSlicesOriginIgnoresRanges(t *testing.T) {
	o := newRangeOrigin(t)
	o.ignoreRanges = true
	short, obj, next := randomBytes(100<<10, 8), randomBytes(3<<20, 6), randomBytes(2<<20, 9)
	o.put("/s.js", short, `"s1"`)
	o.put("/v/w.mp4", obj, `"w1"`)
	o.put("/v/x.mp4", next, `"x1"`)
	nodes := slicedCluster(t, o)
	for _, c := range []struct {
		path  string
		body  []byte
		asked string // the Range the origin sees
	}{
		{"/s.js", short, "bytes=0-1048575"},
		{"/v/w.mp4", obj, "bytes=0-1048575"},
		{"/v/x.mp4", next, ""},
	} {
		o.asked()
		r := do(t, nodes[0], "GET", c.path, "Host", "video.test")
		if r.StatusCode != 200 || r.body != string(c.body) {
			t.Fatalf("%s from an origin that ignores ranges: %d, %d bytes", c.path, r.StatusCode, len(r.body))
		}
		if asked := o.asked(); len(asked) == 0 || asked[0] != c.asked {
			t.Errorf("%s: the origin was asked %q, want first %q", c.path, asked, c.asked)
		}
	}
	r := do(t, nodes[1], "GET", "/v/w.mp4", "Host", "video.test", "Range", "bytes=100-199")
	if r.StatusCode != 206 || r.body != string(obj[100:200]) {
		t.Fatalf("a Range of it: %d, %q", r.StatusCode, r.Header.Get("Content-Range"))
	}
	if sent, most := o.sent.Load(), 2*int64(len(short)+len(obj)+len(next)); sent > most {
		t.Errorf("the origin sent %d bytes for objects of %d", sent, most/2)
	}
}

// TestSlicesServersDisagree: an origin's two servers hold the same bytes
// under ETags of their own, so that slices fetched from both always
// differ in version. The first mismatch purges the object; a second soon
// after makes the node fetch it whole, without another purge: clients
// get it complete from then on, and the mesh is not flooded with purges.
func TestSlicesServersDisagree(t *testing.T) {
	a, b := newRangeOrigin(t), newRangeOrigin(t)
	obj := randomBytes(4<<20, 10)
	a.put("/v/e.mp4", obj, `"on-a"`)
	b.put("/v/e.mp4", obj, `"on-b"`)
	nodes := startCluster(t, nil, 1, func(c *Config) {
		c.Sites = []site.Config{{Hosts: []string{"video.test"}, SliceSize: 1 << 20,
			Origins: []site.OriginConfig{{URL: a.URL}, {URL: b.URL}}}}
	})
	n := nodes[0]
	complete := 0
	for i := 0; i < 6 && complete < 3; i++ {
		r := doMaybe(t, n, "GET", "/v/e.mp4", "Host", "video.test")
		switch {
		case r.Response != nil && r.err == nil && r.body == string(obj):
			complete++
		case complete > 0:
			t.Fatalf("request %d was cut short after a complete one: %v, %d bytes", i, r.err, len(r.body))
		case r.err == nil && r.Response != nil:
			t.Fatalf("request %d completed with %d bytes of mixed slices", i, len(r.body))
		}
	}
	if complete < 3 {
		t.Fatal("no three complete responses in six requests: the object's slices keep differing")
	}
	mismatches := labelledValue(t, n, "meshcdn_slice_version_mismatches_total", "video.test")
	if mismatches < 1 || mismatches > 2 {
		t.Errorf("meshcdn_slice_version_mismatches_total %v, want 1 or 2", mismatches)
	}
	if purges := len(n.purges.Recent(10)); purges != 1 {
		t.Errorf("%d purges for %v mismatches, want 1", purges, mismatches)
	}
}

// TestSlicesHandOff: a drained member's slices move to their new owners,
// pushed before anybody asks (a drain with its hand-off) or pulled from
// its cache on demand (a drain without): either way the object is served
// again without the origin.
func TestSlicesHandOff(t *testing.T) {
	for _, push := range []bool{true, false} {
		t.Run(fmt.Sprintf("push=%v", push), func(t *testing.T) {
			o := newRangeOrigin(t)
			obj := randomBytes(6<<20, 7)
			o.put("/v/d.mp4", obj, `"d1"`)
			nodes := slicedCluster(t, o)
			const key = "video.test/v/d.mp4"
			// Every slice filled at its owner: no copies elsewhere.
			for i := range int64(6) {
				sk := slice.Spec{Size: 1 << 20, Index: i}.Key(key)
				owner, _ := nodes[0].mesh.Ring().Owner(sk)
				for _, n := range nodes {
					if n.Name() == owner {
						r := do(t, n, "GET", "/v/d.mp4", "Host", "video.test", "Range", fmt.Sprintf("bytes=%d-%d", i<<20, i<<20))
						if r.StatusCode != 206 || r.body != string(obj[i<<20:i<<20+1]) {
							t.Fatalf("slice %d at %s: %d %q", i, owner, r.StatusCode, r.Header.Get("Content-Range"))
						}
					}
				}
			}
			failed := peerFetchesFailed(t, nodes)
			o.asked()
			// The member holding the most slices is drained.
			var drained *Node
			var stay []*Node
			held := -1
			for _, n := range nodes {
				h := 0
				for i := range int64(6) {
					if _, ok := n.store.Get(slice.Spec{Size: 1 << 20, Index: i}.Key(key)); ok {
						h++
					}
				}
				if h > held {
					if drained != nil {
						stay = append(stay, drained)
					}
					drained, held = n, h
				} else {
					stay = append(stay, n)
				}
			}
			e0 := stay[0].mesh.Epoch() + stay[1].mesh.Epoch()
			drained.ready.Store(false)
			drained.mesh.Drain(push)
			eventually(t, 10*time.Second, func() bool { return stay[0].RingMembers() == 2 && stay[1].RingMembers() == 2 })
			if push {
				eventually(t, 10*time.Second, func() bool {
					taken, _ := drained.mesh.HandedOff()
					return taken >= uint64(held)
				})
			}
			for _, n := range stay {
				r := do(t, n, "GET", "/v/d.mp4", "Host", "video.test")
				if r.StatusCode != 200 || r.body != string(obj) {
					t.Fatalf("after the drain, at %s: %d, %d bytes", n.Name(), r.StatusCode, len(r.body))
				}
			}
			asked := o.asked()
			// The drain is one ring change at each member that stays;
			// more, or a failed peer fetch, is a loaded machine's (see
			// wantSliceFetches).
			calm := peerFetchesFailed(t, nodes) == failed && stay[0].mesh.Epoch()+stay[1].mesh.Epoch() == e0+2
			switch {
			case !calm:
				t.Logf("peer fetches failed or the ring changed again: the origin was asked %q", asked)
			case len(asked) != 0:
				t.Errorf("after the drain of a member holding %d slices, the origin was asked %q", held, asked)
			}
			if h := counterValue(t, stay[0], "meshcdn_handoffs_total") + counterValue(t, stay[1], "meshcdn_handoffs_total"); !push && h == 0 {
				t.Error("no hand-off counted")
			}
		})
	}
}

// TestSlicesLocate: Locate names the owners of an object's slices: the
// first N asked for, or all of them once the node holds the first slice
// (which gives the length); each is the node that holds the slice.
// Explain tells the object's length and how many slices a node holds.
func TestSlicesLocate(t *testing.T) {
	o := newRangeOrigin(t)
	obj := randomBytes(5<<20+1, 8)
	o.put("/v/l.mp4", obj, `"l1"`)
	nodes := slicedCluster(t, o)
	v := adminView{nodes[0]}
	loc, err := v.Locate("http://video.test/v/l.mp4", 0, -1)
	if err != nil || loc.SliceSize != 1<<20 || loc.ObjectSize != 0 || len(loc.Slices) != 0 {
		t.Fatalf("before any request: %+v, %v; want the slice size, no length, no slices", loc, err)
	}
	if loc, err = v.Locate("http://video.test/v/l.mp4", 0, 2); err != nil || len(loc.Slices) != 2 || loc.Slices[1].Index != 1 {
		t.Fatalf("the first 2 slices: %+v, %v", loc.Slices, err)
	}
	if r := do(t, nodes[0], "GET", "/v/l.mp4", "Host", "video.test"); r.StatusCode != 200 || r.body != string(obj) {
		t.Fatalf("whole object: %d, %d bytes", r.StatusCode, len(r.body))
	}
	loc, err = v.Locate("http://video.test/v/l.mp4", 0, -1)
	if err != nil || loc.ObjectSize != int64(len(obj)) || len(loc.Slices) != 6 {
		t.Fatalf("after the object was served: size %d, %d slices, %v; want %d and 6", loc.ObjectSize, len(loc.Slices), err, len(obj))
	}
	byName := map[string]*Node{}
	for _, n := range nodes {
		byName[n.Name()] = n
	}
	for _, s := range loc.Slices {
		if _, ok := byName[s.Owner].store.Get(s.Key); !ok {
			t.Errorf("slice %d: its owner %s does not hold it", s.Index, s.Owner)
		}
	}
	ex, err := v.Explain("http://video.test/v/l.mp4", http.MethodGet, nil)
	if err != nil || ex.SliceSize != 1<<20 || ex.ObjectSize != int64(len(obj)) || ex.SlicesHere != 6 || ex.Outcome != "hit" || !ex.Stored {
		t.Errorf("Explain at the node that served the object: %+v, %v; want all 6 slices here, a hit", ex, err)
	}
	owned := 0
	for _, s := range loc.Slices {
		if s.Owner == "n2" {
			owned++
		}
	}
	ex, err = adminView{nodes[1]}.Explain("http://video.test/v/l.mp4", http.MethodGet, nil)
	if err != nil || ex.SliceSize != 1<<20 || (ex.ObjectSize != 0 && ex.SlicesHere != int64(owned)) {
		t.Errorf("Explain at n2, owner of %d slices: %+v, %v", owned, ex, err)
	}
}

// TestSlicesOnDisk: the disk tier stores an object's slices; after a
// restart they are served from it without the origin.
func TestSlicesOnDisk(t *testing.T) {
	dir := t.TempDir()
	o := newRangeOrigin(t)
	obj := randomBytes(3<<20+5, 9)
	o.put("/v/k.mp4", obj, `"k1"`)
	sites := []site.Config{{Hosts: []string{"video.test"}, Origins: []site.OriginConfig{{URL: o.URL}}, SliceSize: 1 << 20}}
	n := startNode(t, nil, Config{CacheDir: dir, Sites: sites})
	if r := do(t, n, "GET", "/v/k.mp4", "Host", "video.test"); r.StatusCode != 200 || r.body != string(obj) {
		t.Fatalf("whole object: %d, %d bytes", r.StatusCode, len(r.body))
	}
	eventually(t, 20*time.Second, func() bool { return gaugeValue(t, n, "meshcdn_store_objects", "tier", "disk") == 4 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	o.asked()
	n2 := startNode(t, nil, Config{CacheDir: dir, Sites: sites})
	eventually(t, 20*time.Second, func() bool { return counterValue(t, n2, "meshcdn_disk_ready") == 1 })
	r := do(t, n2, "GET", "/v/k.mp4", "Host", "video.test", "Range", "bytes=1048000-2097999")
	if r.StatusCode != 206 || r.body != string(obj[1048000:2098000]) {
		t.Fatalf("a Range across two slices after the restart: %d, %d bytes", r.StatusCode, len(r.body))
	}
	wantStatus(t, r, "meshcdn; hit")
	if asked := o.asked(); len(asked) != 0 {
		t.Errorf("after the restart the origin was asked %q", asked)
	}
}

// TestSlicesOwnerDiesMidSlice: the owner of a slice stops (a crash) while
// it streams the slice to the node a client asked: that node fetches the
// slice again, from the origin, and the client gets every byte.
func TestSlicesOwnerDiesMidSlice(t *testing.T) {
	o := newRangeOrigin(t)
	obj := randomBytes(8<<20, 10)
	o.put("/v/x.mp4", obj, `"x1"`)
	nodes := slicedCluster(t, o)
	const key = "video.test/v/x.mp4"
	var victim *Node
	var stalled string
	fromPeers := 0 // bytes of the slices before the stalled one that come from peers
	for i := int64(0); i < 8 && victim == nil; i++ {
		s := slice.Spec{Size: 1 << 20, Index: i}
		owner, _ := nodes[0].mesh.Ring().Owner(s.Key(key))
		for _, n := range nodes[1:] {
			if n.Name() == owner && i > 0 {
				victim, stalled = n, s.Range()
			} else if n.Name() == owner {
				fromPeers += 1 << 20
			}
		}
	}
	if victim == nil {
		t.Fatal("nodes[0] owns every slice")
	}
	half := make(chan struct{})
	var once sync.Once
	o.mu.Lock()
	o.stall = func(rng string) bool {
		first := false
		if rng == stalled {
			once.Do(func() { first = true })
		}
		return first
	}
	o.stalled = func() { close(half) }
	o.mu.Unlock()
	got := make(chan response, 1)
	go func() { got <- doMaybe(t, nodes[0], "GET", "/v/x.mp4", "Host", "video.test") }()
	select {
	case <-half:
	case <-time.After(20 * time.Second):
		t.Fatal("the slice's owner never asked the origin for it")
	}
	// Once half the slice can have reached the node the client asked
	// (slices read ahead may count too), its owner stops mid-slice.
	eventually(t, 20*time.Second, func() bool {
		return counterValue(t, nodes[0], "meshcdn_peer_received_bytes_total") >= float64(fromPeers+512<<10)
	})
	halt(victim)
	select {
	case r := <-got:
		if r.Response == nil || r.err != nil || r.StatusCode != 200 || r.body != string(obj) {
			t.Fatalf("the client got %d bytes of %d (%v)", len(r.body), len(obj), r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer within 30s")
	}
}
